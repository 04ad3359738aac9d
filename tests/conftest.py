"""Shared fixtures: tiny generated datasets. They are session-scoped and must not be modified by tests;
a test that deletes or corrupts files makes its own tree with ``make_cityscapes_tree(tmp_path)``."""

from __future__ import annotations

import pytest

from vidseg.data.testing import TreeInfo, make_cityscapes_tree


@pytest.fixture(scope="session")
def cityscapes_tree(tmp_path_factory) -> TreeInfo:
    """Cityscapes layout, 32x64: cities aachen/bochum/zurich, one sequence each, annotated frames 313 and 600
    (snippets 294..323 and 581..610), train and val splits, decoy files; 6 samples per split."""
    return make_cityscapes_tree(tmp_path_factory.mktemp("cityscapes"), annotated_frames=(313, 600))


@pytest.fixture(scope="session")
def dense_tree(tmp_path_factory) -> TreeInfo:
    """SynthCity-style dense layout, 32x64: 3 cities x 2 sequences of 6 frames, every frame labelled,
    corruption code of frame f = f % 3."""
    return make_cityscapes_tree(tmp_path_factory.mktemp("dense"), sequences=2, dense_frames=6)


@pytest.fixture(scope="session")
def synthcity_root(tmp_path_factory):
    """A real SynthCity dataset: 3 train and 1 val sequences of 6 frames at 32x64, seed 0."""
    from vidseg.data.synthcity import generate

    root = tmp_path_factory.mktemp("synthcity") / "synthcity"
    generate(root, sequences=3, frames=6, size=(32, 64), seed=0, val_sequences=1)
    return root

import json
import logging

import numpy as np
import pytest
import torch

from vidseg.cli import main
from vidseg.data import CityscapesSequences, ClipTransform
from vidseg.data.cache import prepare_cache, snippet_offsets
from vidseg.data.testing import make_cityscapes_tree
from vidseg.errors import VidsegError

SIZE = (16, 32)


@pytest.fixture(scope="module")
def cache(cityscapes_tree, tmp_path_factory):
    path = tmp_path_factory.mktemp("cache") / "c"
    prepare_cache(cityscapes_tree.root, path, SIZE, num_frames=5)
    return path


def assert_same_samples(first, second):
    assert first["name"] == second["name"] and first["gt_index"] == second["gt_index"]
    for key in ("frames", "labels", "labelled", "corruption"):
        assert torch.equal(first[key], second[key]), key


def test_cached_samples_equal_decoded_and_resized_samples(cityscapes_tree, cache):
    for label_set in ("cityscapes", "report"):
        kwargs = dict(num_frames=5, gt_position="last", transform=ClipTransform(SIZE), label_set=label_set)
        decoded = CityscapesSequences(cityscapes_tree.root, "val", **kwargs)
        cached = CityscapesSequences(cityscapes_tree.root, "val", cache=cache, **kwargs)
        assert cached.names == decoded.names
        for index in range(len(decoded)):
            assert_same_samples(cached[index], decoded[index])
    # Random windows draw the same frames and geometry; pixels differ where the random scale resamples the
    # cached 16x32 frames instead of the 32x64 originals.
    train = ClipTransform(SIZE, scale_range=(0.8, 1.5), crop=True, hflip=True)
    decoded = CityscapesSequences(cityscapes_tree.root, "train", num_frames=5, transform=train)
    cached = CityscapesSequences(cityscapes_tree.root, "train", num_frames=5, transform=train, cache=cache)
    for index in range(len(decoded)):
        first, second = cached[(index, 99 + index)], decoded[(index, 99 + index)]
        assert first["gt_index"] == second["gt_index"] and torch.equal(first["labelled"], second["labelled"])
        identities = [[cityscapes_tree.identify(f) for f in s["frames"]] for s in (first, second)]
        assert identities[0] == identities[1]
        columns = [cityscapes_tree.column_of(s["frames"][0]) for s in (first, second)]
        assert np.abs(columns[0] - columns[1]).mean() < 2


def test_cache_holds_only_the_frames_windows_can_touch(cityscapes_tree, cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["size"] == list(SIZE) and set(manifest["splits"]) == {"train", "val"}
    entry = next(e for e in manifest["splits"]["train"]["entries"] if e["key"] == "bochum_000000_000313")
    # The snippet holds frames 294..323; 5-frame windows reach 4 frames either side of the annotated 313.
    assert entry["frames"] == [19 + offset for offset in range(-4, 5)] and entry["labelled"] == [19]
    frames = np.load(cache / "train/bochum_000000_000313.frames.npy", mmap_mode="r")
    labels = np.load(cache / "train/bochum_000000_000313.labels.npy", mmap_mode="r")
    assert frames.shape == (9, 16, 32, 3) and frames.dtype == np.uint8 and labels.shape == (1, 16, 32)
    assert snippet_offsets(3, max_stride=2) == [-4, -2, -1, 0, 1, 2, 4]
    assert snippet_offsets(None) == list(range(-19, 11))
    assert snippet_offsets(12)[-1] == 10 and snippet_offsets(12)[0] == -11


def test_cache_mismatches_are_clear_errors(cityscapes_tree, cache, tmp_path):
    root = cityscapes_tree.root
    with pytest.raises(VidsegError, match=r"holds frames at 16x32 but the transform works at 8x16"):
        CityscapesSequences(root, "val", num_frames=5, transform=ClipTransform((8, 16)), cache=cache)
    with pytest.raises(VidsegError, match=r"does not hold split 'test' \(it holds: train, val\)"):
        CityscapesSequences(root, "test", num_frames=5, cache=cache)
    with pytest.raises(VidsegError, match="--num-frames 7 --max-stride 1"):
        CityscapesSequences(root, "val", num_frames=7, transform=ClipTransform(SIZE), cache=cache)
    with pytest.raises(VidsegError, match="was prepared from"):
        CityscapesSequences(tmp_path, "val", num_frames=5, cache=cache)
    with pytest.raises(VidsegError, match="is not a frame cache"):
        CityscapesSequences(root, "val", num_frames=5, cache=tmp_path)
    # A narrower window than the cache was prepared for is fine.
    assert len(CityscapesSequences(root, "val", num_frames=3, gt_position=1, cache=cache)) == 6


def test_missing_frames_are_recorded_and_handled_like_missing_pngs(tmp_path, caplog):
    tree = make_cityscapes_tree(tmp_path / "root", cities=("ulm", "bonn"), decoys=False)
    (tree.root / "leftImg8bit_sequence/train/ulm/ulm_000000_000312_leftImg8bit.png").unlink()
    with caplog.at_level(logging.WARNING):
        prepare_cache(tree.root, tmp_path / "c", SIZE, splits=["train"], num_frames=3)
    assert "1 snippet frames are missing" in caplog.text
    with pytest.raises(VidsegError, match=r"ulm_000000_000312_leftImg8bit.png is missing .*ulm_000000_000313"):
        CityscapesSequences(tree.root, "train", num_frames=3, cache=tmp_path / "c")
    dataset = CityscapesSequences(tree.root, "train", num_frames=3, cache=tmp_path / "c", skip_missing=True)
    assert dataset.names == ["bonn_000000_000313"] and dataset.skipped == 1


def test_preparing_again_keeps_finished_files_and_repairs_broken_ones(tmp_path):
    tree = make_cityscapes_tree(tmp_path / "root", cities=("ulm", "bonn"), splits=("train",), decoys=False)
    prepare_cache(tree.root, tmp_path / "c", SIZE, num_frames=2)
    finished = tmp_path / "c/train/ulm_000000_000313.frames.npy"
    broken = tmp_path / "c/train/bonn_000000_000313.frames.npy"
    stamp = finished.stat().st_mtime_ns
    intact = broken.read_bytes()
    broken.write_bytes(intact[:100])
    prepare_cache(tree.root, tmp_path / "c", SIZE, num_frames=2, workers=2)
    assert finished.stat().st_mtime_ns == stamp
    assert broken.read_bytes() == intact
    # Another source into the same folder rewrites everything, even files of the same name and shape.
    other = make_cityscapes_tree(tmp_path / "other", cities=("ulm", "bonn"), splits=("train",), decoys=False)
    prepare_cache(other.root, tmp_path / "c", SIZE, num_frames=2)
    assert finished.stat().st_mtime_ns != stamp


def test_dense_cache_keeps_corruption_codes_and_every_label(dense_tree, tmp_path):
    prepare_cache(dense_tree.root, tmp_path / "c", SIZE, splits=["train"])
    kwargs = dict(num_frames=4, gt_position="random", transform=ClipTransform(SIZE))
    decoded = CityscapesSequences(dense_tree.root, "train", **kwargs)
    cached = CityscapesSequences(dense_tree.root, "train", cache=tmp_path / "c", **kwargs)
    assert len(cached) == len(decoded) == 36
    for index in range(0, 36, 5):
        sample = cached[(index, index)]
        assert_same_samples(sample, decoded[(index, index)])
        assert sample["labelled"].all() and sample["corruption"].abs().sum() > 0


def test_prepare_command(cityscapes_tree, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["prepare", "--root", str(cityscapes_tree.root), "--out", str(out), "--size", "8x16",
                 "--split", "val", "--num-frames", "2"])
    assert code == 0
    assert "val: 6 entries, 18 frames at 8x16" in capsys.readouterr().out
    transform = ClipTransform((8, 16))
    dataset = CityscapesSequences(cityscapes_tree.root, "val", num_frames=2, transform=transform, cache=out)
    assert dataset[0]["frames"].shape == (2, 3, 8, 16)
    assert main(["prepare", "--root", str(cityscapes_tree.root), "--out", str(out), "--size", "8x16",
                 "--split", "nope"]) == 2
    assert "splits present: train, val" in capsys.readouterr().err
    assert main(["prepare", "--root", str(cityscapes_tree.root), "--out", str(out), "--size", "8x16",
                 "--num-frames", "31"]) == 2

"""benchmarks/thin_classes.py: the predicted-over-labelled pixel ratio it derives from an evaluation's figures."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from vidseg.metrics import ConfusionMatrix
from vidseg.results import Figures

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _thin_classes():
    """benchmarks/thin_classes.py as a module (benchmarks/ is not a package; its scripts import each other)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("thin_classes", BENCHMARKS / "thin_classes.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_predicted_over_true_counts_the_pixels_predicted_as_the_class():
    thin_classes = _thin_classes()
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (4, 16, 16), generator=generator)
    # A model that over-predicts class 1: a third of the other pixels are called 1 as well.
    pred = torch.where(torch.rand(target.shape, generator=generator) < 0.33, torch.ones_like(target), target)
    matrix = ConfusionMatrix(3)
    matrix.update(pred, target)
    computed = matrix.compute()
    names = ["a", "b", "c"]
    figures = Figures(
        miou=computed["miou"], macc=computed["macc"], aacc=computed["aacc"],
        iou=dict(zip(names, computed["iou"])), acc=dict(zip(names, computed["acc"])), pixels=computed["pixels"],
    )
    for index, name in enumerate(names):
        expected = float((pred == index).sum()) / float((target == index).sum())
        assert float(thin_classes.predicted_over_true(figures, name)) == pytest.approx(expected, abs=5e-3)
    assert float(thin_classes.predicted_over_true(figures, "b")) > 1.5  # the over-prediction shows: 1 + 2 x 0.33

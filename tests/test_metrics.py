"""ConfusionMatrix figures against an independent NumPy computation from per-class pixel masks."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidseg.metrics import ConfusionMatrix, nan_to_none

IGNORE = 255


def reference_metrics(pred: np.ndarray, target: np.ndarray, num_classes: int) -> dict:
    """Figures straight from pixel masks, as cityscapesScripts defines them, without a confusion matrix."""
    valid = target != IGNORE
    iou, acc = [], []
    for c in range(num_classes):
        is_gt = valid & (target == c)
        is_pred = valid & (pred == c)
        intersection = np.sum(is_gt & is_pred)
        union = np.sum(is_gt | is_pred)
        iou.append(intersection / union if union else math.nan)
        acc.append(intersection / is_gt.sum() if is_gt.sum() else math.nan)
    defined_iou = [v for v in iou if not math.isnan(v)]
    defined_acc = [v for v in acc if not math.isnan(v)]
    return {
        "iou": iou,
        "acc": acc,
        "miou": sum(defined_iou) / len(defined_iou) if defined_iou else math.nan,
        "macc": sum(defined_acc) / len(defined_acc) if defined_acc else math.nan,
        "aacc": np.sum(valid & (pred == target)) / valid.sum() if valid.sum() else math.nan,
        "pixels": int(valid.sum()),
    }


def assert_same(found: dict, expected: dict) -> None:
    assert found["pixels"] == expected["pixels"]
    for key in ("miou", "macc", "aacc"):
        assert found[key] == pytest.approx(expected[key], abs=1e-12, nan_ok=True), key
    for key in ("iou", "acc"):
        assert len(found[key]) == len(expected[key])
        for a, b in zip(found[key], expected[key]):
            assert a == pytest.approx(b, abs=1e-12, nan_ok=True), key


@settings(max_examples=60, deadline=None)
@given(
    num_classes=st.integers(1, 6),
    extra_pred_classes=st.integers(0, 2),
    size=st.integers(1, 60),
    ignore_share=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_figures_equal_independent_computation(num_classes, extra_pred_classes, size, ignore_share, seed):
    rng = np.random.default_rng(seed)
    # Classes drawn from a random subset so that some are absent from ground truth, prediction or both.
    gt_classes = rng.choice(num_classes, size=rng.integers(1, num_classes + 1), replace=False)
    target = rng.choice(gt_classes, size=size)
    target[rng.random(size) < ignore_share] = IGNORE
    pred = rng.integers(0, num_classes + extra_pred_classes, size=size)
    matrix = ConfusionMatrix(num_classes, num_pred_classes=num_classes + extra_pred_classes)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert_same(matrix.compute(), reference_metrics(pred, target, num_classes))


def test_hand_example_with_absent_class_ignore_pixels_and_void_predictions():
    # 4 evaluated classes; class 3 appears nowhere; class 2 only in predictions; 4 is a "void" output.
    target = torch.tensor([[0, 0, 1, 1], [1, IGNORE, 0, 1]])
    pred = torch.tensor([[0, 2, 1, 4], [1, 2, 4, 1]])
    matrix = ConfusionMatrix(4, num_pred_classes=5)
    matrix.update(pred, target)
    found = matrix.compute()
    # class 0: gt 3 px, predicted right 1, the others as 2 and void -> IoU 1/3, recall 1/3
    # class 1: gt 4 px, right 3, one void -> IoU 3/4, recall 3/4
    # class 2: predicted once on a counted pixel, never true -> IoU 0, recall undefined
    assert found["iou"][:3] == pytest.approx([1 / 3, 3 / 4, 0.0])
    assert math.isnan(found["iou"][3]) and math.isnan(found["acc"][2]) and math.isnan(found["acc"][3])
    assert found["miou"] == pytest.approx((1 / 3 + 3 / 4 + 0.0) / 3)
    assert found["macc"] == pytest.approx((1 / 3 + 3 / 4) / 2)
    assert found["aacc"] == pytest.approx(4 / 7)
    assert found["pixels"] == 7


def test_predictions_on_ignored_pixels_do_not_count():
    target = torch.tensor([0, 1, IGNORE, IGNORE])
    first, second = ConfusionMatrix(3), ConfusionMatrix(3)
    first.update(torch.tensor([0, 1, 2, 2]), target)
    second.update(torch.tensor([0, 1, 0, 1]), target)
    assert torch.equal(first.matrix, second.matrix)
    assert first.compute()["miou"] == 1.0


def test_updates_accumulate_like_one_update():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 5, size=(3, 8, 16))
    target = rng.integers(0, 5, size=(3, 8, 16))
    together, in_parts, merged = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    together.update(torch.from_numpy(pred), torch.from_numpy(target))
    for p, t in zip(pred, target):
        in_parts.update(torch.from_numpy(p), torch.from_numpy(t))
    merged.merge(in_parts)
    assert torch.equal(together.matrix, in_parts.matrix)
    assert torch.equal(together.matrix, merged.matrix)
    assert int(together.matrix.sum()) == pred.size


def test_empty_matrix_is_undefined_not_zero():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([1, 2]), torch.tensor([IGNORE, IGNORE]))
    found = matrix.compute()
    assert math.isnan(found["miou"]) and math.isnan(found["aacc"]) and found["pixels"] == 0
    assert nan_to_none(found)["iou"] == [None, None, None]


def test_out_of_range_values_are_rejected():
    matrix = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="targets must be in"):
        matrix.update(torch.tensor([0]), torch.tensor([3]))
    with pytest.raises(ValueError, match="predictions must be in"):
        matrix.update(torch.tensor([-1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shape"):
        matrix.update(torch.tensor([0, 1]), torch.tensor([0]))
    assert matrix.total == 0


def test_all_reduce_without_distributed_keeps_counts():
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    before = matrix.matrix.clone()
    matrix.all_reduce()
    assert torch.equal(matrix.matrix, before)

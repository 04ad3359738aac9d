"""Segmentation metrics from one confusion matrix: mIoU, mean class accuracy, pixel accuracy, per class.

Conventions follow the official cityscapesScripts evaluation: a class that appears in neither the ground truth
nor the prediction has no IoU and is left out of the mean; a prediction of a class outside the evaluated set
(the "void" output of a 20-class model) is wrong for the ground-truth class and a false positive for none.
"""

from __future__ import annotations

import math

import torch

from vidseg.data.labels import IGNORE_INDEX


class ConfusionMatrix:
    """Pixel counts ``matrix[target, prediction]`` accumulated with one ``bincount`` per update.

    Args:
        num_classes: evaluated classes; targets must lie in ``[0, num_classes)`` or equal ``ignore_index``.
        ignore_index: target value whose pixels are not counted.
        num_pred_classes: predictions may lie in ``[0, num_pred_classes)``; the columns past ``num_classes``
            hold predictions of classes that are not evaluated (they count as misses). Defaults to
            ``num_classes``.
        device: where the counts live; updates must come from tensors on the same device.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = IGNORE_INDEX,
        num_pred_classes: int | None = None,
        device: str | torch.device = "cpu",
    ):
        num_pred_classes = num_classes if num_pred_classes is None else num_pred_classes
        if num_classes < 1 or num_pred_classes < num_classes:
            raise ValueError(
                f"need 1 <= num_classes <= num_pred_classes, got num_classes={num_classes}, "
                f"num_pred_classes={num_pred_classes}"
            )
        self.num_classes = num_classes
        self.num_pred_classes = num_pred_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_pred_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count the pixels of ``pred`` against ``target`` (integer tensors of the same shape)."""
        if pred.shape != target.shape:
            raise ValueError(
                f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
            )
        pred = pred.reshape(-1).to(device=self.matrix.device, dtype=torch.int64)
        target = target.reshape(-1).to(device=self.matrix.device, dtype=torch.int64)
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if target.numel() == 0:
            return
        # One check for both ranges; a bad value would otherwise land silently in another cell.
        bad_target = (target < 0) | (target >= self.num_classes)
        bad_pred = (pred < 0) | (pred >= self.num_pred_classes)
        if bool((bad_target | bad_pred).any()):
            raise ValueError(
                f"targets must be in [0, {self.num_classes}) or {self.ignore_index}, found "
                f"{sorted(set(target[bad_target].unique().tolist()))[:10]}; predictions must be in "
                f"[0, {self.num_pred_classes}), found {sorted(set(pred[bad_pred].unique().tolist()))[:10]}"
            )
        cells = target * self.num_pred_classes + pred
        counts = torch.bincount(cells, minlength=self.num_classes * self.num_pred_classes)
        self.matrix += counts.view(self.num_classes, self.num_pred_classes)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another matrix of the same shape."""
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(
                f"cannot merge shapes {tuple(other.matrix.shape)} and {tuple(self.matrix.shape)}"
            )
        self.matrix += other.matrix.to(self.matrix.device)

    def reset(self) -> None:
        self.matrix.zero_()

    def all_reduce(self) -> None:
        """Sum the counts over all processes when torch.distributed is initialised; otherwise do nothing."""
        self.matrix = all_reduce_sum(self.matrix)

    @property
    def total(self) -> int:
        """Counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def compute(self) -> dict:
        """Every figure as plain Python numbers (fractions in [0, 1]).

        Returns:
            ``miou``: mean IoU over classes present in ground truth or prediction;
            ``macc``: mean per-class recall over classes present in ground truth;
            ``aacc``: pixel accuracy; ``iou`` and ``acc``: per-class lists;
            ``pixels``: counted pixels. Undefined figures are NaN.
        """
        matrix = self.matrix.to(torch.float64)
        true_positive = matrix.diagonal()
        gt_pixels = matrix.sum(dim=1)
        pred_pixels = matrix[:, : self.num_classes].sum(dim=0)
        union = gt_pixels + pred_pixels - true_positive
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=matrix.device)
        iou = torch.where(union > 0, true_positive / union.clamp(min=1), nan)
        acc = torch.where(gt_pixels > 0, true_positive / gt_pixels.clamp(min=1), nan)
        total = gt_pixels.sum()
        aacc = torch.where(total > 0, true_positive.sum() / total.clamp(min=1), nan)
        summary = torch.stack([iou.nanmean(), acc.nanmean(), aacc]).tolist()
        return {
            "miou": summary[0],
            "macc": summary[1],
            "aacc": summary[2],
            "iou": iou.tolist(),
            "acc": acc.tolist(),
            "pixels": int(total),
        }


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes when torch.distributed is initialised (else return it unchanged)."""
    return _all_reduce(tensor, "sum")


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``tensor`` over all processes (unchanged without torch.distributed)."""
    return _all_reduce(tensor, "max")


def _all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return tensor
    reduce_op = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX}[op]
    # NCCL reduces only CUDA tensors, so under NCCL a CPU tensor makes a round trip through the current GPU.
    if torch.distributed.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        torch.distributed.all_reduce(on_gpu, op=reduce_op)
        return on_gpu.to(tensor.device)
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor


def nan_to_none(value):
    """Replace NaN floats (also inside lists and dicts) by None, so the result is valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_to_none(item) for item in value]
    return value

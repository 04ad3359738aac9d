"""Temporal consistency of predicted label maps: flow-based TC and video consistency mVC_n.

Flow-based TC (as in Liu et al., "Efficient Semantic Video Segmentation with Per-frame Inference", ECCV
2020, and the VSPW toolkit): the prediction of frame t+1 is warped to frame t along the optical flow between
the two input frames and compared with the prediction of frame t by mean IoU. Flow is OpenCV's DIS (Kroeger
et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016). Pixels that leave the image or fail the
forward-backward check of Sundaram, Brox and Keutzer ("Dense Point Trajectories by GPU-Accelerated Large
Displacement Optical Flow", ECCV 2010) are occluded and not compared.

Video consistency VC_n follows Miao et al., "VSPW: A Large-scale Dataset for Video Scene Parsing in the Wild",
CVPR 2021: over every run of n consecutive labelled frames, the share of the pixels whose ground truth is
the same class in all n frames that are also predicted as that class in all n frames.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from vidseg.data.labels import IGNORE_INDEX
from vidseg.data.transforms import denormalize
from vidseg.metrics import all_reduce_sum

# Sundaram et al. (2010): a pixel is occluded when |w + w_back|^2 > ALPHA (|w|^2 + |w_back|^2) + BETA.
OCCLUSION_ALPHA = 0.01
OCCLUSION_BETA = 0.5


GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


def grey_frames(frames: torch.Tensor) -> np.ndarray:
    """Normalised frames ``[..., 3, H, W]`` -> 8-bit luma ``[..., H, W]``, what the optical flow reads."""
    rgb = denormalize(frames).float()
    weights = torch.tensor(GREY_WEIGHTS, dtype=torch.float32, device=rgb.device).view(3, 1, 1)
    return (rgb * weights).sum(dim=-3).round().clamp(0, 255).to(torch.uint8).cpu().numpy()


def make_flow_estimator(preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow.create(preset)


def dis_flow(estimator: cv2.DISOpticalFlow, source: np.ndarray, destination: np.ndarray) -> np.ndarray:
    """Flow ``[H, W, 2]`` (dx, dy) such that pixel x of ``source`` is at x + flow(x) in ``destination``.

    Both images are 8-bit greyscale ``[H, W]``.
    """
    # The stubs require a flow array, but OpenCV accepts None (no initial flow) and allocates the result.
    return estimator.calc(  # type: ignore[call-overload]
        np.ascontiguousarray(source), np.ascontiguousarray(destination), None
    )


def warp_labels(labels: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pull ``labels`` (a map of the destination frame) back to the source frame of ``flow``.

    Returns the warped map (nearest neighbour, so no invented classes) and a mask of the pixels whose flow
    target lies inside the image.
    """
    height, width = labels.shape
    rows, cols = np.mgrid[0:height, 0:width]
    target_cols = np.rint(cols + flow[..., 0]).astype(np.int64)
    target_rows = np.rint(rows + flow[..., 1]).astype(np.int64)
    inside = (target_cols >= 0) & (target_cols < width) & (target_rows >= 0) & (target_rows < height)
    warped = labels[target_rows.clip(0, height - 1), target_cols.clip(0, width - 1)]
    return warped, inside


def flow_and_valid(
    estimator: cv2.DISOpticalFlow, source: np.ndarray, destination: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The flow from ``source`` to ``destination`` (8-bit greyscale ``[H, W]``) and the mask of the pixels it
    relates: their target lies inside the image and the forward-backward check does not mark them occluded."""
    forward = dis_flow(estimator, source, destination)
    backward = dis_flow(estimator, destination, source)
    height, width = source.shape
    rows, cols = np.mgrid[0:height, 0:width]
    target_cols = np.rint(cols + forward[..., 0])
    target_rows = np.rint(rows + forward[..., 1])
    inside = (target_cols >= 0) & (target_cols < width) & (target_rows >= 0) & (target_rows < height)
    return forward, inside & ~occlusion_mask(forward, backward)


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """True where the forward flow and the backward flow sampled at its target do not cancel out."""
    height, width = forward.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x = cols + forward[..., 0]
    map_y = rows + forward[..., 1]
    backward_at_target = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    round_trip = ((forward + backward_at_target) ** 2).sum(axis=-1)
    magnitude = (forward**2).sum(axis=-1) + (backward_at_target**2).sum(axis=-1)
    return round_trip > OCCLUSION_ALPHA * magnitude + OCCLUSION_BETA


def label_map_iou(first: np.ndarray, second: np.ndarray, num_classes: int) -> float:
    """Mean IoU of two label maps over the classes present in either; NaN for empty maps."""
    first = first.reshape(-1).astype(np.int64)
    second = second.reshape(-1).astype(np.int64)
    if first.size == 0:
        return float("nan")
    matrix = np.bincount(first * num_classes + second, minlength=num_classes * num_classes)
    matrix = matrix.reshape(num_classes, num_classes)
    intersection = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean())


def pair_consistency(
    estimator: cv2.DISOpticalFlow,
    gray: np.ndarray,
    next_gray: np.ndarray,
    pred: np.ndarray,
    next_pred: np.ndarray,
    num_classes: int,
) -> float:
    """Flow-based TC of one pair of consecutive frames: mIoU of ``pred`` and ``next_pred`` warped to it.

    Args:
        gray, next_gray: 8-bit greyscale frames t and t+1, ``[H, W]``.
        pred, next_pred: predicted class maps of the two frames, ``[H, W]``, values in ``[0, num_classes)``.

    Returns:
        mean IoU over the non-occluded pixels (NaN if every pixel is occluded).
    """
    forward, valid = flow_and_valid(estimator, gray, next_gray)
    warped, _ = warp_labels(next_pred, forward)
    return label_map_iou(pred[valid], warped[valid], num_classes)


class TemporalConsistency:
    """Mean flow-based TC over every pair of consecutive frames seen.

    Args:
        num_classes: classes the predictions can take.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.estimator = make_flow_estimator()
        self.sums = torch.zeros(2, dtype=torch.float64)  # sum of pair scores, number of pairs

    def update(self, gray_frames: np.ndarray, preds: np.ndarray) -> None:
        """Add the T-1 pairs of one clip: ``gray_frames`` uint8 ``[T, H, W]``, ``preds`` ``[T, H, W]``."""
        if gray_frames.shape != preds.shape:
            raise ValueError(f"frames {gray_frames.shape} and predictions {preds.shape} differ in shape")
        for t in range(len(preds) - 1):
            score = pair_consistency(
                self.estimator, gray_frames[t], gray_frames[t + 1], preds[t], preds[t + 1], self.num_classes
            )
            if not np.isnan(score):
                self.sums += torch.tensor([score, 1.0], dtype=torch.float64)

    def all_reduce(self) -> None:
        self.sums = all_reduce_sum(self.sums)

    @property
    def pairs(self) -> int:
        return int(self.sums[1])

    def compute(self) -> float:
        """Mean TC in [0, 1]; NaN when no pair was seen."""
        return float(self.sums[0] / self.sums[1]) if self.pairs else float("nan")


def video_consistency_runs(
    labels: torch.Tensor,
    preds: torch.Tensor,
    run_length: int,
    ignore_index: int = IGNORE_INDEX,
    require_correct: bool = True,
) -> list[float]:
    """VC_n of every run of ``run_length`` consecutive frames of one clip (VSPW, Miao et al., CVPR 2021).

    A run's score is the number of pixels whose ground truth is one (non-ignored) class throughout the run and
    whose prediction is that class throughout the run, divided by the number of pixels whose ground truth is
    one class throughout the run. Runs without such pixels have no score and are skipped.

    The paper writes the score as (common ground-truth area ∩ common predicted area) / common ground-truth
    area. Read with class-labelled masks, a pixel counts only if the prediction is also right, which is what
    this function does by default. The toolkit script (``VC_perclip.py``) only asks the prediction to be
    constant; ``require_correct=False`` computes that looser figure. The script also skips the last run of
    each clip; here every one of the T - n + 1 runs is scored, as in the paper's sum.

    Args:
        labels, preds: ``[T, H, W]`` class maps of consecutive frames, every frame labelled.
        run_length: n.
    """
    if labels.shape != preds.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and predictions {tuple(preds.shape)} differ in shape")
    scores = []
    for start in range(labels.shape[0] - run_length + 1):
        gt_run = labels[start : start + run_length]
        pred_run = preds[start : start + run_length]
        first_gt = gt_run[0]
        gt_constant = (gt_run == first_gt).all(dim=0) & (first_gt != ignore_index)
        reference = first_gt if require_correct else pred_run[0]
        pred_consistent = (pred_run == reference).all(dim=0)
        denominator = int(gt_constant.sum())
        if denominator:
            scores.append(int((gt_constant & pred_consistent).sum()) / denominator)
    return scores


class VideoConsistency:
    """Mean VC_n over all runs of all clips (mVC_n), for several run lengths at once.

    Args:
        run_lengths: the n values, e.g. (8, 16).
        ignore_index: ground-truth value that is never a class.
    """

    def __init__(self, run_lengths: tuple[int, ...] = (8, 16), ignore_index: int = IGNORE_INDEX):
        self.run_lengths = tuple(run_lengths)
        self.ignore_index = ignore_index
        self.sums = torch.zeros(len(self.run_lengths), 2, dtype=torch.float64)  # score sum, run count

    def update(self, labels: torch.Tensor, preds: torch.Tensor) -> None:
        """Add the runs of one clip whose every frame is labelled: ``[T, H, W]`` each."""
        for row, run_length in enumerate(self.run_lengths):
            scores = video_consistency_runs(labels, preds, run_length, self.ignore_index)
            self.sums[row] += torch.tensor([sum(scores), len(scores)], dtype=torch.float64)

    def update_last_runs(self, labels: torch.Tensor, preds: torch.Tensor) -> None:
        """Add the runs that end at the last of these consecutive labelled frames (``[T, H, W]`` each).

        Called once per frame of a streamed sequence with its latest frames, this scores every run of the
        sequence exactly once.
        """
        for row, run_length in enumerate(self.run_lengths):
            if labels.shape[0] < run_length:
                continue
            scores = video_consistency_runs(labels[-run_length:], preds[-run_length:], run_length, self.ignore_index)
            self.sums[row] += torch.tensor([sum(scores), len(scores)], dtype=torch.float64)

    def all_reduce(self) -> None:
        self.sums = all_reduce_sum(self.sums)

    def runs(self) -> dict[int, int]:
        return {n: int(self.sums[row, 1]) for row, n in enumerate(self.run_lengths)}

    def compute(self) -> dict[int, float]:
        """mVC_n in [0, 1] per run length; NaN where no run was long enough."""
        result = {}
        for row, run_length in enumerate(self.run_lengths):
            total, count = self.sums[row].tolist()
            result[run_length] = total / count if count else float("nan")
        return result

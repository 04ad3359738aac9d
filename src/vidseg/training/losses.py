"""The training loss: cross-entropy on the labelled pixels plus optional weighted terms.

To add a loss term, write a function ``term(logits, batch) -> scalar tensor`` and give it an entry in
``LOSS_TERMS`` under the name of its weight in ``LossConfig`` (``config.py``, default 0.0 = off); ``Criterion``
adds ``weight * term`` to the loss when the weight is not 0. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vidseg.config import LossConfig
from vidseg.consistency import flow_and_valid, grey_frames, make_flow_estimator
from vidseg.data.labels import IGNORE_INDEX
from vidseg.models.temporal import warp


def segmentation_loss(
    logits: torch.Tensor,
    batch: dict,
    frames: str,
    class_weights: torch.Tensor | None,
    corrupted_weight: float = 1.0,
    corrupted_class_weights: bool = True,
) -> torch.Tensor:
    """Cross-entropy (ignore 255, optional class weights) on the annotated frame or on every labelled frame.

    Args:
        logits: ``[B, T, C, H, W]``.
        batch: a collated sample batch with ``labels [B, T, H, W]``, ``labelled [B, T]``, ``gt_index [B]`` and,
            where ``corrupted_weight`` is not 1 or ``corrupted_class_weights`` is False, ``corruption [B, T]``
            (0 = clean).
        frames: ``"annotated"`` or ``"labelled"``.
        class_weights: ``[C]`` or None.
        corrupted_weight: weight of a corrupted frame's pixels relative to a clean frame's (each pixel's weight is
            its class weight times its frame's weight).
        corrupted_class_weights: False: a corrupted frame's pixels all weigh the mean class weight of its counted
            pixels (the frame's total weight unchanged, no class favoured where the frame is hard to read).

    Returns:
        The weighted mean over counted pixels; 0 if no pixel counts.
    """
    labels = batch["labels"].to(logits.device, non_blocking=True)
    per_pixel = corrupted_weight != 1.0 or (class_weights is not None and not corrupted_class_weights)
    corrupted = batch["corruption"].to(logits.device) > 0 if per_pixel else None
    if frames == "annotated":
        rows = torch.arange(logits.shape[0], device=logits.device)
        gt_index = batch["gt_index"].to(logits.device)
        logits, labels = logits[rows, gt_index], labels[rows, gt_index]
        corrupted = None if corrupted is None else corrupted[rows, gt_index]
    else:
        labelled = batch["labelled"].to(logits.device)
        logits, labels = logits[labelled], labels[labelled]
        corrupted = None if corrupted is None else corrupted[labelled]
    logits = logits.float()
    counted = labels != IGNORE_INDEX
    if corrupted is not None:  # per-pixel weights: class weight x frame weight
        corrupted = corrupted.reshape(-1, 1, 1)
        pixel_weights = torch.where(corrupted, corrupted_weight, 1.0) * counted
        if class_weights is not None:
            class_weight = class_weights[labels.clamp(max=len(class_weights) - 1)] * counted
            if not corrupted_class_weights:
                frame_mean = class_weight.sum((1, 2), keepdim=True) / counted.sum((1, 2), keepdim=True).clamp(min=1)
                class_weight = torch.where(corrupted, frame_mean * counted, class_weight)
            pixel_weights = pixel_weights * class_weight
        losses = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="none")
        return (losses * pixel_weights).sum() / pixel_weights.sum().clamp(min=1e-12)
    total = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")
    if class_weights is None:
        denominator = counted.sum().to(total.dtype)
    else:
        denominator = class_weights[labels[counted]].sum()
    # A window without labelled pixels contributes nothing (rather than 0 / 0).
    return total / denominator.clamp(min=1e-12)


# ------------------------------------------------------------------------------------ temporal consistency


class TemporalConsistencyLoss:
    """Consecutive frames' predictions should agree where optical flow says the pixel is the same.

    As ETC trains (Liu et al., "Efficient Semantic Video Segmentation with Per-frame Inference", ECCV 2020):
    for every pair of consecutive frames (t-1, t) of a clip, frame t-1's class probabilities are warped to frame
    t along the optical flow between the two input frames, and the squared difference to frame t's
    probabilities is averaged over the pixels that the forward-backward check does not mark occluded (and whose
    flow stays inside the image). Flow is OpenCV's DIS on the un-normalised frames, on the CPU, without
    gradients; the gradient reaches the model through both frames' probabilities.
    """

    def __init__(self) -> None:
        self.estimator = make_flow_estimator()

    def __call__(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """``logits [B, T, C, H, W]`` of ``batch["frames"] [B, T, 3, H, W]`` (normalised) -> a scalar."""
        if logits.shape[1] < 2:
            return logits.new_zeros((), dtype=torch.float32)
        flow, valid = self.flow_to_previous(batch["frames"])
        probabilities = logits.float().softmax(dim=2)
        previous, current = probabilities[:, :-1].flatten(0, 1), probabilities[:, 1:].flatten(0, 1)
        flow, valid = flow.to(logits.device), valid.to(logits.device)
        warped = warp(previous, flow)
        squared = (current - warped).pow(2).sum(dim=1)  # [pairs, H, W]
        return (squared * valid).sum() / valid.sum().clamp(min=1)

    @torch.no_grad()
    def flow_to_previous(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each pair (t-1, t) of normalised ``frames [B, T, 3, H, W]``: the flow ``[B*(T-1), 2, H, W]`` from
        frame t to frame t-1 (pixel x of frame t is at x + flow(x) in frame t-1) and the mask of pixels to
        compare ``[B*(T-1), H, W]`` (flow inside the image, not occluded), as the TC metric relates pixels."""
        flows, masks = [], []
        for clip in grey_frames(frames.cpu()):
            for previous, current in zip(clip[:-1], clip[1:]):
                flow, valid = flow_and_valid(self.estimator, current, previous)
                flows.append(torch.from_numpy(flow).permute(2, 0, 1))
                masks.append(torch.from_numpy(valid))
        return torch.stack(flows), torch.stack(masks)


# -------------------------------------------------------------------------------------- the loss terms

LossTerm = Callable[[torch.Tensor, dict], torch.Tensor]
"""``term(logits [B, T, C, H, W], batch) -> scalar``: a term added to the loss with its config weight."""

LOSS_TERMS: dict[str, Callable[[], LossTerm]] = {
    "temporal_consistency": TemporalConsistencyLoss,
}
"""Each extra loss term, by the name of its weight in ``LossConfig`` (0 = off); the value builds the term."""


class Criterion:
    """The training loss: ``segmentation_loss`` plus ``weight * term`` for each term of ``LOSS_TERMS`` whose
    weight in ``loss`` (the config's ``LossConfig``) is not 0. With every weight 0 it is exactly
    ``segmentation_loss``."""

    def __init__(self, loss: LossConfig, class_weights: torch.Tensor | None):
        self.frames = loss.frames
        self.class_weights = class_weights
        self.corrupted_weight = float(loss.corrupted_weight)
        self.corrupted_class_weights = loss.corrupted_class_weights
        self.terms = [
            (name, float(getattr(loss, name)), build()) for name, build in LOSS_TERMS.items() if getattr(loss, name)
        ]

    def __call__(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        loss = segmentation_loss(
            logits, batch, self.frames, self.class_weights, self.corrupted_weight, self.corrupted_class_weights
        )
        for _, weight, term in self.terms:
            loss = loss + weight * term(logits, batch)
        return loss

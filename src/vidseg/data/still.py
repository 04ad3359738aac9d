"""Still clips: one labelled frame made into a short video by a smooth synthetic camera motion.

A temporal model learns from its training windows how far things move from one frame to the next. Some datasets
label their training video far more sparsely than the video it is applied to: CamVid's train split is 1 Hz while
its val split (and any camera's stream) is 15-30 Hz, so units trained on frames a second apart then run on
frames 1/15 s apart. A still clip shows the small motion of a high frame rate, with exact labels on every frame:
frame 0 is a training sample's annotated frame as it is, and frame t is that frame zoomed in by ``(1 + z) ** t``
about a focus point and panned by ``t * (dx, dy)``, as a camera moving forward sees a scene. ``z``, ``dx``,
``dy`` and the focus are drawn once per clip. The labels move with the frame (nearest neighbour); a pixel that
comes from outside the frame is the ignore label (its colour the border's).

Making training video from single labelled images is how MaskTrack trained video object segmentation (Perazzi
et al., "Learning Video Object Segmentation from Static Images", CVPR 2017). A still clip has no parallax, no
object motion and no new content: it teaches the units the size of high-frame-rate motion, not what real motion
looks like, so it replaces only a share of the training windows (``data.still.prob``).

Deterministic: a seeded sample ``dataset[(index, seed)]`` draws whether to replace it and the motion from
``seed`` alone; a sample that is not replaced is the wrapped dataset's sample, bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.data.clips import WrappedClips
from vidseg.data.corrupt import key_seed
from vidseg.data.labels import IGNORE_INDEX

FOCUS_RANGE = 0.3
"""The focus of the zoom is drawn uniformly within this share of the half-width and half-height of the centre."""


def camera_grids(num_frames: int, height: int, width: int, zoom: float, focus: tuple[float, float],
                 pan: tuple[float, float]) -> torch.Tensor:
    """``grid_sample`` grids ``[T, H, W, 2]`` of the frames of a still clip: frame t shows the source zoomed in
    by ``(1 + zoom) ** t`` about ``focus`` and panned by ``t * pan`` (both in ``grid_sample``'s normalised
    coordinates, x then y, -1 .. 1 across the frame)."""
    scales = (1.0 + zoom) ** torch.arange(num_frames, dtype=torch.float64)
    focus_t, pan_t = torch.tensor(focus, dtype=torch.float64), torch.tensor(pan, dtype=torch.float64)
    steps = torch.arange(num_frames, dtype=torch.float64)
    theta = torch.zeros(num_frames, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scales
    # x_source = focus + (x - focus) / scale + t * pan
    theta[:, :, 2] = focus_t * (1.0 - 1.0 / scales)[:, None] + steps[:, None] * pan_t
    return F.affine_grid(theta, [num_frames, 1, height, width], align_corners=False).float()


def still_clip(frame: torch.Tensor, labels: torch.Tensor, grids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``[T, C, H, W]`` and label maps ``[T, H, W]`` (int64, ignore outside the source) of one frame
    ``[C, H, W]`` and its label map ``[H, W]`` seen through ``grids`` (``camera_grids``); frame 0 is the source,
    bit for bit, whatever its grid."""
    count = grids.shape[0]
    frames = F.grid_sample(frame[None].expand(count, -1, -1, -1).float(), grids, mode="bilinear",
                           padding_mode="border", align_corners=False)
    # Labels shifted by one, so that the zero padding of grid_sample marks the pixels from outside the frame.
    shifted = labels[None, None].expand(count, 1, -1, -1).float() + 1
    moved = F.grid_sample(shifted, grids, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    moved = moved.round().long() - 1
    moved[moved < 0] = IGNORE_INDEX
    frames[0], moved[0] = frame, labels.long()  # frame 0 is the source, not a resampling of it
    return frames.to(frame.dtype), moved


class StillClips(WrappedClips):
    """A training clip dataset whose samples are, with probability ``probability``, replaced by a still clip made
    of their annotated frame (see the module docstring): every frame labelled, and ``gt_index`` the last frame, so
    that a loss on the annotated frame only (``loss.frames: annotated``) reads the frame after the most motion.
    A replaced sample still loads its whole window (only its annotated frame is used), as CutMix loads its partner.

    Args:
        dataset: samples as ``vidseg.data`` documents them; indices pass through, including the ``(index, seed)``
            form of seeded training samples (``train.SeededSamples``).
        probability: share of samples that are replaced.
        zoom: the per-frame zoom ``z`` is drawn from ``U(0, zoom)`` (0.04: a 4% larger scene every frame).
        pan: the per-frame pan is drawn from ``U(-pan, pan)`` of the frame's width and height, each.
    """

    def __init__(self, dataset, probability: float, zoom: float = 0.04, pan: float = 0.01):
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if not (zoom >= 0 and pan >= 0):
            raise ValueError(f"zoom and pan must be >= 0, got zoom {zoom}, pan {pan}")
        super().__init__(dataset)
        self.probability = probability
        self.zoom = zoom
        self.pan = pan

    def __getitem__(self, index):
        sample = self.dataset[index]
        seed = int(index[1]) if isinstance(index, tuple) else int(torch.randint(0, 2**62, ()).item())
        rng = np.random.default_rng(key_seed(seed, "still"))
        if rng.random() >= self.probability:
            return sample
        zoom = float(rng.uniform(0.0, self.zoom))
        focus = (float(rng.uniform(-FOCUS_RANGE, FOCUS_RANGE)), float(rng.uniform(-FOCUS_RANGE, FOCUS_RANGE)))
        pan = (2.0 * float(rng.uniform(-self.pan, self.pan)), 2.0 * float(rng.uniform(-self.pan, self.pan)))
        frames, labels = sample["frames"], sample["labels"]
        count, height, width = labels.shape
        gt_index = int(sample["gt_index"])
        grids = camera_grids(count, height, width, zoom, focus, pan)
        moved_frames, moved_labels = still_clip(frames[gt_index], labels[gt_index], grids)
        return {
            **sample,
            "frames": moved_frames,
            "labels": moved_labels.to(labels.dtype),
            "labelled": torch.ones(count, dtype=torch.bool),
            "corruption": torch.zeros_like(torch.as_tensor(sample["corruption"])),
            "gt_index": count - 1,
        }

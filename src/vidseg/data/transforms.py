"""Clip transforms: one random draw per clip, applied identically to every frame and label map.

Frames are uint8 tensors ``[T, 3, H, W]`` and label maps uint8 tensors ``[T, H, W]`` of class indices (255 =
ignore) until the very end: geometry happens on uint8 data, and ``normalize`` turns frames into the float input
of the models. Images are resized bilinearly (antialiased when shrinking), labels with centre-aligned nearest
neighbour; padding is 0 in images and 255 (ignore) in labels.

Randomness comes from the ``generator`` passed to ``ClipTransform.__call__``; without one, torch's global RNG
is used (in DataLoader workers PyTorch seeds it per worker from the loader's base seed).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidseg.data.labels import IGNORE_INDEX

# ImageNet statistics, RGB, for images scaled to 0..1.
MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _channel_view(values: tuple[float, ...], frames: torch.Tensor) -> torch.Tensor:
    shape = [1] * frames.dim()
    shape[-3] = 3
    return torch.tensor(values, dtype=torch.float32, device=frames.device).view(shape)


def normalize(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Model input from uint8 frames ``[..., 3, H, W]``: float32 ``(frames / 255 - MEAN) / STD``, contiguous."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if frames.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 frames [..., 3, H, W], got dtype {frames.dtype}")
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"normalize expects frames shaped [..., 3, H, W], got {tuple(frames.shape)}")
    if frames.device.type == "cpu":
        # NumPy runs this single-threaded: on small clips torch's thread pool costs more than the arithmetic.
        shape = [1] * frames.dim()
        shape[-3] = 3
        scale = (1.0 / (255.0 * np.array(STD, dtype=np.float32))).reshape(shape)
        offset = (np.array(MEAN, dtype=np.float32) / np.array(STD, dtype=np.float32)).reshape(shape)
        result = np.empty(tuple(frames.shape), dtype=np.float32)
        np.multiply(frames.numpy(), scale, out=result)
        np.subtract(result, offset, out=result)
        return torch.from_numpy(result)
    mean, std = _channel_view(MEAN, frames), _channel_view(STD, frames)
    out = frames.to(torch.float32, memory_format=torch.contiguous_format)
    return out.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def denormalize(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames ``[..., 3, H, W]`` from normalised float frames; exact inverse of ``normalize``."""
    if frames.dim() < 3 or frames.shape[-3] != 3:
        raise ValueError(f"denormalize expects frames shaped [..., 3, H, W], got {tuple(frames.shape)}")
    frames = frames.detach().float()
    mean, std = _channel_view(MEAN, frames), _channel_view(STD, frames)
    return (frames * std + mean).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames ``[T, 3, H, W]`` resized bilinearly to ``size`` (antialiased when shrinking)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    shrinking = size[0] < frames.shape[-2] or size[1] < frames.shape[-1]
    # uint8 channels-last input takes PyTorch's vectorised path (several times faster than float).
    return F.interpolate(
        frames.contiguous(memory_format=torch.channels_last),
        size=tuple(size),
        mode="bilinear",
        align_corners=False,
        antialias=shrinking,
    )


def _nearest_indices(in_size: int, out_size: int) -> torch.Tensor:
    centres = (torch.arange(out_size, dtype=torch.float64) + 0.5) * (in_size / out_size)
    return centres.floor().long().clamp_(0, in_size - 1)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Label maps ``[T, H, W]`` resized to ``size`` with centre-aligned nearest neighbour (any dtype)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    rows = _nearest_indices(labels.shape[-2], size[0])
    cols = _nearest_indices(labels.shape[-1], size[1])
    return labels[..., rows, :][..., cols]


def _place(clip: torch.Tensor, size: tuple[int, int], top: int, left: int, fill: int) -> torch.Tensor:
    """Window of ``size`` whose origin lies at (top, left) of ``clip``; outside parts are ``fill``."""
    height, width = clip.shape[-2:]
    if top >= 0 and left >= 0 and top + size[0] <= height and left + size[1] <= width:
        return clip[..., top : top + size[0], left : left + size[1]]
    out = torch.full((*clip.shape[:-2], *size), fill, dtype=clip.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + size[0], height), min(left + size[1], width)
    if src_bottom > src_top and src_right > src_left:
        out[..., src_top - top : src_bottom - top, src_left - left : src_right - left] = clip[
            ..., src_top:src_bottom, src_left:src_right
        ]
    return out


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high] (inclusive)."""
    if high <= low:
        return low
    return low + int(torch.randint(high - low + 1, (1,), generator=generator))


class ClipTransform:
    """Resize, random scale, random crop and horizontal flip, with one draw shared by all frames of a clip.

    The clip is resized to ``size * s`` where ``s`` is drawn uniformly from ``scale_range`` (1 without it);
    with ``crop``, a window of ``crop_size`` (default ``size``) is then cut at a uniformly random place (where the
    scaled clip is smaller than the window it is placed at a random offset and the rest is padding: 0 in images,
    255 in labels).
    ``hflip`` mirrors the clip with probability 1/2. ``ClipTransform(size)`` alone is the evaluation transform
    (a plain resize, nothing when the data already has that size); ``ClipTransform()`` does nothing.
    ``ClipTransform(size, resize_labels=False)`` resizes the frames only, for scoring at the labels' resolution.

    Args:
        size: (height, width) of the output; None keeps the input size.
        scale_range: (low, high) of the random scale factor relative to ``size``; needs ``crop``.
        crop: cut a random window from the scaled clip.
        crop_size: (height, width) of that window (training crops smaller than the working size); None = ``size``.
        hflip: random horizontal flip.
        resize_labels: also resize the label maps (False: keep them as they are; no random geometry then).
    """

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        scale_range: tuple[float, float] | None = None,
        crop: bool = False,
        hflip: bool = False,
        resize_labels: bool = True,
        crop_size: tuple[int, int] | None = None,
    ):
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if size[0] < 1 or size[1] < 1:
                raise ValueError(f"size must be positive (height, width), got {size}")
        if scale_range is not None:
            low, high = float(scale_range[0]), float(scale_range[1])
            if not 0 < low <= high:
                raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
            if not crop:
                raise ValueError("scale_range needs crop=True, so that every clip comes out at `size`")
            scale_range = (low, high)
        if crop and size is None:
            raise ValueError("crop=True needs a size (the working size the clip is scaled from)")
        if crop_size is not None:
            if not crop:
                raise ValueError("crop_size needs crop=True")
            crop_size = (int(crop_size[0]), int(crop_size[1]))
            if crop_size[0] < 1 or crop_size[1] < 1:
                raise ValueError(f"crop_size must be positive (height, width), got {crop_size}")
        if not resize_labels and (scale_range is not None or crop or hflip):
            raise ValueError("resize_labels=False keeps labels as they are, which random geometry cannot")
        self.size = size
        self.scale_range = scale_range
        self.crop = crop
        self.crop_size = crop_size if crop_size is not None else size
        self.hflip = hflip
        self.resize_labels = resize_labels

    @property
    def is_random(self) -> bool:
        return self.scale_range is not None or self.hflip or self.crop

    def __repr__(self) -> str:
        return (
            f"ClipTransform(size={self.size}, scale_range={self.scale_range}, crop={self.crop}, "
            f"crop_size={self.crop_size}, "
            f"hflip={self.hflip}, resize_labels={self.resize_labels})"
        )

    def __call__(
        self, frames: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform uint8 frames ``[T, 3, H, W]`` and label maps ``[T, H, W]`` with one random draw."""
        if frames.shape[-2:] != labels.shape[-2:] or frames.shape[0] != labels.shape[0]:
            raise ValueError(f"frames {tuple(frames.shape)} and labels {tuple(labels.shape)} do not match")
        target: tuple[int, int]
        if self.size is None:
            target = (frames.shape[-2], frames.shape[-1])
        elif self.scale_range is not None:
            scale = self.scale_range[0] + (self.scale_range[1] - self.scale_range[0]) * float(
                torch.rand((), generator=generator)
            )
            target = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        else:
            target = self.size
        frames = resize_frames(frames, target)
        if not self.resize_labels:
            return frames, labels
        labels = resize_labels(labels, target)
        if self.crop:
            window = self.crop_size
            assert window is not None, "crop needs a size (checked in __init__)"
            spare_rows, spare_cols = target[0] - window[0], target[1] - window[1]
            top = _randint(min(0, spare_rows), max(0, spare_rows), generator)
            left = _randint(min(0, spare_cols), max(0, spare_cols), generator)
            frames = _place(frames, window, top, left, fill=0)
            labels = _place(labels, window, top, left, fill=IGNORE_INDEX)
        if self.hflip and bool(torch.rand((), generator=generator) < 0.5):
            frames, labels = _flip_width(frames), _flip_width(labels)
        return frames, labels


def _flip_width(clip: torch.Tensor) -> torch.Tensor:
    if clip.device.type != "cpu":
        return clip.flip(-1)
    # A single-threaded NumPy copy: torch.flip's thread pool costs more than the copy on small clips.
    return torch.from_numpy(clip.numpy()[..., ::-1].copy())


"""Pictures of predictions: palette colouring, overlays, side-by-side frames, frame grids, captions, legends.

Every function takes and returns numpy uint8 images, ``[H, W, 3]`` RGB; label maps are integer ``[H, W]``
arrays of class indices of a label set (``vidseg.data.labels``), 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from vidseg.data.labels import IGNORE_INDEX, LabelSet, colorize, get_label_set

__all__ = ["add_caption", "colorize", "frame_strip", "legend", "overlay", "side_by_side"]

# Weights are in 1/256 steps so that blending stays in integer arithmetic.
_ONE = 256


def overlay(
    frame: np.ndarray, labels: np.ndarray, label_set: str | LabelSet = "cityscapes", alpha: float = 0.5
) -> np.ndarray:
    """The frame with each pixel's class colour blended in: ``(1 - alpha) * frame + alpha * colour``.

    Pixels that carry no class (255, and a class named "void") show the frame unchanged. ``alpha = 1`` gives the
    colour image, ``alpha = 0`` the frame. Colours come from the label set's palette.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if frame.shape[:2] != labels.shape or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {frame.shape} and label map {labels.shape} must be [H, W, 3] and [H, W]")
    label_set = get_label_set(label_set)
    colors = colorize(labels, label_set)
    weight_of_class = np.zeros(256, dtype=np.uint16)
    weight_of_class[: label_set.num_classes] = round(alpha * _ONE)
    for index, name in enumerate(label_set.class_names):
        if name == "void":
            weight_of_class[index] = 0
    weight_of_class[IGNORE_INDEX] = 0
    indices = labels if labels.dtype == np.uint8 else np.clip(labels, 0, 255).astype(np.uint8)
    weights = weight_of_class[indices][..., None]
    blended = frame.astype(np.uint16) * (_ONE - weights) + colors.astype(np.uint16) * weights
    return ((blended + _ONE // 2) >> 8).astype(np.uint8)


def side_by_side(images: Sequence[np.ndarray], gap: int = 0, fill: int = 255) -> np.ndarray:
    """Images of equal height placed left to right, ``gap`` pixels of ``fill`` between them."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    heights = {image.shape[0] for image in images}
    if len(heights) != 1:
        raise ValueError(f"side_by_side needs images of one height, got heights {sorted(heights)}")
    images = [_rgb(image) for image in images]
    if gap == 0:
        return np.concatenate(images, axis=1)
    spacer = np.full((images[0].shape[0], gap, 3), fill, dtype=np.uint8)
    parts = [part for image in images for part in (image, spacer)][:-1]
    return np.concatenate(parts, axis=1)


def frame_strip(rows: Sequence[Sequence[np.ndarray]], gap: int = 4, fill: int = 255) -> np.ndarray:
    """A grid: each row is a sequence of equal-height images (e.g. one row per frame: input, truth,
    prediction; or one row per kind over time); rows are stacked top to bottom and padded on the right with
    ``fill`` to the widest row."""
    if not rows:
        raise ValueError("frame_strip needs at least one row")
    lines = [side_by_side(row, gap, fill) for row in rows]
    width = max(line.shape[1] for line in lines)
    parts = []
    for index, line in enumerate(lines):
        if line.shape[1] < width:
            pad = np.full((line.shape[0], width - line.shape[1], 3), fill, dtype=np.uint8)
            line = np.concatenate([line, pad], axis=1)
        parts.append(line)
        if gap and index < len(lines) - 1:
            parts.append(np.full((gap, width, 3), fill, dtype=np.uint8))
    return np.concatenate(parts, axis=0)


def add_caption(image: np.ndarray, text: str, bar_height: int = 20, fill: int = 255) -> np.ndarray:
    """The image below a ``bar_height`` band of ``fill`` that carries ``text`` in black."""
    image = _rgb(image)
    bar = np.full((bar_height, image.shape[1], 3), fill, dtype=np.uint8)
    scale = bar_height / 40
    baseline = bar_height - max(2, bar_height // 4)
    cv2.putText(bar, text, (3, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def legend(label_set: str | LabelSet = "cityscapes", swatch: int = 16, width: int = 160) -> np.ndarray:
    """A white image listing every class of the label set: a colour swatch and the class name per line."""
    label_set = get_label_set(label_set)
    line = swatch + 4
    image = np.full((line * label_set.num_classes + 4, width, 3), 255, dtype=np.uint8)
    for index, (name, color) in enumerate(zip(label_set.class_names, label_set.palette)):
        top = 4 + index * line
        image[top : top + swatch, 4 : 4 + swatch] = color
        cv2.putText(
            image, name, (swatch + 10, top + swatch - 4), cv2.FONT_HERSHEY_SIMPLEX, swatch / 40, (0, 0, 0), 1,
            cv2.LINE_AA,
        )
    return image


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]``; a grey ``[H, W]`` image is repeated over the channels."""
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images must be [H, W, 3] or [H, W], got shape {image.shape}")
    return image

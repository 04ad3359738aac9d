"""Reading image and label files: RGB frames, single-channel label codes, RGB-coded labels.

Every reader raises VidsegError naming the file when it is missing, truncated or of the wrong kind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from vidseg.errors import VidsegError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def open_image(path: Path) -> Image.Image:
    """The decoded image at ``path``; VidsegError if it is missing or cannot be decoded."""
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise VidsegError(f"{path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise VidsegError(
            f"cannot decode {path} ({error}); the file is truncated or not an image: extract it again from the "
            "dataset archive, or remove its sample"
        ) from None
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of an image file.

    Grayscale, palette and RGBA images are converted to RGB (alpha dropped). 16-bit images are converted to 8
    bits by keeping the high byte (value // 256), as Pillow already does for 16-bit RGB PNGs.
    """
    path = Path(path)
    with open_image(path) as image:
        return rgb_array(image)


def rgb_array(image: Image.Image) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of a decoded image, converted as ``read_image`` documents."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's own conversion clips 16-bit values at 255, which turns almost every pixel white.
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image)


def read_label_ids(path: str | os.PathLike, hint: str = "") -> np.ndarray:
    """uint8 ``[H, W]`` codes of a single-channel label file (8- or 16-bit; values above 255 become 255).

    A palette PNG gives its palette indices. ``hint`` ends the error for a multi-channel file (what to use
    instead); default: the Cityscapes advice.
    """
    path = Path(path)
    with open_image(path) as image:
        if image.mode in ("L", "P"):
            return np.array(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.clip(np.asarray(image, dtype=np.int64), 0, 255).astype(np.uint8)
        if image.mode == "1":
            return np.asarray(image).astype(np.uint8)
        channels = f"{path} has mode {image.mode} ({len(image.getbands())} channels)"
        if hint:
            raise VidsegError(f"{channels}, but a label file has one channel of label codes; {hint}")
        raise VidsegError(
            f"{channels}, but a labelIds file has one channel of labelIds; use the *_gtFine_labelIds.png files, "
            "not *_gtFine_color.png"
        )


def read_colour_label(path: str | os.PathLike, colours: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` codes of an RGB-coded label file: pixel colour ``colours[k]`` -> code ``k``.

    ``colours`` is ``[K, 3]`` (K <= 255); a colour not in it becomes 255 (ignored).
    """
    path = Path(path)
    with open_image(path) as image:
        return decode_colours(rgb_array(image), colours)


def read_any_label(path: str | os.PathLike, colours: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` codes of a label file: one channel as is (``read_label_ids``), RGB(A) decoded by
    ``colours`` (``read_colour_label``)."""
    path = Path(path)
    with open_image(path) as image:
        if image.mode in ("RGB", "RGBA"):
            return decode_colours(rgb_array(image), colours)
    return read_label_ids(path)


def decode_colours(rgb_image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Codes of an RGB ``[H, W, 3]`` label image: colour ``colours[k]`` -> ``k``, any other colour -> 255."""
    rgb = rgb_image.astype(np.int64)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    table = np.asarray(colours, dtype=np.int64).reshape(-1, 3)
    table_keys = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    order = np.argsort(table_keys, kind="stable")
    sorted_keys = table_keys[order]
    where = np.searchsorted(sorted_keys, keys).clip(0, len(sorted_keys) - 1)
    found = sorted_keys[where] == keys
    return np.where(found, order[where], 255).astype(np.uint8)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by extension, hidden files skipped), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(
        Path(entry.path)
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(IMAGE_EXTENSIONS)
    )


def list_dirs(path: Path) -> list[str]:
    """Names of the sub-folders of ``path`` (hidden ones skipped), sorted; [] if it is not a folder."""
    if not path.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not entry.name.startswith("."))

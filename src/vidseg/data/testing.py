"""Tiny Cityscapes-layout trees for tests, with each frame's identity painted into its pixels.

``make_cityscapes_tree(root)`` writes ``leftImg8bit_sequence`` snippets (30 frames around every annotated frame),
``gtFine`` labelIds for the annotated frames, and decoy files that a loader must ignore. Every image is::

    R, G = code // 256, code % 256      (constant over the image: which frame this is)
    B    = column gradient 0..255        (where a pixel came from: reveals crops and flips)

so ``tree.identify(frame)`` names the frame a (possibly resized, cropped, flipped, normalised) frame came from:
bilinear resizing and zero padding can only lower R*256+G at the edges, so the maximum is the code. Labels are
vertical bands of labelIds (different per annotated frame, upper and lower halves differ) that include void and
non-train ids, so tests can check the label mapping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidseg.data.cityscapes import (
    IMAGE_SUFFIX,
    LABEL_SUFFIX,
    PLAIN_FOLDER,
    SEQUENCE_FOLDER,
    SNIPPET_AFTER,
    SNIPPET_BEFORE,
    frame_name,
)
from vidseg.data.transforms import denormalize

# labelIds painted into label bands: train classes, void ids (0, 4) and non-train ids (9 parking, 29 caravan).
BAND_LABEL_IDS = (7, 8, 11, 17, 0, 21, 23, 24, 26, 9, 4, 29)
NUM_BANDS = 8


@dataclass
class TreeInfo:
    """What ``make_cityscapes_tree`` wrote.

    Attributes:
        root: the dataset root.
        size: (height, width) of every image.
        codes: identity code painted into a frame -> its ``city_seq_frame`` name.
        annotated: split -> sorted names of the annotated frames (one per sample).
        label_ids: (split, ``city_seq_frame``) of a labelled frame -> the labelIds array written for it.
        dense: every frame of a sequence has a label file.
    """

    root: Path
    size: tuple[int, int]
    codes: dict[int, str] = field(default_factory=dict)
    annotated: dict[str, list[str]] = field(default_factory=dict)
    label_ids: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    dense: bool = False

    def identify(self, frame: torch.Tensor) -> str:
        """Name of the frame a normalised ``[3, H, W]`` frame was made from."""
        pixels = denormalize(frame).to(torch.int64)
        code = int((pixels[0] * 256 + pixels[1]).max())
        if code not in self.codes:
            raise KeyError(f"identity code {code} was not painted into this tree")
        return self.codes[code]

    def column_of(self, frame: torch.Tensor) -> np.ndarray:
        """Source column (0..W-1) of every output pixel, from the painted blue gradient; ``[H, W]``."""
        blue = denormalize(frame)[2].numpy().astype(np.float64)
        return np.rint(blue * (self.size[1] - 1) / 255.0).astype(np.int64)


def band_label_ids(index: int, size: tuple[int, int]) -> np.ndarray:
    """labelIds ``[H, W]`` of the ``index``-th annotated frame: NUM_BANDS vertical bands, halves differ."""
    height, width = size
    band = np.arange(width) * NUM_BANDS // width
    upper = np.array(BAND_LABEL_IDS)[(band + index) % len(BAND_LABEL_IDS)]
    lower = np.array(BAND_LABEL_IDS)[(band + index + 3) % len(BAND_LABEL_IDS)]
    ids = np.empty(size, dtype=np.uint8)
    ids[: height // 2] = upper
    ids[height // 2 :] = lower
    return ids


def identity_image(code: int, size: tuple[int, int]) -> np.ndarray:
    """The RGB image painted for identity ``code`` (1..65535)."""
    height, width = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:, :, 0] = code // 256
    image[:, :, 1] = code % 256
    image[:, :, 2] = np.rint(np.arange(width) * 255.0 / max(width - 1, 1)).astype(np.uint8)
    return image


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def make_cityscapes_tree(
    root: str | os.PathLike,
    cities: Sequence[str] = ("aachen", "bochum", "zurich"),
    sequences: int = 1,
    annotated_frames: Sequence[int] = (313,),
    size: tuple[int, int] = (32, 64),
    splits: Sequence[str] = ("train", "val"),
    sequence_images: bool = True,
    plain_images: bool = False,
    decoys: bool = True,
    dense_frames: int | None = None,
) -> TreeInfo:
    """Write a small dataset in the official Cityscapes layout under ``root`` and describe it.

    Args:
        root: folder to write into (created).
        cities: city folders per split.
        sequences: sequence numbers 0..sequences-1 per city.
        annotated_frames: annotated frame numbers in every sequence; each gets frames f-19 .. f+10.
        size: (height, width) of every image and label.
        splits: split folders.
        sequence_images: write ``leftImg8bit_sequence`` (all snippet frames).
        plain_images: write ``leftImg8bit`` (annotated frames only).
        decoys: also write ``_gtFine_color.png``, ``_gtFine_instanceIds.png``, ``_gtFine_labelTrainIds.png``
            and ``_gtFine_polygons.json`` next to every label file.
        dense_frames: instead of snippets, write SynthCity-style dense sequences of this many frames (0..n-1),
            every frame labelled, with a ``synthcity.json`` whose corruption code of frame f is ``f % 3``.
    """
    root = Path(root)
    tree = TreeInfo(root=root, size=(size[0], size[1]), dense=dense_frames is not None)
    code = 0
    meta_sequences: dict[str, dict] = {}
    for split in splits:
        names = []
        meta_sequences[split] = {}
        for city in cities:
            for seq in range(sequences):
                if dense_frames is not None:
                    snippets = [(list(range(dense_frames)), list(range(dense_frames)))]
                    meta_sequences[split][f"{city}_{seq:06d}"] = {
                        "corruption": [f % 3 for f in range(dense_frames)]
                    }
                else:
                    snippets = [
                        (list(range(f - SNIPPET_BEFORE, f + SNIPPET_AFTER + 1)), [f]) for f in annotated_frames
                    ]
                for frames, labelled in snippets:
                    for frame in frames:
                        code += 1
                        name = frame_name(city, seq, frame)
                        tree.codes[code] = name
                        image = identity_image(code, size)
                        if sequence_images:
                            _save_png(image, root / SEQUENCE_FOLDER / split / city / (name + IMAGE_SUFFIX))
                        if plain_images and frame in labelled:
                            _save_png(image, root / PLAIN_FOLDER / split / city / (name + IMAGE_SUFFIX))
                    for frame in labelled:
                        name = frame_name(city, seq, frame)
                        ids = band_label_ids(len(tree.label_ids), size)
                        tree.label_ids[(split, name)] = ids
                        names.append(name)
                        folder = root / "gtFine" / split / city
                        _save_png(ids, folder / (name + LABEL_SUFFIX))
                        if decoys:
                            _write_decoys(folder, name, ids)
        tree.annotated[split] = sorted(names)
    if dense_frames is not None:
        meta = {"format": "synthcity", "corruptions": ["clean", "noise", "dark"], "sequences": meta_sequences}
        (root / "synthcity.json").write_text(json.dumps(meta))
    return tree


def _write_decoys(folder: Path, name: str, ids: np.ndarray) -> None:
    # Decoys hold values that would be wrong as labelIds, so reading one by mistake shows in the labels.
    _save_png(np.stack([ids, 255 - ids, ids], axis=-1), folder / f"{name}_gtFine_color.png")
    _save_png((ids.astype(np.uint16) * 1000 + 7), folder / f"{name}_gtFine_instanceIds.png")
    _save_png(np.full_like(ids, 5), folder / f"{name}_gtFine_labelTrainIds.png")
    (folder / f"{name}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": ids.shape[0], "objects": []}))

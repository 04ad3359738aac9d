"""Tiny dataset trees of every layout for tests, with each frame's identity painted into its pixels.

``make_camvid_tree``, ``make_vspw_tree`` and ``make_folders_tree`` write the other layouts the same way (see
their docstrings). ``make_cityscapes_tree(root)`` writes ``leftImg8bit_sequence`` snippets (30 frames around
every annotated frame), ``gtFine`` labelIds for the annotated frames, and decoy files that a loader must
ignore. Every image is::

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
        sequences: split -> {sequence name: its frame names in order}, as the index should find them (the
            layouts other than Cityscapes).
    """

    root: Path
    size: tuple[int, int]
    codes: dict[int, str] = field(default_factory=dict)
    annotated: dict[str, list[str]] = field(default_factory=dict)
    label_ids: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    dense: bool = False
    sequences: dict[str, dict[str, list[str]]] = field(default_factory=dict)

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


# ------------------------------------------------------------------------------------------ other layouts

# CamVid videos as (sequence, name format, frame numbers) per split: the real name formats (six digits, five
# digits, ``f`` + five), 1 Hz runs with a gap in 0016E5 train, and a 15 Hz val run, as in the SegNet split.
CAMVID_VIDEOS: dict[str, list[tuple[str, str, list[int]]]] = {
    "train": [
        ("0001TP", "{:06d}", [6690, 6720, 6750]),
        ("0006R0", "f{:05d}", [930, 960, 990, 1020]),
        ("0016E5", "{:05d}", [390, 420, 450, 4350, 4380, 4410, 4440]),
    ],
    "val": [("0016E5", "{:05d}", [7959, 7961, 7963, 7965, 7967])],
    "test": [("0001TP", "{:06d}", [8550, 8580]), ("Seq05VD", "f{:05d}", [0, 30, 60])],
}


def _runs(numbers: list[int]) -> list[list[int]]:
    """``numbers`` split where the spacing (the most common gap) changes."""
    gaps = [b - a for a, b in zip(numbers, numbers[1:])]
    step = max(set(gaps), key=gaps.count) if gaps else 1
    runs = [[numbers[0]]]
    for number in numbers[1:]:
        if number - runs[-1][-1] == step:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs


def _code_bands(index: int, size: tuple[int, int], values: Sequence[int]) -> np.ndarray:
    """``[H, W]`` vertical bands of ``values`` (shifted by ``index``; halves differ), uint8."""
    height, width = size
    band = np.arange(width) * NUM_BANDS // width
    table = np.array(values)
    codes = np.empty(size, dtype=np.uint8)
    codes[: height // 2] = table[(band + index) % len(table)]
    codes[height // 2 :] = table[(band + index + 3) % len(table)]
    return codes


def make_camvid_tree(
    root: str | os.PathLike,
    size: tuple[int, int] = (24, 32),
    splits: Sequence[str] = ("train", "val", "test"),
    original: bool = False,
    decoys: bool = True,
) -> TreeInfo:
    """Write a small CamVid root (``CAMVID_VIDEOS``) and describe it.

    SegNet layout (``original=False``): ``{split}/`` frames and ``{split}annot/`` labels of values 0..11 (11 =
    void). Original release (``original=True``): ``701_StillsRaw_full/`` frames of every split,
    ``LabeledApproved_full/*_L.png`` RGB-coded labels of the 32 codes and ``label_colors.txt``.
    ``label_ids`` holds the codes written (SegNet values, or indices into ``label_colors.txt``). Decoys: a text
    file, a hidden file and an image whose name is not ``SEQ_FRAME`` beside the frames and labels.
    """
    from vidseg.data.labels import CAMVID32_CODES

    root = Path(root)
    tree = TreeInfo(root=root, size=(size[0], size[1]), dense=True)
    code = 0
    colours = np.array([colour for _, colour in CAMVID32_CODES], dtype=np.uint8)
    values = list(range(len(CAMVID32_CODES))) if original else list(range(12))
    for split in splits:
        names = []
        tree.sequences[split] = {}
        for seq, pattern, numbers in CAMVID_VIDEOS[split]:
            runs = _runs(numbers)
            for number_in_run, run in enumerate(runs):
                run_name = seq if len(runs) == 1 else f"{seq}-run{number_in_run + 1}"
                tree.sequences[split][run_name] = [f"{seq}_{pattern.format(n)}" for n in run]
            for number in numbers:
                name = f"{seq}_{pattern.format(number)}"
                code += 1
                tree.codes[code] = name
                codes = _code_bands(len(tree.label_ids), size, values)
                tree.label_ids[(split, name)] = codes
                names.append(name)
                if original:
                    _save_png(identity_image(code, size), root / "701_StillsRaw_full" / f"{name}.png")
                    _save_png(colours[codes], root / "LabeledApproved_full" / f"{name}_L.png")
                else:
                    _save_png(identity_image(code, size), root / split / f"{name}.png")
                    _save_png(codes, root / f"{split}annot" / f"{name}.png")
        tree.annotated[split] = sorted(names)
    folders = ("701_StillsRaw_full", "LabeledApproved_full") if original else (
        *splits, *(f"{split}annot" for split in splits))
    if decoys:
        for folder in folders:
            (root / folder / "README.txt").write_text("not a frame")
            (root / folder / ".hidden.png").write_bytes(b"not an image")
            _save_png(np.zeros((*size, 3), dtype=np.uint8), root / folder / "preview.png")
    if original:
        lines = [f"{r} {g} {b}\t{name}" for name, (r, g, b) in CAMVID32_CODES]
        (root / "label_colors.txt").write_text("\n".join(lines) + "\n")
    return tree


def make_vspw_tree(
    root: str | os.PathLike,
    size: tuple[int, int] = (24, 32),
    videos: dict[str, dict[str, int]] | None = None,
) -> TreeInfo:
    """Write a small VSPW root and describe it.

    ``videos``: split -> {video: frame count}; default two train videos, one val, one test (no masks). Frames
    ``data/{video}/origin/{n:08d}.jpg`` hold PNG data (exact pixels; Pillow reads by content), masks
    ``mask/{n:08d}.png`` values 0..124 and 255. ``label_ids`` holds the masks written.
    """
    root = Path(root)
    videos = videos or {"train": {"1001_abc": 4, "1002_def": 3}, "val": {"2001_ghi": 5}, "test": {"3001_jkl": 2}}
    tree = TreeInfo(root=root, size=(size[0], size[1]), dense=True)
    code = 0
    for split, counts in videos.items():
        names = []
        tree.sequences[split] = {}
        for video, count in counts.items():
            tree.sequences[split][video] = [f"{n:08d}" for n in range(count)]
            for number in range(count):
                name = f"{number:08d}"
                code += 1
                tree.codes[code] = f"{video}/{name}"
                _save_png_as(identity_image(code, size), root / "data" / video / "origin" / f"{name}.jpg")
                if split != "test":
                    mask = _code_bands(len(tree.label_ids), size, [0, 1, 2, 50, 124, 255, 7, 3])
                    tree.label_ids[(split, f"{video}/{name}")] = mask
                    _save_png(mask, root / "data" / video / "mask" / f"{name}.png")
                    names.append(f"{video}/{name}")
        tree.annotated[split] = names
        (root / f"{split}.txt").write_text("\n".join(counts) + "\n")
    return tree


def _save_png_as(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


FOLDER_CLASSES = (("road", (128, 64, 128)), ("car", (0, 0, 142)), ("tree", (107, 142, 35)))


def make_folders_tree(
    root: str | os.PathLike,
    size: tuple[int, int] = (24, 32),
    ignore: int = 9,
) -> TreeInfo:
    """Write a small root of the folders layout and describe it.

    ``classes.yaml`` declares ``FOLDER_CLASSES`` with ignore value ``ignore``. train: ``street`` (frames
    ``frame_0001..0006``, labels for 1, 3, 4 and 6 as one-channel indices including the ignore value) and
    ``yard`` (frames 10, 11, 12, 20, 21: a gap; RGB-coded labels for all). val: ``lane`` (3 frames, labels
    for each). ``label_ids`` holds the class indices each label encodes (ignore included).
    """
    root = Path(root)
    tree = TreeInfo(root=root, size=(size[0], size[1]), dense=False)
    colours = np.array([c for _, c in FOLDER_CLASSES], dtype=np.uint8)
    videos: dict[str, dict[str, tuple[list[int], set[int] | None, bool]]] = {
        "train": {"street": ([1, 2, 3, 4, 5, 6], {1, 3, 4, 6}, False), "yard": ([10, 11, 12, 20, 21], None, True)},
        "val": {"lane": ([7, 8, 9], None, False)},
    }
    code = 0
    for split, entries in videos.items():
        tree.sequences[split] = {}
        names = []
        for video, (numbers, labelled, rgb) in entries.items():
            for number_in_run, run in enumerate(_runs(numbers)):
                run_name = video if len(_runs(numbers)) == 1 else f"{video}-run{number_in_run + 1}"
                tree.sequences[split][run_name] = [f"frame_{n:04d}" for n in run]
            for number in numbers:
                name = f"frame_{number:04d}"
                code += 1
                tree.codes[code] = f"{video}/{name}"
                _save_png(identity_image(code, size), root / split / video / "frames" / f"{name}.png")
                if labelled is not None and number not in labelled:
                    continue
                indices = _code_bands(len(tree.label_ids), size, [0, 1, 2, ignore] if not rgb else [0, 1, 2])
                tree.label_ids[(split, f"{video}/{name}")] = indices
                names.append(f"{video}/{name}")
                label = colours[indices] if rgb else indices
                _save_png(label, root / split / video / "labels" / f"{name}.png")
        tree.annotated[split] = names
    lines = ["name: tiny", "classes:"]
    lines += [f"  - {{name: {name}, color: [{r}, {g}, {b}]}}" for name, (r, g, b) in FOLDER_CLASSES]
    lines += [f"ignore: {ignore}", "fps: 10"]
    (root / "classes.yaml").write_text("\n".join(lines) + "\n")
    (root / "train" / "notes.txt").write_text("a stray file")
    return tree

"""VSPW (Miao et al., "VSPW: A Large-scale Dataset for Video Scene Parsing in the Wild", CVPR 2021).

Files::

    {root}/data/{video}/origin/{frame}.jpg    RGB frames
    {root}/data/{video}/mask/{frame}.png      one channel: 0 = "others", 1..124 = classes, 255 = ignore
    {root}/train.txt, val.txt, test.txt       one video name per line
    {root}/label_num_dic_final.json           optional: {"others": 0, "wall": 1, ...} (class names)

Label set ``vspw124``: mask value k in 1..124 is class k-1; 0 ("others") and 255 are ignored, as VSPW's own
evaluation and the published models read the masks. Every frame of a video with a ``mask/`` folder must have
its mask (test videos have none: their frames are unlabelled). Frame numbers are the digits of the file stem;
VSPW does not state the frame rate in the files, so ``fps`` is None.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vidseg.data.files import list_images
from vidseg.data.index import Frame, LabelDecoder, Layout, VideoIndex, split_runs
from vidseg.data.labels import VSPW_CLASS_NAMES, LabelSet, vspw_label_set
from vidseg.errors import VidsegError

DATA = "data"
IMAGES = "origin"
MASKS = "mask"
NAMES_FILE = "label_num_dic_final.json"
SPLIT_FILES = ("train", "val", "test")
NUMBER = re.compile(r"(\d+)$")


def detect(root: Path) -> bool:
    return (root / DATA).is_dir() and any((root / f"{split}.txt").is_file() for split in SPLIT_FILES)


def splits(root: Path) -> list[str]:
    return [split for split in SPLIT_FILES if (root / f"{split}.txt").is_file()]


def class_names(root: Path) -> tuple[str, ...]:
    """The 124 class names: from ``label_num_dic_final.json`` when present, else the built-in list."""
    path = root / NAMES_FILE
    if not path.is_file():
        return VSPW_CLASS_NAMES
    try:
        table = json.loads(path.read_text())
        by_value = {int(value): str(name) for name, value in table.items()}
    except (OSError, ValueError, AttributeError, TypeError) as error:
        raise VidsegError(f"cannot read {path} ({error}): expected {{class name: mask value}}") from None
    names = tuple(by_value.get(k, "") for k in range(1, len(VSPW_CLASS_NAMES) + 1))
    if "" in names or len(by_value) > len(VSPW_CLASS_NAMES) + 1:
        raise VidsegError(
            f"{path} maps {len(by_value)} values; VSPW has 'others' = 0 and {len(VSPW_CLASS_NAMES)} classes 1..124"
        )
    return names


def label_set_for(root: Path, name: str | LabelSet | None) -> LabelSet:
    if isinstance(name, LabelSet):
        return name
    if name not in (None, "vspw124"):
        raise VidsegError(f"label set {name!r} does not fit VSPW; use vspw124")
    return vspw_label_set(class_names(root))


def build(root: Path, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
    """The index of ``split``: one sequence per video listed in ``{split}.txt`` (split again at gaps)."""
    chosen = label_set_for(root, label_set)
    listing = root / f"{split}.txt"
    if not listing.is_file():
        raise VidsegError(
            f"split {split!r} not found in VSPW root {root}: {listing} does not exist; splits present: "
            f"{', '.join(splits(root)) or 'none'}"
        )
    videos = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not videos:
        raise VidsegError(f"split {split!r} is empty: {listing} lists no video")
    sequences = []
    for video in videos:
        folder = root / DATA / video
        images = list_images(folder / IMAGES)
        if not images:
            raise VidsegError(f"{listing} lists video {video!r}, but {folder / IMAGES} holds no frames")
        masks = {path.stem: path for path in list_images(folder / MASKS) if path.suffix.lower() == ".png"}
        dense = (folder / MASKS).is_dir()
        frames = []
        for path in images:
            match = NUMBER.search(path.stem)
            if match is None:
                continue
            label = masks.pop(path.stem, None)
            if dense and label is None:
                raise VidsegError(
                    f"frame {path} has no mask: expected {folder / MASKS / (path.stem + '.png')}; restore it or "
                    "remove the frame"
                )
            frames.append(Frame(path.stem, int(match[1]), path, label))
        if masks:
            stray = sorted(masks.values())
            raise VidsegError(
                f"{len(stray)} masks in {folder / MASKS} have no frame in {folder / IMAGES} (first: {stray[0].name})"
            )
        if not frames:
            raise VidsegError(f"{folder / IMAGES} holds no numbered frames")
        sequences.extend(split_runs(video, frames, None))
    return VideoIndex("vspw", root, split, chosen, tuple(sequences), LabelDecoder(hint=_HINT))


_HINT = "VSPW masks are one channel of values 0..124 (255 = ignore)"

LAYOUT = Layout(
    name="vspw",
    expects="data/{video}/origin/*.jpg with data/{video}/mask/*.png and train.txt / val.txt / test.txt (VSPW)",
    detect=detect,
    splits=splits,
    build=build,
    label_set=label_set_for,
)

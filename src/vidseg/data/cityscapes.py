"""The official Cityscapes layout (also written by SynthCity), as a video index.

Files::

    {root}/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png

Every ``*_gtFine_labelIds.png`` marks an annotated frame f; its snippet holds frames f-19 ... f+10 (the annotated
frame is the 20th of 30): one sequence of the index per snippet, the annotated frame its only labelled frame.
Other files in gtFine (``_color``, ``_instanceIds``, ``_labelTrainIds``, ``_polygons.json``) are ignored. With
``leftImg8bit/`` only (no sequences), the index holds the annotated frames alone (windows of one frame).

A root with a ``synthcity.json`` file is *dense*: every frame has a label file, a sequence is the whole video,
and each frame's corruption code (from ``synthcity.json``) is a per-frame fact.

``CityscapesSequences`` is the clip dataset of this layout (``open_dataset(..., layout="cityscapes")``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence as Seq
from pathlib import Path

from vidseg.data.clips import (
    ClipDataset,
    feasible_positions,
    load_index,
    parse_frame_stride,
    parse_gt_position,
    window_misfit,
    window_options,
)
from vidseg.data.files import list_dirs as _list_dirs
from vidseg.data.files import read_image, read_label_ids, rgb_array
from vidseg.data.index import Frame, LabelDecoder, Layout, Sequence, VideoIndex
from vidseg.data.labels import LabelSet, get_label_set
from vidseg.data.synthcity import validate_metadata
from vidseg.errors import VidsegError

__all__ = [
    "CityscapesSequences",
    "build",
    "feasible_positions",
    "find_label_files",
    "frame_name",
    "image_path",
    "label_path",
    "parse_frame_stride",
    "parse_gt_position",
    "read_image",
    "read_label_ids",
    "rgb_array",
    "window_misfit",
    "window_options",
]

SNIPPET_BEFORE = 19
SNIPPET_AFTER = 10
SEQUENCE_FOLDER = "leftImg8bit_sequence"
PLAIN_FOLDER = "leftImg8bit"
LABEL_FOLDER = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
SYNTHCITY_META = "synthcity.json"
CITYSCAPES_FPS = 17.0
"""Frame rate of the Cityscapes video sequences."""
LABEL_FILE_PATTERN = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def frame_name(city: str, seq: int, frame: int) -> str:
    """``city_seq_frame`` as the Cityscapes file names spell it, e.g. ``bochum_000000_000313``."""
    return f"{city}_{seq:06d}_{frame:06d}"


def image_path(root: Path, folder: str, split: str, city: str, seq: int, frame: int) -> Path:
    return root / folder / split / city / (frame_name(city, seq, frame) + IMAGE_SUFFIX)


def label_path(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    return root / LABEL_FOLDER / split / city / (frame_name(city, seq, frame) + LABEL_SUFFIX)


def find_label_files(root: Path, split: str) -> dict[tuple[str, int], list[int]]:
    """Labelled frames of a split: ``{(city, seq): sorted frame numbers}``; VidsegError if there are none."""
    if not root.is_dir():
        raise VidsegError(f"dataset root {root} does not exist or is not a folder")
    label_root = root / LABEL_FOLDER
    if not label_root.is_dir():
        found = ", ".join(_list_dirs(root)) or "nothing"
        raise VidsegError(f"{root} has no {LABEL_FOLDER}/ folder (found: {found}); pass the Cityscapes root")
    split_root = label_root / split
    if not split_root.is_dir():
        splits = ", ".join(_list_dirs(label_root)) or "none"
        raise VidsegError(f"split {split!r} not found: {split_root} does not exist; splits present: {splits}")
    frames: dict[tuple[str, int], list[int]] = {}
    cities = _list_dirs(split_root)
    for city in cities:
        for name in os.listdir(split_root / city):
            match = LABEL_FILE_PATTERN.match(name)
            if match and match["city"] == city:
                key = (match["city"], int(match["seq"]))
                frames.setdefault(key, []).append(int(match["frame"]))
    if not frames:
        raise VidsegError(
            f"split {split!r} is empty: no *{LABEL_SUFFIX} files in {split_root} "
            f"(cities: {', '.join(cities) or 'none'})"
        )
    return {key: sorted(value) for key, value in sorted(frames.items())}


def _read_synthcity_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VidsegError(f"cannot read {path} ({error}); regenerate the dataset with `vidseg synth`") from None
    if not isinstance(meta, dict) or "sequences" not in meta:
        raise VidsegError(f"{path} has no 'sequences' entry; regenerate the dataset with `vidseg synth`")
    return validate_metadata(meta, path)


def corruption_codes(meta: dict | None, split: str, city: str, seq: int, last_frame: int) -> tuple[int, ...] | None:
    """Corruption code of every frame 0..last_frame of a SynthCity sequence, from its ``synthcity.json``."""
    if meta is None:
        return None
    codes = meta["sequences"].get(split, {}).get(f"{city}_{seq:06d}", {}).get("corruption")
    if codes is None:
        return None
    if len(codes) <= last_frame:
        raise VidsegError(
            f"{SYNTHCITY_META} lists {len(codes)} corruption codes for {split}/{city}_{seq:06d}, but the sequence "
            f"has a label file for frame {last_frame}; regenerate the dataset with `vidseg synth`"
        )
    return tuple(int(code) for code in codes)




class CityscapesSequences(ClipDataset):
    """Windows of consecutive video frames around annotated frames, in the official Cityscapes layout.

    The clip dataset (``vidseg.data.clips.ClipDataset``) of ``build_index(root, split, "cityscapes")``.

    Args:
        root: dataset root holding ``gtFine/`` and ``leftImg8bit_sequence/`` (or only ``leftImg8bit/`` for
            ``num_frames=1``).
        split: ``"train"``, ``"val"``, ... (a folder under ``gtFine/``).
        num_frames: frames per window (T).
        gt_position: where the annotated frame sits in the window: ``"random"``, ``"last"`` or an index.
        frame_stride: distance between window frames, an int or a ``(low, high)`` range drawn per sample.
        label_set: ``"cityscapes"`` (19 classes), ``"report"`` (20, void as class 19) or a LabelSet.
        transform: a clip transform (``ClipTransform``).
        skip_missing: drop samples whose window could touch a missing image instead of raising VidsegError.
        cache: a folder written by ``vidseg prepare`` to read frames from instead of PNGs.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        num_frames: int,
        gt_position: str | int = "random",
        frame_stride: int | Seq[int] = 1,
        label_set: str | LabelSet = "cityscapes",
        transform=None,
        skip_missing: bool = False,
        cache: str | os.PathLike | None = None,
    ):
        index, frame_cache = load_index(root, split, "cityscapes", label_set, cache, getattr(transform, "size", None))
        super().__init__(index, num_frames, gt_position, frame_stride, transform, skip_missing, frame_cache)


# --- the layout, as a video index ----------------------------------------------------------------------


def detect(root: Path) -> bool:
    return (root / LABEL_FOLDER).is_dir()


def splits(root: Path) -> list[str]:
    return _list_dirs(root / LABEL_FOLDER)


def build(root: Path, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
    """The index of ``split``: one sequence per annotated frame's snippet (frames f-19..f+10, the annotated
    frame labelled), or for a SynthCity root (``synthcity.json``) one dense sequence per video with every frame
    labelled and its corruption code as a per-frame fact."""
    root = Path(root)
    chosen = get_label_set(label_set or "cityscapes")
    meta_path = root / SYNTHCITY_META
    dense = meta_path.is_file()
    meta = _read_synthcity_meta(meta_path) if dense else None
    labelled = find_label_files(root, split)
    single = None
    if (root / SEQUENCE_FOLDER / split).is_dir():
        folder = SEQUENCE_FOLDER
    elif (root / PLAIN_FOLDER / split).is_dir():
        folder = PLAIN_FOLDER
        if not dense:
            single = (
                f"windows of several frames need {root / SEQUENCE_FOLDER / split} (the 30-frame snippets, "
                f"leftImg8bit_sequence_trainvaltest.zip); only {PLAIN_FOLDER}/{split} exists, which holds the "
                "annotated frames alone: use num_frames=1, or add the sequences"
            )
    else:
        raise VidsegError(
            f"no images for split {split!r}: neither {root / SEQUENCE_FOLDER / split} nor "
            f"{root / PLAIN_FOLDER / split} exists (found under {root}: {', '.join(_list_dirs(root)) or 'nothing'})"
        )

    def frame(city: str, seq: int, number: int, labelled: bool, corruption: tuple[int, ...] | None) -> Frame:
        facts = {"corruption": corruption[number]} if corruption is not None else {}
        return Frame(
            frame_name(city, seq, number),
            number,
            image_path(root, folder, split, city, seq, number),
            label_path(root, split, city, seq, number) if labelled else None,
            facts,
        )

    sequences = []
    for (city, seq), numbers in labelled.items():
        if dense:
            codes = corruption_codes(meta, split, city, seq, numbers[-1])
            marked = set(numbers)
            frames = tuple(frame(city, seq, n, n in marked, codes) for n in range(numbers[0], numbers[-1] + 1))
            sequences.append(Sequence(f"{city}_{seq:06d}", frames, 1, None))
            continue
        for number in numbers:
            span = [number] if single else range(number - SNIPPET_BEFORE, number + SNIPPET_AFTER + 1)
            frames = tuple(frame(city, seq, n, n == number, None) for n in span)
            # A snippet is named after its annotated frame: a video may hold several.
            sequences.append(Sequence(frame_name(city, seq, number), frames, 1, CITYSCAPES_FPS))
    return VideoIndex(
        "cityscapes", root, split, chosen, tuple(sequences), LabelDecoder(), snippets=not dense, single_frames=single
    )


LAYOUT = Layout(
    name="cityscapes",
    expects="gtFine/{split}/{city}/*_gtFine_labelIds.png with leftImg8bit_sequence/ (or leftImg8bit/) images "
    "(Cityscapes, SynthCity)",
    detect=detect,
    splits=splits,
    build=build,
    label_set=lambda root, name: get_label_set(name or "cityscapes"),
)

"""The video index: what a dataset root holds, whatever its on-disk layout.

A layout module (``vidseg.data.layouts``) turns a root and a split into a ``VideoIndex``: sequences of
ordered, evenly spaced frames, each with an optional label file and optional per-frame facts (such as a SynthCity
corruption code). Everything downstream (the clip dataset, the frame cache, evaluation) reads the index, never
the folders. ``build_index`` detects the layout from the folder structure unless one is named.

Sequences split where frame numbers jump: the frames of a ``Sequence`` are ``stride`` raw frames apart, so a
window of consecutive entries never bridges a gap.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidseg.data.files import read_any_label, read_colour_label, read_image, read_label_ids
from vidseg.data.labels import LabelSet
from vidseg.errors import VidsegError


@dataclass(frozen=True)
class Frame:
    """One frame of a video.

    Attributes:
        name: the frame's own file stem, e.g. ``0001TP_008550``, ``Seq05VD_f00030``, ``bochum_000000_000313``.
        number: raw frame number in the source video.
        image: path of the image file.
        label: path of the label file; None when the frame has none.
        facts: optional per-frame facts, e.g. ``{"corruption": 2}`` for SynthCity.
    """

    name: str
    number: int
    image: Path
    label: Path | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sequence:
    """Evenly spaced frames of one video, ordered by number.

    Attributes:
        name: e.g. ``0016E5`` (``0016E5-run2`` for the second run when a video splits at a gap),
            ``bochum_000000``.
        frames: the frames, ``stride`` raw frames apart.
        stride: raw frames between consecutive entries (30 for CamVid train, 2 for CamVid val).
        fps: frame rate of the entries where known (CamVid train 1.0, val 15.0), else None.
    """

    name: str
    frames: tuple[Frame, ...]
    stride: int = 1
    fps: float | None = None

    @property
    def labelled(self) -> tuple[int, ...]:
        """Positions of the frames that have a label file."""
        return tuple(i for i, frame in enumerate(self.frames) if frame.label is not None)


@dataclass(frozen=True)
class LabelDecoder:
    """How a layout's label files turn into raw codes (which ``LabelSet.lut`` maps to class indices).

    ``kind`` ``"ids"``: one channel of codes; ``"rgb"``: colour ``colours[k]`` is code ``k``; ``"auto"``: either,
    by the file's channels.
    """

    kind: str = "ids"
    colours: tuple[tuple[int, int, int], ...] = ()
    hint: str = ""

    def __call__(self, path: Path) -> np.ndarray:
        colours = np.array(self.colours, dtype=np.uint8).reshape(-1, 3)
        if self.kind == "rgb":
            return read_colour_label(path, colours)
        if self.kind == "auto":
            return read_any_label(path, colours)
        return read_label_ids(path, hint=self.hint)


@dataclass(frozen=True, eq=False)
class VideoIndex:
    """The sequences of one split of a dataset root, and how to read them.

    Attributes:
        layout: ``"cityscapes"``, ``"camvid"``, ``"vspw"`` or ``"folders"``.
        root: the dataset root.
        split: the split.
        label_set: the classes of the labels (``read_label`` returns its class indices).
        sequences: the split's sequences.
        decoder: reads a label file as raw codes.
        snippets: every sequence is the fixed snippet around one annotated frame (Cityscapes): a window that
            fits none of them is an error rather than a dropped sample.
        single_frames: set when the split holds the annotated frames only (no video): the reason, which a
            window of several frames reports.
    """

    layout: str
    root: Path
    split: str
    label_set: LabelSet
    sequences: tuple[Sequence, ...]
    decoder: LabelDecoder = field(default_factory=LabelDecoder)
    snippets: bool = False
    single_frames: str | None = None

    def read_image(self, frame: Frame) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]`` of a frame."""
        return read_image(frame.image)

    def read_raw_label(self, frame: Frame) -> np.ndarray:
        """uint8 ``[H, W]`` raw codes of a frame's label file (before the label set's mapping)."""
        if frame.label is None:
            raise VidsegError(f"frame {frame.name} ({frame.image}) has no label file")
        return self.decoder(frame.label)

    def read_label(self, frame: Frame) -> np.ndarray:
        """uint8 ``[H, W]`` class indices of the label set (255 = ignore) of a frame's label file."""
        return self.label_set.map_label_ids(self.read_raw_label(frame))

    @property
    def frames(self) -> Iterable[Frame]:
        """Every frame of every sequence, in order."""
        return (frame for sequence in self.sequences for frame in sequence.frames)

    @property
    def num_labelled(self) -> int:
        return sum(len(sequence.labelled) for sequence in self.sequences)

    def describe(self) -> str:
        """One line: layout, split, sequences, frames, labelled frames and spacing."""
        spacing = collections.Counter((s.stride, s.fps) for s in self.sequences)
        rates = ", ".join(
            f"stride {stride}" + (f" ({fps:g} fps)" if fps else "") for (stride, fps), _ in spacing.most_common()
        )
        frames = sum(len(s.frames) for s in self.sequences)
        return (
            f"{self.root} ({self.layout}) split {self.split!r}: {len(self.sequences)} sequences, {frames} frames, "
            f"{self.num_labelled} labelled, {rates}, label set {self.label_set.name}"
        )


def split_runs(
    name: str, frames: list[Frame], raw_fps: float | None, stride: int | None = None
) -> list[Sequence]:
    """``frames`` of one video (any order) as evenly spaced runs, split where the spacing changes.

    The spacing of the video is ``stride`` if given, else its most common gap between frame numbers; a run ends
    wherever the next frame is not that far, give or take a tenth of the stride (CamVid labels frame 901 of
    0016E5 between 870 and 930: still the same 1 Hz run). Runs are named ``name`` when there is one, else
    ``name-run1``, ``name-run2``, ... VidsegError if two frames share a number.
    """
    frames = sorted(frames, key=lambda f: f.number)
    for previous, current in zip(frames, frames[1:]):
        if previous.number == current.number:
            raise VidsegError(
                f"{previous.image} and {current.image} are both frame {current.number} of video {name}"
            )
    if stride is None:
        gaps = collections.Counter(b.number - a.number for a, b in zip(frames, frames[1:]))
        # Most common gap; ties go to the smaller one.
        stride = min(gaps, key=lambda gap: (-gaps[gap], gap)) if gaps else 1
    runs: list[list[Frame]] = []
    for frame in frames:
        if runs and abs(frame.number - runs[-1][-1].number - stride) <= stride // 10:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    fps = raw_fps / stride if raw_fps else None
    if len(runs) == 1:
        return [Sequence(name, tuple(runs[0]), stride, fps)]
    return [Sequence(f"{name}-run{i + 1}", tuple(run), stride, fps) for i, run in enumerate(runs)]


# ------------------------------------------------------------------------------------------------ layouts


@dataclass(frozen=True)
class Layout:
    """One on-disk layout: how to recognise it, which splits a root holds, and how to index a split."""

    name: str
    expects: str
    """What the layout's root holds, in a few words (for errors)."""
    detect: Callable[[Path], bool]
    splits: Callable[[Path], list[str]]
    build: Callable[[Path, str, str | LabelSet | None], VideoIndex]
    label_set: Callable[[Path, str | LabelSet | None], LabelSet]
    """The label set called so for this root's labels (None: the layout's default); VidsegError if none fits."""


def layouts() -> dict[str, Layout]:
    """Every layout, by name."""
    # Imported here: the layout modules build on this one.
    from vidseg.data import camvid, cityscapes, folders, vspw

    found = [cityscapes.LAYOUT, camvid.LAYOUT, vspw.LAYOUT, folders.LAYOUT]
    return {layout.name: layout for layout in found}


def detect_layout(root: str | os.PathLike) -> Layout:
    """The layout that ``root`` is in; VidsegError if it matches none or several (saying what each expects)."""
    root = Path(root)
    if not root.is_dir():
        raise VidsegError(f"dataset root {root} does not exist or is not a folder")
    known = layouts()
    matches = [layout for layout in known.values() if layout.detect(root)]
    if len(matches) == 1:
        return matches[0]
    expects = "; ".join(f"{layout.name}: {layout.expects}" for layout in known.values())
    if not matches:
        found = ", ".join(sorted(p.name for p in root.iterdir())[:12]) or "nothing"
        raise VidsegError(
            f"{root} is in no known dataset layout: it has no gtFine/ folder (found: {found}), nor what the other "
            f"layouts hold. Layouts: {expects}"
        )
    raise VidsegError(
        f"{root} matches several layouts ({', '.join(m.name for m in matches)}); set one with data.layout / "
        f"--layout. Layouts: {expects}"
    )


def get_layout(name: str | None, root: str | os.PathLike) -> Layout:
    """The layout called ``name``, or the one detected in ``root`` when name is None or ``"auto"``."""
    if name is None or name == "auto":
        return detect_layout(root)
    known = layouts()
    if name not in known:
        raise VidsegError(f"unknown layout {name!r}; valid layouts are: auto, {', '.join(known)}")
    return known[name]


def build_index(
    root: str | os.PathLike,
    split: str,
    layout: str | None = None,
    label_set: str | LabelSet | None = None,
) -> VideoIndex:
    """The ``VideoIndex`` of ``split`` in ``root``.

    Args:
        root: dataset root.
        split: e.g. ``"train"``, ``"val"``.
        layout: a layout name; None or ``"auto"`` detects it from the folder structure.
        label_set: the label set to read the labels in; None = the layout's default (``cityscapes`` for
            Cityscapes, ``camvid11`` for CamVid, ...).

    Raises:
        VidsegError: unknown or ambiguous layout, missing split, missing or mismatched files (named).
    """
    root = Path(root)
    chosen = get_layout(layout, root)
    return chosen.build(root, split, label_set)

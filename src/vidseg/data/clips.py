"""Windows of video frames around labelled frames, drawn from any ``VideoIndex``.

Every labelled frame is an *anchor*; a sample is a window of ``num_frames`` entries of the anchor's sequence,
``frame_stride`` entries apart, with the anchor at position ``gt_position``. Windows stay inside their sequence
(sequences are evenly spaced and split at gaps, so a window never bridges one). Anchors whose window cannot fit
are dropped; if none fits, ValueError says why. On a snippet index (Cityscapes) a window that fits no snippet
at some stride is a ValueError that says which values would fit.

Randomness (the window position, the frame stride, the clip transform) is drawn from a ``torch.Generator``:
``dataset[index]`` uses torch's global RNG (which PyTorch seeds per DataLoader worker from the loader's base
seed), ``dataset[(index, seed)]`` a generator seeded with ``seed`` (reproducible whatever the worker count), and
``dataset.sample(index, generator)`` any generator.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from vidseg.data.index import Frame, Sequence, VideoIndex, build_index
from vidseg.data.labels import IGNORE_INDEX, LabelSet
from vidseg.data.transforms import normalize
from vidseg.errors import VidsegError

if TYPE_CHECKING:
    from vidseg.data.cache import FrameCache

logger = logging.getLogger(__name__)


def parse_frame_stride(frame_stride: int | Seq[int]) -> tuple[int, ...]:
    """The strides a window may use: ``3`` -> (3,), ``(1, 3)`` -> (1, 2, 3)."""
    if isinstance(frame_stride, int | np.integer):
        low = high = int(frame_stride)
    else:
        values = [int(v) for v in frame_stride]
        if len(values) != 2:
            raise ValueError(f"frame_stride must be an int or a (low, high) pair, got {frame_stride!r}")
        low, high = values
    if not 1 <= low <= high:
        raise ValueError(f"frame_stride must satisfy 1 <= low <= high, got {frame_stride!r}")
    return tuple(range(low, high + 1))


def parse_gt_position(gt_position: str | int, num_frames: int) -> int | None:
    """Position index for a fixed ``gt_position`` (``"last"`` or an int, negative counts from the end), None
    for ``"random"``."""
    if gt_position == "random":
        return None
    if gt_position == "last":
        return num_frames - 1
    if isinstance(gt_position, bool) or not isinstance(gt_position, int | np.integer):
        raise ValueError(f"gt_position must be 'random', 'last' or an int, got {gt_position!r}")
    position = int(gt_position)
    if not -num_frames <= position < num_frames:
        raise ValueError(f"gt_position={position} is outside a {num_frames}-frame window (0..{num_frames - 1})")
    return position % num_frames


def feasible_positions(num_frames: int, stride: int, before: int, after: int) -> range:
    """Positions of the anchor frame at which a window fits when ``before``/``after`` frames surround it."""
    return range(max(0, num_frames - 1 - after // stride), min(num_frames - 1, before // stride) + 1)


def window_options(
    num_frames: int, position: int | None, strides: Seq[int], before: int, after: int
) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """``((stride, positions), ...)`` for the strides at which the window fits; position None = any."""
    options = []
    for stride in strides:
        feasible = feasible_positions(num_frames, stride, before, after)
        positions = tuple(feasible) if position is None else ((position,) if position in feasible else ())
        if positions:
            options.append((stride, positions))
    return tuple(options)


def window_misfit(num_frames: int, position: int | None, stride: int, before: int, after: int) -> str:
    """Why a window does not fit a snippet, and which values would."""
    longest = before // stride + after // stride + 1
    where = f"a snippet has {before} frames before the annotated frame and {after} after it"
    if num_frames > longest:
        return (
            f"a {num_frames}-frame window at frame_stride {stride} spans {(num_frames - 1) * stride + 1} frames, "
            f"but {where}: at frame_stride {stride} at most {longest} frames fit"
        )
    assert position is not None, "with any position allowed, only a window longer than the snippet misfits"
    feasible = feasible_positions(num_frames, stride, before, after)
    return (
        f"a {num_frames}-frame window at frame_stride {stride} with the annotated frame at position {position} "
        f"needs {position * stride} frames before it and {(num_frames - 1 - position) * stride} after, but "
        f"{where}: gt_position {feasible.start}..{feasible.stop - 1} (or 'random') would fit"
    )


@dataclass(frozen=True, eq=False)
class Anchor:
    """A labelled frame and the windows around it that fit its sequence."""

    sequence: int
    """Index into ``VideoIndex.sequences``."""
    position: int
    """Position of the frame in its sequence."""
    options: tuple[tuple[int, tuple[int, ...]], ...]
    name: str

    def reachable(self, num_frames: int) -> list[int]:
        """Sequence positions that some window of this anchor uses."""
        reachable: set[int] = set()
        for stride, positions in self.options:
            for position in positions:
                reachable.update(self.position + (i - position) * stride for i in range(num_frames))
        return sorted(reachable)


class ClipDataset(torch.utils.data.Dataset):
    """Windows of frames around the labelled frames of a ``VideoIndex``; samples as ``vidseg.data`` documents.

    Args:
        index: the video index (``vidseg.data.build_index``).
        num_frames: frames per window (T).
        gt_position: where the labelled (anchor) frame sits in the window: ``"random"`` (uniform among the
            positions that fit, drawn per sample), ``"last"`` or an index (negative counts from the end).
        frame_stride: distance between window frames in sequence entries, an int or a ``(low, high)`` range
            drawn per sample.
        transform: called as ``transform(frames, labels, generator)`` on uint8 frames ``[T, 3, H, W]`` and
            uint8 class maps ``[T, H, W]``; returns the same kinds (``ClipTransform``). Frames are normalised
            afterwards.
        skip_missing: drop samples whose window could touch a missing image (``self.skipped`` counts them)
            instead of raising VidsegError.
        cache: a ``FrameCache`` holding the index's frames, read instead of the files.

    Raises:
        ValueError: no window fits (the message says which values would).
        VidsegError: missing frame, unreadable file, cache mismatch.
    """

    def __init__(
        self,
        index: VideoIndex,
        num_frames: int,
        gt_position: str | int = "random",
        frame_stride: int | Seq[int] = 1,
        transform=None,
        skip_missing: bool = False,
        cache: FrameCache | None = None,
    ):
        if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
        self.index = index
        self.num_frames = int(num_frames)
        self.gt_position = gt_position
        self.position = parse_gt_position(gt_position, self.num_frames)
        self.strides = parse_frame_stride(frame_stride)
        self.transform = transform
        self.skip_missing = skip_missing
        self.cache = cache
        self.skipped = 0
        self.skipped_names: list[str] = []
        self._unknown_ids_reported = False
        if index.num_labelled == 0:
            raise VidsegError(
                f"split {index.split!r} of {index.root} ({index.layout}) has no labelled frame: a clip dataset draws "
                "its windows around labelled frames"
            )
        if index.single_frames is not None and self.num_frames > 1:
            raise VidsegError(f"num_frames={self.num_frames}: {index.single_frames}")
        self.anchors = self._anchors()
        self._check_frames()
        if not self.anchors:
            raise VidsegError(
                f"no sample of split {index.split!r} in {index.root} is usable ({self.skipped} skipped for missing "
                "frames)"
            )

    # --- anchors -----------------------------------------------------------------------------------------

    def _anchors(self) -> list[Anchor]:
        index = self.index
        sequences = index.sequences
        if index.snippets:
            # Every snippet has the same shape around its annotated frame: a stride that fits none is an error.
            shapes = {(p, len(s.frames) - 1 - p) for s in sequences for p in s.labelled}
            for stride in self.strides:
                if not any(window_options(self.num_frames, self.position, [stride], b, a) for b, a in shapes):
                    before, after = max(shapes)
                    raise ValueError(window_misfit(self.num_frames, self.position, stride, before, after))
        anchors = []
        for number, sequence in enumerate(sequences):
            last = len(sequence.frames) - 1
            for position in sequence.labelled:
                options = window_options(self.num_frames, self.position, self.strides, position, last - position)
                if options:
                    anchors.append(Anchor(number, position, options, sequence.frames[position].name))
        if not anchors and not index.snippets:
            longest = max((len(s.frames) for s in sequences), default=0)
            raise ValueError(
                f"no window of {self.num_frames} frames at frame_stride {self.strides[0]} with gt_position "
                f"{self.gt_position!r} fits in the sequences of split {index.split!r} (the longest has {longest} "
                "frames): use fewer frames, a smaller stride or another gt_position"
            )
        return anchors

    def _check_frames(self) -> None:
        """Make sure every frame a window can touch exists (as a file, or in the cache)."""
        listings: dict[Path, set[str]] = {}

        def exists(sequence: Sequence, position: int, anchor: Anchor) -> bool:
            frame = sequence.frames[position]
            if self.cache is not None:
                status = self.cache.status(self.index.split, sequence.name, position)
                if status == "absent":
                    raise VidsegError(
                        self.cache.coverage_error(
                            self.index.split, frame.name, anchor.name, self.num_frames, self.strides,
                            self.gt_position,
                        )
                    )
                return status == "cached"
            folder = frame.image.parent
            if folder not in listings:
                listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
            return frame.image.name in listings[folder]

        kept = []
        for anchor in self.anchors:
            sequence = self.index.sequences[anchor.sequence]
            missing = next(
                (sequence.frames[p] for p in anchor.reachable(self.num_frames) if not exists(sequence, p, anchor)),
                None,
            )
            if missing is None:
                kept.append(anchor)
                continue
            if not self.skip_missing:
                raise VidsegError(
                    f"snippet frame {missing.image} is missing (annotated frame {anchor.name} needs it for "
                    f"{self.num_frames}-frame windows); restore the file, or pass skip_missing=True "
                    "(--skip-missing) to leave such samples out"
                )
            self.skipped += 1
            self.skipped_names.append(anchor.name)
        if self.skipped:
            logger.warning(
                "%s split %r: skipped %d of %d samples whose snippet frames are missing (first: %s)",
                self.index.root,
                self.index.split,
                self.skipped,
                len(self.anchors),
                self.skipped_names[0],
            )
        self.anchors = kept

    # --- samples -----------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.index.root

    @property
    def split(self) -> str:
        return self.index.split

    @property
    def label_set(self) -> LabelSet:
        return self.index.label_set

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes

    @property
    def names(self) -> list[str]:
        """Name of every sample's labelled (anchor) frame, in index order."""
        return [anchor.name for anchor in self.anchors]

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        if isinstance(index, tuple):
            index, seed = index
            return self.sample(index, torch.Generator().manual_seed(int(seed)))
        return self.sample(index)

    def window(self, index: int, generator: torch.Generator | None = None) -> tuple[list[int], int]:
        """Sequence positions of one window of sample ``index`` and the position of its anchor in the window."""
        anchor = self.anchors[index]
        stride, positions = anchor.options[_pick(len(anchor.options), generator)]
        position = positions[_pick(len(positions), generator)]
        return [anchor.position + (i - position) * stride for i in range(self.num_frames)], position

    def window_frames(self, index: int, generator: torch.Generator | None = None) -> tuple[list[Frame], int]:
        """The frames of one window of sample ``index`` and the position of its anchor in the window."""
        positions, gt_index = self.window(index, generator)
        frames = self.index.sequences[self.anchors[index].sequence].frames
        return [frames[p] for p in positions], gt_index

    def sample(self, index: int, generator: torch.Generator | None = None) -> dict:
        """The sample dict (see the module docstring of ``vidseg.data``) of window ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        anchor = self.anchors[index]
        sequence = self.index.sequences[anchor.sequence]
        positions, gt_index = self.window(index, generator)
        frames_used = [sequence.frames[p] for p in positions]
        labelled = [frame.label is not None for frame in frames_used]
        if self.cache is not None:
            images, raw = self.cache.read(self.index.split, sequence.name, positions, labelled)
        else:
            images, raw = self._read_files(frames_used)
        frames = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
        label_maps = np.full((len(positions), *images.shape[1:3]), IGNORE_INDEX, dtype=np.uint8)
        for t, codes in raw.items():
            label_maps[t] = self._map_labels(codes, frames_used[t])
        labels = torch.from_numpy(label_maps)
        if self.transform is not None:
            frames, labels = self.transform(frames, labels, generator)
        corruption = torch.tensor([int(f.facts.get("corruption", 0)) for f in frames_used], dtype=torch.int64)
        return {
            "frames": normalize(frames),
            "labels": torch.from_numpy(labels.numpy().astype(np.int64)),
            "labelled": torch.tensor(labelled, dtype=torch.bool),
            "corruption": corruption,
            "gt_index": gt_index,
            "name": anchor.name,
        }

    def _read_files(self, frames: list[Frame]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        images = [self.index.read_image(frame) for frame in frames]
        for frame, image in zip(frames[1:], images[1:]):
            if image.shape != images[0].shape:
                raise VidsegError(
                    f"{frame.image} is {image.shape[1]}x{image.shape[0]} but {frames[0].image} is "
                    f"{images[0].shape[1]}x{images[0].shape[0]}: frames of a sequence must share one size"
                )
        raw = {}
        for t, frame in enumerate(frames):
            if frame.label is not None:
                codes = self.index.read_raw_label(frame)
                if codes.shape != images[t].shape[:2]:
                    raise VidsegError(
                        f"label {frame.label} is {codes.shape[1]}x{codes.shape[0]} but its image {frame.image} is "
                        f"{images[t].shape[1]}x{images[t].shape[0]}: image and label must have the same size"
                    )
                raw[t] = codes
        return np.stack(images), raw

    def _map_labels(self, codes: np.ndarray, frame: Frame) -> np.ndarray:
        label_set = self.label_set
        if not self._unknown_ids_reported and int(codes.max()) > label_set.max_label_id:
            self._unknown_ids_reported = True
            unknown = ", ".join(str(int(v)) for v in np.unique(codes[codes > label_set.max_label_id])[:10])
            if label_set.name in ("cityscapes", "report"):
                what = f"labelIds {unknown} are not in the Cityscapes table"
            else:
                what = f"label values {unknown} are not codes of label set {label_set.name}"
            logger.warning(
                "%s: %s (0..%d); they are ignored (255). Reported once per dataset.",
                frame.label,
                what,
                label_set.max_label_id,
            )
        return label_set.map_label_ids(codes)


def _pick(count: int, generator: torch.Generator | None) -> int:
    if count == 1:
        return 0
    return int(torch.randint(count, (1,), generator=generator))


def open_dataset(
    root: str | os.PathLike,
    split: str,
    num_frames: int,
    gt_position: str | int = "random",
    layout: str | None = None,
    frame_stride: int | Seq[int] = 1,
    label_set: str | LabelSet | None = None,
    transform=None,
    cache: str | os.PathLike | None = None,
    skip_missing: bool = False,
) -> ClipDataset:
    """A ``ClipDataset`` of ``split`` in ``root`` (any layout; detected when ``layout`` is None or "auto").

    With ``cache`` (a folder written by ``vidseg prepare``), frames and labels are read from the cache, which
    must have been prepared from ``root`` for ``split`` at the transform's size. ``dataset.index`` is the
    VideoIndex. Raises as ``build_index`` and ``ClipDataset`` do.
    """
    index, frame_cache = load_index(root, split, layout, label_set, cache, getattr(transform, "size", None))
    return ClipDataset(index, num_frames, gt_position, frame_stride, transform, skip_missing, frame_cache)


def load_index(
    root: str | os.PathLike,
    split: str,
    layout: str | None,
    label_set: str | LabelSet | None,
    cache: str | os.PathLike | None,
    size: tuple[int, int] | None,
) -> tuple[VideoIndex, FrameCache | None]:
    """The VideoIndex of ``split`` in ``root``, and the FrameCache to read it from (None: the files). A cache
    must have been prepared from ``root`` for ``split`` at ``size``."""
    if cache is None:
        return build_index(root, split, layout=layout, label_set=label_set), None
    from vidseg.data.cache import FrameCache  # imported here: vidseg.data.cache imports this module

    frame_cache = FrameCache(cache)
    frame_cache.check(Path(root), split, size)
    return frame_cache.index(split, label_set), frame_cache


class WrappedClips(torch.utils.data.Dataset):
    """Base of the datasets that change the samples of another clip dataset (corruption, CutMix): the same
    length, and the wrapped dataset's attributes (``label_set``, ``names``, ``index``, ...) read through."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        # Called only for names the wrapper itself lacks; "dataset" is looked up before __init__ set it when
        # a DataLoader worker unpickles the wrapper.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


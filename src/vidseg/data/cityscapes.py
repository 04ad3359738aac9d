"""Video clips from the official Cityscapes layout (and from SynthCity, which writes the same layout).

Files::

    {root}/leftImg8bit_sequence/{split}/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png
    {root}/gtFine/{split}/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png

Every ``*_gtFine_labelIds.png`` marks an annotated frame f; its snippet holds frames f-19 ... f+10 (the annotated
frame is the 20th of 30). Other files in gtFine (``_color``, ``_instanceIds``, ``_labelTrainIds``,
``_polygons.json``) are ignored. A sample is a window of ``num_frames`` frames, ``frame_stride`` apart, with the
annotated frame at position ``gt_position``.

A root with a ``synthcity.json`` file is *dense*: every frame has a label file, the snippet of a sequence is
the whole sequence, every labelled frame is an anchor (anchors whose window cannot fit are dropped) and every
labelled frame of a window carries its labels.

Randomness (the window position, the frame stride, the clip transform) is drawn from a ``torch.Generator``:
``dataset[index]`` uses torch's global RNG (which PyTorch seeds per DataLoader worker from the loader's base
seed), ``dataset[(index, seed)]`` a generator seeded with ``seed`` (reproducible whatever the worker count), and
``dataset.sample(index, generator)`` any generator.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vidseg.data.labels import IGNORE_INDEX, MAX_LABEL_ID, LabelSet, get_label_set
from vidseg.data.transforms import normalize
from vidseg.errors import VidsegError

if TYPE_CHECKING:
    from vidseg.data.cache import FrameCache

logger = logging.getLogger(__name__)

SNIPPET_BEFORE = 19
SNIPPET_AFTER = 10
SEQUENCE_FOLDER = "leftImg8bit_sequence"
PLAIN_FOLDER = "leftImg8bit"
LABEL_FOLDER = "gtFine"
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
SYNTHCITY_META = "synthcity.json"
LABEL_FILE_PATTERN = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_gtFine_labelIds\.png$")


def frame_name(city: str, seq: int, frame: int) -> str:
    """``city_seq_frame`` as the Cityscapes file names spell it, e.g. ``bochum_000000_000313``."""
    return f"{city}_{seq:06d}_{frame:06d}"


def image_path(root: Path, folder: str, split: str, city: str, seq: int, frame: int) -> Path:
    return root / folder / split / city / (frame_name(city, seq, frame) + IMAGE_SUFFIX)


def label_path(root: Path, split: str, city: str, seq: int, frame: int) -> Path:
    return root / LABEL_FOLDER / split / city / (frame_name(city, seq, frame) + LABEL_SUFFIX)


def _open_png(path: Path) -> Image.Image:
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
    with _open_png(path) as image:
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


def read_label_ids(path: str | os.PathLike) -> np.ndarray:
    """labelIds uint8 ``[H, W]`` of a single-channel label file (8- or 16-bit; values above 255 become 255)."""
    path = Path(path)
    with _open_png(path) as image:
        if image.mode in ("L", "P"):
            return np.array(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.clip(np.asarray(image, dtype=np.int64), 0, 255).astype(np.uint8)
        if image.mode == "1":
            return np.asarray(image).astype(np.uint8)
        raise VidsegError(
            f"{path} has mode {image.mode} ({len(image.getbands())} channels), but a labelIds file has one "
            "channel of labelIds; use the *_gtFine_labelIds.png files, not *_gtFine_color.png"
        )


def _list_dirs(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())


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


def parse_frame_stride(frame_stride: int | Sequence[int]) -> tuple[int, ...]:
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
    num_frames: int, position: int | None, strides: Sequence[int], before: int, after: int
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
class _Sequence:
    """Frames that windows may use: a Cityscapes snippet, or a whole dense sequence."""

    city: str
    seq: int
    first: int
    last: int
    labelled: frozenset[int]
    corruption: tuple[int, ...] | None = None  # per frame number, dense datasets only
    cache_key: str | None = None


@dataclass(frozen=True, eq=False)
class _Anchor:
    sequence: _Sequence
    frame: int
    options: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def name(self) -> str:
        return frame_name(self.sequence.city, self.sequence.seq, self.frame)

    def reachable_frames(self, num_frames: int) -> list[int]:
        reachable: set[int] = set()
        for stride, positions in self.options:
            for position in positions:
                reachable.update(self.frame + (i - position) * stride for i in range(num_frames))
        return sorted(reachable)


def _read_synthcity_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VidsegError(f"cannot read {path} ({error}); regenerate the dataset with `vidseg synth`") from None
    if not isinstance(meta, dict) or "sequences" not in meta:
        raise VidsegError(f"{path} has no 'sequences' entry; regenerate the dataset with `vidseg synth`")
    from vidseg.data.synthcity import validate_metadata

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


class CityscapesSequences(torch.utils.data.Dataset):
    """Windows of consecutive video frames around annotated frames, in the official Cityscapes layout.

    Args:
        root: dataset root holding ``gtFine/`` and ``leftImg8bit_sequence/`` (or only ``leftImg8bit/`` for
            ``num_frames=1``).
        split: ``"train"``, ``"val"``, ... (a folder under ``gtFine/``).
        num_frames: frames per window (T).
        gt_position: where the annotated frame sits in the window: ``"random"`` (uniform among the positions
            that fit, drawn per sample), ``"last"`` or an index (negative counts from the end).
        frame_stride: distance between window frames, an int or a ``(low, high)`` range drawn per sample.
        label_set: ``"cityscapes"`` (19 classes), ``"report"`` (20, void as class 19) or a LabelSet.
        transform: called as ``transform(frames, labels, generator)`` on uint8 frames ``[T, 3, H, W]`` and
            uint8 class maps ``[T, H, W]``; returns the same kinds (``ClipTransform``). Frames are normalised
            afterwards.
        skip_missing: drop samples whose window could touch a missing image (``self.skipped`` counts them)
            instead of raising VidsegError.
        cache: a folder written by ``vidseg prepare`` (``vidseg.data.cache.prepare_cache``) to read frames from
            instead of PNGs; it must match ``split``, the transform's size and the windows.

    Raises:
        ValueError: the window cannot fit the snippet (the message says which values fit).
        VidsegError: missing or empty split, missing frame, unreadable file, cache mismatch.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        num_frames: int,
        gt_position: str | int = "random",
        frame_stride: int | Sequence[int] = 1,
        label_set: str | LabelSet = "cityscapes",
        transform=None,
        skip_missing: bool = False,
        cache: str | os.PathLike | None = None,
    ):
        if isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1:
            raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
        self.root = Path(root)
        self.split = split
        self.num_frames = int(num_frames)
        self.gt_position = gt_position
        self.position = parse_gt_position(gt_position, self.num_frames)
        self.strides = parse_frame_stride(frame_stride)
        self.label_set = get_label_set(label_set)
        self.transform = transform
        self.skip_missing = skip_missing
        self.skipped = 0
        self.skipped_names: list[str] = []
        self._unknown_ids_reported = False

        self.cache: FrameCache | None = None
        # Per cache key, the frames the cache holds and those missing from its source (None without a cache).
        available: dict[str, set[int]] | None
        missing: dict[str, set[int]] | None
        if cache is not None:
            # Imported here: the cache module builds on this one (it scans the same layout).
            from vidseg.data.cache import FrameCache

            self.cache = FrameCache(cache)
            self.cache.check(self.root, split, getattr(transform, "size", None))
            self.dense = self.cache.dense
            self.meta = self.cache.synthcity_meta
            self.image_folder = self.cache.split_info(split)["image_folder"]
            sequences, available, missing = self.cache.sequences(split)
        else:
            meta_path = self.root / SYNTHCITY_META
            self.dense = meta_path.is_file()
            self.meta = _read_synthcity_meta(meta_path) if self.dense else None
            labelled = find_label_files(self.root, split)
            self.image_folder = self._choose_image_folder()
            sequences = self._sequences_from_labels(labelled)
            available = missing = None
        self.anchors = self._anchors(sequences)
        self._check_frames(available, missing)
        if not self.anchors:
            raise VidsegError(
                f"no sample of split {split!r} in {self.root} is usable ({self.skipped} skipped for missing frames)"
            )

    # --- index -------------------------------------------------------------------------------------------

    def _choose_image_folder(self) -> str:
        if (self.root / SEQUENCE_FOLDER / self.split).is_dir():
            return SEQUENCE_FOLDER
        if (self.root / PLAIN_FOLDER / self.split).is_dir():
            if self.num_frames == 1 or self.dense:
                return PLAIN_FOLDER
            raise VidsegError(
                f"num_frames={self.num_frames} needs {self.root / SEQUENCE_FOLDER / self.split} (the 30-frame "
                f"snippets, leftImg8bit_sequence_trainvaltest.zip); only {PLAIN_FOLDER}/{self.split} exists, "
                "which holds the annotated frames alone: use num_frames=1, or add the sequences"
            )
        raise VidsegError(
            f"no images for split {self.split!r}: neither {self.root / SEQUENCE_FOLDER / self.split} nor "
            f"{self.root / PLAIN_FOLDER / self.split} exists (found under {self.root}: "
            f"{', '.join(_list_dirs(self.root)) or 'nothing'})"
        )

    def _sequences_from_labels(self, labelled: dict[tuple[str, int], list[int]]) -> list[_Sequence]:
        if not self.dense:
            return [
                _Sequence(city, seq, frame - SNIPPET_BEFORE, frame + SNIPPET_AFTER, frozenset([frame]))
                for (city, seq), frames in labelled.items()
                for frame in frames
            ]
        return [
            _Sequence(
                city, seq, frames[0], frames[-1], frozenset(frames),
                corruption_codes(self.meta, self.split, city, seq, frames[-1]),
            )
            for (city, seq), frames in labelled.items()
        ]

    def _anchors(self, sequences: list[_Sequence]) -> list[_Anchor]:
        if not self.dense:
            for stride in self.strides:
                if not window_options(self.num_frames, self.position, [stride], SNIPPET_BEFORE, SNIPPET_AFTER):
                    raise ValueError(
                        window_misfit(self.num_frames, self.position, stride, SNIPPET_BEFORE, SNIPPET_AFTER)
                    )
        anchors = []
        for sequence in sequences:
            for frame in sorted(sequence.labelled):
                options = window_options(
                    self.num_frames, self.position, self.strides, frame - sequence.first, sequence.last - frame
                )
                if options:
                    anchors.append(_Anchor(sequence, frame, options))
        if self.dense and not anchors:
            longest = max(s.last - s.first + 1 for s in sequences)
            raise ValueError(
                f"no window of {self.num_frames} frames at frame_stride {self.strides[0]} with gt_position "
                f"{self.gt_position!r} fits in the sequences of split {self.split!r} (the longest has {longest} "
                "frames): use fewer frames, a smaller stride or another gt_position"
            )
        return anchors

    def _check_frames(
        self, cached: dict[str, set[int]] | None, missing_from_cache: dict[str, set[int]] | None
    ) -> None:
        """Make sure every frame a window can touch exists (in the image folder, or in the cache)."""
        listings: dict[str, set[str]] = {}
        kept = []
        for anchor in self.anchors:
            sequence = anchor.sequence
            missing = None
            for frame in anchor.reachable_frames(self.num_frames):
                if cached is not None:
                    # Both come from the cache, whose sequences all carry a cache key.
                    assert missing_from_cache is not None and sequence.cache_key is not None
                    if frame in cached[sequence.cache_key]:
                        continue
                    if frame not in missing_from_cache[sequence.cache_key]:
                        raise VidsegError(self._coverage_error(anchor, frame))
                    missing = frame
                    break
                city_dir = self.root / self.image_folder / self.split / sequence.city
                if sequence.city not in listings:
                    listings[sequence.city] = set(os.listdir(city_dir)) if city_dir.is_dir() else set()
                if frame_name(sequence.city, sequence.seq, frame) + IMAGE_SUFFIX not in listings[sequence.city]:
                    missing = frame
                    break
            if missing is None:
                kept.append(anchor)
                continue
            path = image_path(self.root, self.image_folder, self.split, sequence.city, sequence.seq, missing)
            if not self.skip_missing:
                raise VidsegError(
                    f"snippet frame {path} is missing (annotated frame {anchor.name} needs it for "
                    f"{self.num_frames}-frame windows); restore the file, or pass skip_missing=True "
                    "(--skip-missing) to leave such samples out"
                )
            self.skipped += 1
            self.skipped_names.append(anchor.name)
        if self.skipped:
            logger.warning(
                "%s split %r: skipped %d of %d samples whose snippet frames are missing (first: %s)",
                self.root,
                self.split,
                self.skipped,
                len(self.anchors),
                self.skipped_names[0],
            )
        self.anchors = kept

    def _coverage_error(self, anchor: _Anchor, frame: int) -> str:
        assert self.cache is not None, "only a cache can miss a frame that a window uses"
        info = self.cache.split_info(self.split)
        return (
            f"cache {self.cache.path} (prepared for split {self.split!r} with num_frames={info['num_frames']}, "
            f"max_stride={info['max_stride']}) does not hold frame {frame} ({frame - anchor.frame:+d} from "
            f"annotated frame {anchor.name}), which {self.num_frames}-frame windows at frame_stride "
            f"{self.strides[0]}..{self.strides[-1]} with gt_position {self.gt_position!r} can use; prepare it "
            f"again with `vidseg prepare --num-frames {self.num_frames} --max-stride {self.strides[-1]}`"
        )

    # --- samples -----------------------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return self.label_set.num_classes

    @property
    def names(self) -> list[str]:
        """``city_seq_frame`` of every sample's annotated frame, in index order."""
        return [anchor.name for anchor in self.anchors]

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        if isinstance(index, tuple):
            index, seed = index
            return self.sample(index, torch.Generator().manual_seed(int(seed)))
        return self.sample(index)

    def window(self, index: int, generator: torch.Generator | None = None) -> tuple[list[int], int]:
        """Frame numbers of one window of sample ``index`` and the position of its annotated frame."""
        anchor = self.anchors[index]
        options = anchor.options
        stride, positions = options[_pick(len(options), generator)]
        position = positions[_pick(len(positions), generator)]
        return [anchor.frame + (i - position) * stride for i in range(self.num_frames)], position

    def sample(self, index: int, generator: torch.Generator | None = None) -> dict:
        """The sample dict (see the module docstring of ``vidseg.data``) of window ``index``."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        anchor = self.anchors[index]
        sequence = anchor.sequence
        frame_numbers, gt_index = self.window(index, generator)
        labelled = [frame in sequence.labelled for frame in frame_numbers]
        if self.cache is not None:
            assert sequence.cache_key is not None, "sequences read from a cache carry their cache key"
            images, label_ids = self.cache.read(self.split, sequence.cache_key, frame_numbers, labelled)
        else:
            images, label_ids = self._read_files(anchor, frame_numbers, labelled)
        frames = torch.from_numpy(images).permute(0, 3, 1, 2)
        label_maps = np.full((len(frame_numbers), *images.shape[1:3]), IGNORE_INDEX, dtype=np.uint8)
        for t, ids in label_ids.items():
            label_maps[t] = self._map_labels(ids, anchor, frame_numbers[t])
        labels = torch.from_numpy(label_maps)
        if self.transform is not None:
            frames, labels = self.transform(frames, labels, generator)
        corruption = torch.zeros(len(frame_numbers), dtype=torch.int64)
        if sequence.corruption is not None:
            corruption = torch.tensor([sequence.corruption[f] for f in frame_numbers], dtype=torch.int64)
        return {
            "frames": normalize(frames),
            "labels": torch.from_numpy(labels.numpy().astype(np.int64)),
            "labelled": torch.tensor(labelled, dtype=torch.bool),
            "corruption": corruption,
            "gt_index": gt_index,
            "name": anchor.name,
        }

    def _read_files(
        self, anchor: _Anchor, frame_numbers: list[int], labelled: list[bool]
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        city, seq = anchor.sequence.city, anchor.sequence.seq
        paths = [image_path(self.root, self.image_folder, self.split, city, seq, f) for f in frame_numbers]
        images = [read_image(path) for path in paths]
        for path, image in zip(paths[1:], images[1:]):
            if image.shape != images[0].shape:
                raise VidsegError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
                    f"{images[0].shape[1]}x{images[0].shape[0]}: frames of a snippet must share one size"
                )
        label_ids = {}
        for t, frame in enumerate(frame_numbers):
            if labelled[t]:
                path = label_path(self.root, self.split, city, seq, frame)
                ids = read_label_ids(path)
                if ids.shape != images[t].shape[:2]:
                    raise VidsegError(
                        f"label {path} is {ids.shape[1]}x{ids.shape[0]} but its image {paths[t]} is "
                        f"{images[t].shape[1]}x{images[t].shape[0]}: image and label must have the same size"
                    )
                label_ids[t] = ids
        return np.stack(images), label_ids

    def _map_labels(self, label_ids: np.ndarray, anchor: _Anchor, frame: int) -> np.ndarray:
        if not self._unknown_ids_reported and int(label_ids.max()) > MAX_LABEL_ID:
            self._unknown_ids_reported = True
            unknown = np.unique(label_ids[label_ids > MAX_LABEL_ID])
            sequence = anchor.sequence
            logger.warning(
                "%s: labelIds %s are not in the Cityscapes table (0..%d); they are ignored (255). Reported "
                "once per dataset.",
                label_path(self.root, self.split, sequence.city, sequence.seq, frame),
                ", ".join(str(int(v)) for v in unknown[:10]),
                MAX_LABEL_ID,
            )
        return self.label_set.map_label_ids(label_ids)


def _pick(count: int, generator: torch.Generator | None) -> int:
    if count == 1:
        return 0
    return int(torch.randint(count, (1,), generator=generator))

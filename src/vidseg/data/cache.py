"""A frame cache: only the frames that training/evaluation windows can touch, resized once, as raw ``.npy``.

Decoding a 1024x2048 PNG costs tens of milliseconds; a window of 5 frames from the cache is a memory-mapped
read of a few megabytes. Works for every layout (it reads the ``VideoIndex``). Layout of a cache folder::

    manifest.json                       format, size, source root, layout, and per split its video index and
                                        the cached entries
    prepare.json                        source and size of the files (lets an interrupted run resume)
    {split}/{key}.frames.npy            uint8 [K, H, W, 3]: the entry's frames, resized bilinearly
    {split}/{key}.labels.npy            uint8 [L, H, W]: raw label codes of its labelled frames, nearest

An entry is one sequence of the index (key: the sequence name; a Cityscapes snippet is one sequence). Its
frames are those that windows of up to ``num_frames`` frames at strides up to ``max_stride`` can reach from a
labelled frame (all of them with ``num_frames=None``). Labels stay raw codes (labelIds, CamVid values, ...) so
one cache serves every label set of its layout. Images are resized with the same function as
``ClipTransform``, so a sample read from the cache equals one decoded from the files and resized. Files are
written atomically and the manifest last; running ``prepare_cache`` again skips finished files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidseg.data import index as video_index
from vidseg.data.clips import window_misfit, window_options
from vidseg.data.files import read_image
from vidseg.data.index import Frame, LabelDecoder, VideoIndex, build_index, get_layout
from vidseg.data.labels import LabelSet, label_set_from_spec
from vidseg.data.transforms import resize_frames, resize_labels
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path, atomic_write_text, make_folder

logger = logging.getLogger(__name__)

CACHE_FORMAT = "vidseg-frame-cache"
CACHE_VERSION = 2
MANIFEST = "manifest.json"
PREPARING = "prepare.json"
# The snippet around an annotated Cityscapes frame, for ``snippet_offsets``.
SNIPPET_BEFORE = 19
SNIPPET_AFTER = 10


def snippet_offsets(num_frames: int | None, max_stride: int = 1) -> list[int]:
    """Offsets from the annotated frame that windows of ``num_frames`` at strides 1..max_stride can touch in a
    Cityscapes snippet (-19..+10), with the annotated frame anywhere in the window (None: the whole snippet)."""
    return _reachable(SNIPPET_BEFORE, SNIPPET_BEFORE + SNIPPET_AFTER + 1, num_frames, max_stride, strict=True)


def _reachable(position: int, length: int, num_frames: int | None, max_stride: int, strict: bool) -> list[int]:
    """Offsets from ``position`` (in a sequence of ``length``) that windows can reach; [] if none fits (or
    ValueError with ``strict``)."""
    before, after = position, length - 1 - position
    if num_frames is None:
        return list(range(-before, after + 1))
    offsets: set[int] = set()
    for stride, positions in window_options(num_frames, None, range(1, max_stride + 1), before, after):
        for anchor in positions:
            offsets.update((i - anchor) * stride for i in range(num_frames))
    if not offsets and strict:
        raise ValueError(window_misfit(num_frames, None, 1, before, after))
    return sorted(offsets)


@dataclass(frozen=True)
class _Task:
    out: Path
    split: str
    key: str
    frames: tuple[Path, ...]
    """Image paths of the frames to cache."""
    labels: tuple[Path, ...]
    decoder: LabelDecoder
    size: tuple[int, int]
    reuse: bool


def _entry_paths(out: Path, split: str, key: str) -> tuple[Path, Path]:
    folder = out / split
    return folder / f"{key}.frames.npy", folder / f"{key}.labels.npy"


def _is_complete(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape == shape
    except (OSError, ValueError):
        return False


def _write_entry(task: _Task) -> None:
    """Resize and store one entry's frames and labels."""
    height, width = task.size
    frames_file, labels_file = _entry_paths(task.out, task.split, task.key)
    if task.reuse and _is_complete(frames_file, (len(task.frames), height, width, 3)) and _is_complete(
        labels_file, (len(task.labels), height, width)
    ):
        return
    source_shape = None
    first_path = None
    frames = np.empty((len(task.frames), height, width, 3), dtype=np.uint8)
    for row, path in enumerate(task.frames):
        image = read_image(path)
        if source_shape is None:
            source_shape, first_path = image.shape, path
        elif image.shape != source_shape:
            raise VidsegError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but {first_path} is {source_shape[1]}x"
                f"{source_shape[0]}: frames of a sequence must share one size"
            )
        resized = resize_frames(torch.from_numpy(image).permute(2, 0, 1)[None], task.size)
        frames[row] = resized[0].permute(1, 2, 0).numpy()
    labels = np.empty((len(task.labels), height, width), dtype=np.uint8)
    for row, path in enumerate(task.labels):
        codes = task.decoder(path)
        if source_shape is not None and codes.shape != source_shape[:2]:
            raise VidsegError(
                f"label {path} is {codes.shape[1]}x{codes.shape[0]} but the images of its sequence are "
                f"{source_shape[1]}x{source_shape[0]}: image and label must have the same size"
            )
        labels[row] = resize_labels(torch.from_numpy(codes), task.size).numpy()
    for path, array in ((frames_file, frames), (labels_file, labels)):
        with atomic_path(path) as tmp:
            np.save(tmp, array)


def _init_worker() -> None:
    # Each worker resizes one frame at a time; several threads per worker would only contend for the cores.
    torch.set_num_threads(1)


def prepare_cache(
    root: str | os.PathLike,
    out: str | os.PathLike,
    size: tuple[int, int],
    splits: Sequence[str] | None = None,
    num_frames: int | None = None,
    max_stride: int = 1,
    workers: int = 1,
    progress: bool = False,
    layout: str | None = None,
) -> dict:
    """Write a frame cache of ``root`` (any layout) into ``out`` and return its manifest.

    Args:
        root: dataset root.
        out: cache folder (created; an existing cache of the same source and size is updated).
        size: (height, width) of the cached frames, the working resolution of training/evaluation.
        splits: splits to cache; default: ``train`` and ``val``, those that exist.
        num_frames: longest window the cache must serve; None caches whole sequences (Cityscapes: the
            30-frame snippets).
        max_stride: largest frame stride the cache must serve (every stride 1..max_stride is covered).
        workers: processes decoding images in parallel.
        progress: show a progress bar.
        layout: the root's layout; None detects it.

    Missing snippet frames are recorded in the manifest, not fatal: a dataset reading the cache raises for them
    (or skips their samples with ``skip_missing=True``), exactly as it would reading the files.
    """
    root = Path(root).resolve()
    out = Path(out)
    size = (int(size[0]), int(size[1]))
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    if max_stride < 1:
        raise ValueError(f"max_stride must be >= 1, got {max_stride}")
    chosen = get_layout(layout, root)
    if splits is None:
        available = chosen.splits(root)
        splits = [s for s in ("train", "val") if s in available]
        if not splits:
            raise VidsegError(
                f"{root} ({chosen.name} layout) has no train or val split (splits present: "
                f"{', '.join(available) or 'none'}); name the splits to cache"
            )
    indexes = {split: build_index(root, split, layout=chosen.name) for split in splits}
    # Files of an earlier (possibly interrupted) run are reused only when it cached the same source at the same
    # size; the marker is written before any file.
    identity = {"source": str(root), "size": list(size), "layout": chosen.name}
    make_folder(out)
    reuse = _read_json(out / PREPARING) == identity
    atomic_write_text(out / PREPARING, json.dumps(identity))

    tasks: list[_Task] = []
    split_records = {}
    for split, index in indexes.items():
        entries = []
        listings: dict[Path, set[str]] = {}
        for sequence in index.sequences:
            length = len(sequence.frames)
            reach: set[int] = set()
            for position in sequence.labelled:
                offsets = _reachable(position, length, num_frames, max_stride, strict=index.snippets)
                reach.update(position + offset for offset in offsets)
            positions = sorted(reach)
            present: list[int] = []
            missing: list[int] = []
            for position in positions:
                frame = sequence.frames[position]
                folder = frame.image.parent
                if folder not in listings:
                    listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
                (present if frame.image.name in listings[folder] else missing).append(position)
            labelled = [position for position in present if sequence.frames[position].label is not None]
            entries.append({"key": sequence.name, "frames": present, "missing": missing, "labelled": labelled})
            tasks.append(
                _Task(
                    out, split, sequence.name, tuple(sequence.frames[position].image for position in present),
                    tuple(_label_path(sequence.frames[position]) for position in labelled), index.decoder, size, reuse,
                )
            )
        split_records[split] = {
            "num_frames": num_frames,
            "max_stride": max_stride,
            "index": index_to_dict(index),
            "entries": entries,
        }
        missing_count = sum(len(e["missing"]) for e in entries)
        if missing_count:
            logger.warning(
                "%s split %r: %d snippet frames are missing (first in %s); datasets reading this cache raise "
                "for them unless skip_missing=True",
                root, split, missing_count, next(e["key"] for e in entries if e["missing"]),
            )
    _run(tasks, workers, progress)
    manifest = _load_manifest_for_update(out, root, size, chosen.name)
    manifest["splits"].update(split_records)
    atomic_write_text(out / MANIFEST, json.dumps(manifest))
    return manifest


def _label_path(frame: Frame) -> Path:
    assert frame.label is not None, "only labelled frames are listed"
    return frame.label


def _run(tasks: list[_Task], workers: int, progress: bool) -> None:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="sequence", desc="caching")
    done: Iterable[None]
    if workers <= 1:
        done = map(_write_entry, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)
        done = pool.map(_write_entry, tasks, chunksize=4)
    try:
        for _ in done:
            if bar is not None:
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_manifest_for_update(out: Path, root: Path, size: tuple[int, int], layout: str) -> dict:
    """The existing manifest when it describes the same source and size (its other splits are kept)."""
    fresh = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "source": str(root), "size": list(size),
             "layout": layout, "splits": {}}
    old = _read_json(out / MANIFEST)
    if not isinstance(old, dict):
        return fresh
    same = {k: old.get(k) for k in fresh if k != "splits"} == {k: v for k, v in fresh.items() if k != "splits"}
    if same and isinstance(old.get("splits"), dict):
        fresh["splits"] = old["splits"]
    return fresh


# ----------------------------------------------------------------------------------- index <-> plain data


def index_to_dict(index: VideoIndex) -> dict:
    """The index as JSON-able data (paths relative to its root)."""

    def path(p: Path | None) -> str | None:
        if p is None:
            return None
        try:
            return str(p.relative_to(index.root))
        except ValueError:
            return str(p)

    return {
        "layout": index.layout,
        "label_set": index.label_set.spec(),
        "snippets": index.snippets,
        "single_frames": index.single_frames,
        "sequences": [
            {
                "name": s.name,
                "stride": s.stride,
                "fps": s.fps,
                "frames": [[f.name, f.number, path(f.image), path(f.label), dict(f.facts)] for f in s.frames],
            }
            for s in index.sequences
        ],
    }


def index_from_dict(data: dict, root: Path, split: str, label_set: LabelSet | None = None) -> VideoIndex:
    """The VideoIndex that ``index_to_dict`` described (in its own label set unless one is given)."""
    sequences = tuple(
        video_index.Sequence(
            record["name"],
            tuple(
                Frame(name, int(number), root / image, None if label is None else root / label, facts)
                for name, number, image, label, facts in record["frames"]
            ),
            int(record["stride"]),
            record["fps"],
        )
        for record in data["sequences"]
    )
    return VideoIndex(
        data["layout"],
        root,
        split,
        label_set or label_set_from_spec(data["label_set"]),
        sequences,
        snippets=bool(data["snippets"]),
        single_frames=data["single_frames"],
    )


# ------------------------------------------------------------------------------------------------ reading


class FrameCache:
    """Reads a cache written by ``prepare_cache``; ``open_dataset(..., cache=path)`` uses it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        try:
            manifest = json.loads(manifest_path.read_text())
        except FileNotFoundError:
            raise VidsegError(
                f"{self.path} is not a frame cache ({MANIFEST} not found); create it with "
                f"`vidseg prepare --root ROOT --out {self.path} --size HxW`"
            ) from None
        except (OSError, ValueError) as error:
            raise VidsegError(f"cannot read {manifest_path} ({error}); run `vidseg prepare` again") from None
        if manifest.get("format") != CACHE_FORMAT or manifest.get("version") != CACHE_VERSION:
            raise VidsegError(
                f"{manifest_path} is format {manifest.get('format')!r} version {manifest.get('version')!r}, "
                f"expected {CACHE_FORMAT!r} version {CACHE_VERSION}; run `vidseg prepare` again"
            )
        self.manifest = manifest
        self.size = tuple(manifest["size"])
        self.source = Path(manifest["source"])
        self.layout = str(manifest["layout"])
        # (split, sequence name) -> (position -> frame row, position -> label row, missing positions)
        self._rows: dict[tuple[str, str], tuple[dict[int, int], dict[int, int], set[int]]] = {}

    def check(self, root: Path, split: str, size: tuple[int, int] | None) -> None:
        """VidsegError unless the cache was made from ``root`` and holds ``split`` at ``size`` (None: any)."""
        command = f"`vidseg prepare --root {root} --out {self.path} --size HxW --split {split}`"
        if Path(root).resolve() != self.source:
            raise VidsegError(
                f"cache {self.path} was prepared from {self.source}, not from {Path(root).resolve()}; pass "
                f"root={self.source} or prepare a cache of this root with {command}"
            )
        if split not in self.manifest["splits"]:
            cached = ", ".join(self.manifest["splits"]) or "none"
            raise VidsegError(
                f"cache {self.path} does not hold split {split!r} (it holds: {cached}); add it with {command}"
            )
        if size is not None and tuple(size) != self.size:
            raise VidsegError(
                f"cache {self.path} holds frames at {self.size[0]}x{self.size[1]} but the transform works at "
                f"{size[0]}x{size[1]}; prepare a cache at that size with "
                f"`vidseg prepare --root {root} --out DIR --size {size[0]}x{size[1]}`"
            )

    def split_info(self, split: str) -> dict:
        return self.manifest["splits"][split]

    def index(self, split: str, label_set: str | LabelSet | None = None) -> VideoIndex:
        """The video index of ``split`` as it was prepared; labels in ``label_set`` (None: the index's own;
        another name is resolved by the layout, from the source root)."""
        data = self.split_info(split)["index"]
        chosen = None
        if isinstance(label_set, LabelSet):
            chosen = label_set
        elif label_set is not None and label_set != data["label_set"]["name"]:
            chosen = get_layout(self.layout, self.source).label_set(self.source, label_set)
        index = index_from_dict(data, self.source, split, chosen)
        for entry in self.split_info(split)["entries"]:
            self._rows[(split, entry["key"])] = (
                {p: row for row, p in enumerate(entry["frames"])},
                {p: row for row, p in enumerate(entry["labelled"])},
                set(entry["missing"]),
            )
        return index

    def status(self, split: str, sequence: str, position: int) -> str:
        """``"cached"``, ``"missing"`` (the source had no such file) or ``"absent"`` (not prepared)."""
        frame_rows, _, missing = self._rows[(split, sequence)]
        if position in frame_rows:
            return "cached"
        return "missing" if position in missing else "absent"

    def coverage_error(self, split: str, frame: str, anchor: str, num_frames: int, strides: Sequence[int],
                       gt_position: str | int) -> str:
        info = self.split_info(split)
        return (
            f"cache {self.path} (prepared for split {split!r} with num_frames={info['num_frames']}, "
            f"max_stride={info['max_stride']}) does not hold frame {frame} (near annotated frame {anchor}), which "
            f"{num_frames}-frame windows at frame_stride {strides[0]}..{strides[-1]} with gt_position "
            f"{gt_position!r} can use; prepare it again with `vidseg prepare --num-frames {num_frames} "
            f"--max-stride {strides[-1]}`"
        )

    def read(
        self, split: str, sequence: str, positions: Sequence[int], labelled: Sequence[bool]
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """uint8 frames ``[T, H, W, 3]`` and ``{window position: raw codes [H, W]}`` of the labelled ones."""
        frame_rows, label_rows, _ = self._rows[(split, sequence)]
        frames_file, labels_file = _entry_paths(self.path, split, sequence)
        try:
            frames = np.load(frames_file, mmap_mode="r")
            labels = np.load(labels_file, mmap_mode="r") if any(labelled) else None
            images = frames[[frame_rows[p] for p in positions]]
            codes: dict[int, np.ndarray] = {}
            if labels is not None:
                codes = {t: np.array(labels[label_rows[p]]) for t, p in enumerate(positions) if labelled[t]}
        except (OSError, ValueError) as error:
            raise VidsegError(
                f"cannot read cache entry {sequence} in {self.path / split} ({error}); run `vidseg prepare` again"
            ) from None
        return images, codes


"""A frame cache: only the frames that training/evaluation windows can touch, resized once, as raw ``.npy``.

Decoding a 1024x2048 PNG costs tens of milliseconds; a window of 5 frames from the cache is a memory-mapped
read of a few megabytes. Layout of a cache folder::

    manifest.json                          format, size, source root, and per split the cached entries
    prepare.json                           source and size of the files (lets an interrupted run resume)
    synthcity.json                         copied from a SynthCity root (corruption codes per frame)
    {split}/{city}/{key}.frames.npy        uint8 [K, H, W, 3]: the entry's frames, resized bilinearly
    {split}/{city}/{key}.labels.npy        uint8 [L, H, W]: raw labelIds of its labelled frames, nearest

An entry is one annotated frame's snippet (key ``city_seq_frame``) or, for SynthCity, a whole sequence (key
``city_seq``). Labels stay labelIds so one cache serves every label set. Images are resized with the same
function as ``ClipTransform``, so a sample read from the cache equals one decoded from PNGs and resized.
Files are written atomically and the manifest last; running ``prepare_cache`` again skips finished files.
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

from vidseg.data.cityscapes import (
    LABEL_FOLDER,
    PLAIN_FOLDER,
    SEQUENCE_FOLDER,
    SNIPPET_AFTER,
    SNIPPET_BEFORE,
    SYNTHCITY_META,
    _list_dirs,
    _read_synthcity_meta,
    _Sequence,
    corruption_codes,
    feasible_positions,
    find_label_files,
    frame_name,
    image_path,
    label_path,
    read_image,
    read_label_ids,
    window_misfit,
)
from vidseg.data.transforms import resize_frames, resize_labels
from vidseg.errors import VidsegError
from vidseg.fileio import atomic_path, atomic_write_text, make_folder

logger = logging.getLogger(__name__)

CACHE_FORMAT = "vidseg-frame-cache"
CACHE_VERSION = 1
MANIFEST = "manifest.json"
PREPARING = "prepare.json"


def snippet_offsets(num_frames: int | None, max_stride: int = 1) -> list[int]:
    """Offsets from the annotated frame that windows of ``num_frames`` at strides 1..max_stride can touch,
    with the annotated frame anywhere in the window (None: the whole snippet, -19..+10)."""
    if num_frames is None:
        return list(range(-SNIPPET_BEFORE, SNIPPET_AFTER + 1))
    offsets: set[int] = set()
    for stride in range(1, max_stride + 1):
        for position in feasible_positions(num_frames, stride, SNIPPET_BEFORE, SNIPPET_AFTER):
            offsets.update((i - position) * stride for i in range(num_frames))
    if not offsets:
        raise ValueError(window_misfit(num_frames, None, 1, SNIPPET_BEFORE, SNIPPET_AFTER))
    return sorted(offsets)


@dataclass(frozen=True)
class _Task:
    root: Path
    out: Path
    folder: str
    split: str
    city: str
    seq: int
    key: str
    frames: tuple[int, ...]
    labelled: tuple[int, ...]
    size: tuple[int, int]
    reuse: bool


def _entry_paths(out: Path, split: str, city: str, key: str) -> tuple[Path, Path]:
    folder = out / split / city
    return folder / f"{key}.frames.npy", folder / f"{key}.labels.npy"


def _is_complete(path: Path, shape: tuple[int, ...]) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape == shape
    except (OSError, ValueError):
        return False


def _write_entry(task: _Task) -> dict:
    """Resize and store one entry's frames and labels; returns its manifest record."""
    present = [
        f for f in task.frames if image_path(task.root, task.folder, task.split, task.city, task.seq, f).is_file()
    ]
    missing = [f for f in task.frames if f not in set(present)]
    height, width = task.size
    frames_file, labels_file = _entry_paths(task.out, task.split, task.city, task.key)
    record = {"key": task.key, "city": task.city, "seq": task.seq, "frames": present, "missing": missing,
              "labelled": list(task.labelled)}
    if task.reuse and _is_complete(frames_file, (len(present), height, width, 3)) and _is_complete(
        labels_file, (len(task.labelled), height, width)
    ):
        return record
    source_shape = None
    frames = np.empty((len(present), height, width, 3), dtype=np.uint8)
    for row, frame in enumerate(present):
        path = image_path(task.root, task.folder, task.split, task.city, task.seq, frame)
        image = read_image(path)
        if source_shape is None:
            source_shape, first_path = image.shape, path
        elif image.shape != source_shape:
            raise VidsegError(
                f"{path} is {image.shape[1]}x{image.shape[0]} but {first_path} is {source_shape[1]}x"
                f"{source_shape[0]}: frames of a snippet must share one size"
            )
        resized = resize_frames(torch.from_numpy(image).permute(2, 0, 1)[None], task.size)
        frames[row] = resized[0].permute(1, 2, 0).numpy()
    labels = np.empty((len(task.labelled), height, width), dtype=np.uint8)
    for row, frame in enumerate(task.labelled):
        path = label_path(task.root, task.split, task.city, task.seq, frame)
        ids = read_label_ids(path)
        if source_shape is not None and ids.shape != source_shape[:2]:
            raise VidsegError(
                f"label {path} is {ids.shape[1]}x{ids.shape[0]} but the images of its snippet are "
                f"{source_shape[1]}x{source_shape[0]}: image and label must have the same size"
            )
        labels[row] = resize_labels(torch.from_numpy(ids), task.size).numpy()
    for path, array in ((frames_file, frames), (labels_file, labels)):
        with atomic_path(path) as tmp:
            np.save(tmp, array)
    return record


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
) -> dict:
    """Write a frame cache of ``root`` into ``out`` and return its manifest.

    Args:
        root: dataset root in the Cityscapes layout (or a SynthCity root).
        out: cache folder (created; an existing cache of the same source and size is updated).
        size: (height, width) of the cached frames, the working resolution of training/evaluation.
        splits: splits to cache; default: ``train`` and ``val``, those that exist.
        num_frames: longest window the cache must serve; None caches whole snippets (30 frames). SynthCity
            sequences are always cached whole.
        max_stride: largest frame stride the cache must serve (every stride 1..max_stride is covered).
        workers: processes decoding PNGs in parallel.
        progress: show a progress bar.

    Missing snippet frames are recorded in the manifest, not fatal: a dataset reading the cache raises for them
    (or skips their samples with ``skip_missing=True``), exactly as it would reading the PNGs.
    """
    root = Path(root).resolve()
    out = Path(out)
    size = (int(size[0]), int(size[1]))
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"size must be positive (height, width), got {size}")
    if max_stride < 1:
        raise ValueError(f"max_stride must be >= 1, got {max_stride}")
    if not (root / LABEL_FOLDER).is_dir():
        found = ", ".join(_list_dirs(root)) or "nothing"
        problem = f"has no {LABEL_FOLDER}/ folder (found: {found})" if root.is_dir() else "does not exist"
        raise VidsegError(f"dataset root {root} {problem}; pass the Cityscapes (or SynthCity) root as --root")
    dense = (root / SYNTHCITY_META).is_file()
    meta = _read_synthcity_meta(root / SYNTHCITY_META) if dense else None
    if splits is None:
        splits = [s for s in ("train", "val") if (root / LABEL_FOLDER / s).is_dir()]
        if not splits:
            found = ", ".join(_list_dirs(root / LABEL_FOLDER)) or "none"
            raise VidsegError(f"{root / LABEL_FOLDER} has no train or val split (splits present: {found})")
    offsets = None if dense else snippet_offsets(num_frames, max_stride)
    # Files of an earlier (possibly interrupted) run are reused only when it cached the same source at the same
    # size; the marker is written before any file.
    identity = {"source": str(root), "size": list(size), "dense": dense}
    make_folder(out)
    reuse = _read_json(out / PREPARING) == identity
    atomic_write_text(out / PREPARING, json.dumps(identity))

    tasks: list[_Task] = []
    folders: dict[str, str] = {}
    for split in splits:
        labelled = find_label_files(root, split)
        folders[split] = _image_folder(root, split, dense or num_frames == 1)
        for (city, seq), frames in labelled.items():
            if dense:
                span = tuple(range(frames[0], frames[-1] + 1))
                tasks.append(_Task(root, out, folders[split], split, city, seq, f"{city}_{seq:06d}", span,
                                   tuple(frames), size, reuse))
                continue
            assert offsets is not None, "snippet datasets (not dense) always have offsets"
            for frame in frames:
                span = tuple(frame + offset for offset in offsets)
                tasks.append(_Task(root, out, folders[split], split, city, seq, frame_name(city, seq, frame),
                                   span, (frame,), size, reuse))

    records = _run(tasks, workers, progress)
    manifest = _load_manifest_for_update(out, root, size, dense)
    for split in splits:
        entries = [r for task, r in zip(tasks, records) if task.split == split]
        manifest["splits"][split] = {
            "image_folder": folders[split],
            "num_frames": num_frames,
            "max_stride": max_stride,
            "offsets": offsets,
            "entries": entries,
        }
        missing = sum(len(r["missing"]) for r in entries)
        if missing:
            logger.warning(
                "%s split %r: %d snippet frames are missing (first in %s); datasets reading this cache raise "
                "for them unless skip_missing=True",
                root, split, missing, next(r["key"] for r in entries if r["missing"]),
            )
    if meta is not None:
        atomic_write_text(out / SYNTHCITY_META, json.dumps(meta))
    atomic_write_text(out / MANIFEST, json.dumps(manifest))
    return manifest


def _image_folder(root: Path, split: str, plain_is_enough: bool) -> str:
    if (root / SEQUENCE_FOLDER / split).is_dir():
        return SEQUENCE_FOLDER
    if plain_is_enough and (root / PLAIN_FOLDER / split).is_dir():
        return PLAIN_FOLDER
    raise VidsegError(
        f"no image sequences for split {split!r}: {root / SEQUENCE_FOLDER / split} does not exist"
        + ("" if plain_is_enough else f" (with only {PLAIN_FOLDER}/, prepare with --num-frames 1)")
    )


def _run(tasks: list[_Task], workers: int, progress: bool) -> list[dict]:
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), unit="snippet", desc="caching")
    records: Iterable[dict]
    if workers <= 1:
        records = map(_write_entry, tasks)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker)
        records = pool.map(_write_entry, tasks, chunksize=4)
    results = []
    try:
        for record in records:
            results.append(record)
            if bar is not None:
                bar.update()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    return results


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_manifest_for_update(out: Path, root: Path, size: tuple[int, int], dense: bool) -> dict:
    """The existing manifest when it describes the same source and size (its other splits are kept)."""
    fresh = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "source": str(root), "size": list(size),
             "dense": dense, "splits": {}}
    old = _read_json(out / MANIFEST)
    if not isinstance(old, dict):
        return fresh
    same = {k: old.get(k) for k in fresh if k != "splits"} == {k: v for k, v in fresh.items() if k != "splits"}
    if same and isinstance(old.get("splits"), dict):
        fresh["splits"] = old["splits"]
    return fresh


class FrameCache:
    """Reads a cache written by ``prepare_cache``; ``CityscapesSequences(..., cache=path)`` uses it."""

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
        self.dense = bool(manifest["dense"])
        self.synthcity_meta = _read_synthcity_meta(self.path / SYNTHCITY_META) if self.dense else None
        self._rows: dict[tuple[str, str], tuple[dict[int, int], dict[int, int], str]] = {}

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

    def sequences(self, split: str) -> tuple[list[_Sequence], dict[str, set[int]], dict[str, set[int]]]:
        """The split's sequences (snippets or whole sequences), and per cache key the frames it holds and the
        frames that were missing from the source."""
        sequences, available, missing = [], {}, {}
        for entry in self.split_info(split)["entries"]:
            key, labelled = entry["key"], entry["labelled"]
            if self.dense:
                first, last = labelled[0], labelled[-1]
                corruption = corruption_codes(self.synthcity_meta, split, entry["city"], entry["seq"], last)
            else:
                first, last = labelled[0] - SNIPPET_BEFORE, labelled[0] + SNIPPET_AFTER
                corruption = None
            sequences.append(
                _Sequence(entry["city"], entry["seq"], first, last, frozenset(labelled), corruption, cache_key=key)
            )
            available[key] = set(entry["frames"])
            missing[key] = set(entry["missing"])
            self._rows[(split, key)] = (
                {f: row for row, f in enumerate(entry["frames"])},
                {f: row for row, f in enumerate(labelled)},
                entry["city"],
            )
        return sequences, available, missing

    def read(
        self, split: str, key: str, frame_numbers: Sequence[int], labelled: Sequence[bool]
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """uint8 frames ``[T, H, W, 3]`` and ``{window position: labelIds [H, W]}`` of the labelled ones."""
        frame_rows, label_rows, city = self._rows[(split, key)]
        frames_file, labels_file = _entry_paths(self.path, split, city, key)
        try:
            frames = np.load(frames_file, mmap_mode="r")
            labels = np.load(labels_file, mmap_mode="r") if any(labelled) else None
            images = frames[[frame_rows[f] for f in frame_numbers]]
            label_ids: dict[int, np.ndarray] = {}
            if labels is not None:
                label_ids = {t: np.array(labels[label_rows[f]]) for t, f in enumerate(frame_numbers) if labelled[t]}
        except (OSError, ValueError) as error:
            raise VidsegError(
                f"cannot read cache entry {key} in {self.path / split} ({error}); run `vidseg prepare` again"
            ) from None
        return images, label_ids


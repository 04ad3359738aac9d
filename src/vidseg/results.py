"""Evaluation results: what ``vidseg.evaluate.evaluate_model`` returns, and the JSON it is saved as.

Readers (the ``evaluate`` command, training's validation, the demo report) use attributes; ``to_dict`` gives the
JSON that ``results.json`` files hold (figures are fractions in [0, 1], None where undefined) and ``from_dict``
reads it back. Keys of the JSON are the attribute names; the figures over the scored frames sit at its top level.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vidseg.errors import VidsegError

_T = TypeVar("_T")


class _Malformed(Exception):
    """A key of the JSON form is missing or holds the wrong type; ``from_dict`` turns it into a VidsegError."""

    def __init__(self, key: str, expected: str, found: Any = None, missing: bool = False):
        super().__init__(key)
        self.key, self.expected, self.found, self.missing = key, expected, found, missing


class _Fields:
    """Typed reads of one JSON object of the results; ``where`` is its key path (``corruption.clean``)."""

    def __init__(self, data: Any, where: str = ""):
        if not isinstance(data, dict):
            raise _Malformed(where or "<top level>", "an object", data)
        self.data, self.where = data, where

    def _path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, optional: bool = False) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise _Malformed(self._path(key), "", missing=True)
        return self.data[key]

    def figure(self, key: str) -> float | None:
        return _figure(self.get(key), self._path(key))

    def figure_list(self, key: str) -> list[float | None]:
        return [_figure(value, self._path(key)) for value in self.items(key)]

    def count(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Malformed(self._path(key), "a count (an integer >= 0)", value)
        return value

    def optional_count(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.count(key)

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise _Malformed(self._path(key), "a string", value)
        return value

    def fields(self, key: str) -> _Fields:
        return _Fields(self.get(key), self._path(key))

    def optional_fields(self, key: str) -> _Fields | None:
        return None if self.data.get(key) is None else self.fields(key)

    def figures_by_name(self, key: str) -> dict[str, float | None]:
        inner = _Fields(self.get(key), self._path(key))
        return {str(name): inner.figure(name) for name in inner.data}

    def items(self, key: str) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            raise _Malformed(self._path(key), "a list", value)
        return value


@dataclass
class Figures:
    """The benchmark figures of one group of frames: mean IoU, mean class accuracy, pixel accuracy, per class.

    ``frames`` is the number of frames in the group where the results state it (``all_frames``), else None.
    """

    miou: float | None
    macc: float | None
    aacc: float | None
    iou: dict[str, float | None]
    acc: dict[str, float | None]
    pixels: int
    frames: int | None = None

    def to_dict(self) -> dict[str, Any]:
        counted = {} if self.frames is None else {"frames": self.frames}
        return {
            **counted,
            "miou": self.miou,
            "macc": self.macc,
            "aacc": self.aacc,
            "iou": dict(self.iou),
            "acc": dict(self.acc),
            "pixels": self.pixels,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> Figures:
        return _read(cls._read, data, source)

    @classmethod
    def _read(cls, fields: _Fields) -> Figures:
        return cls(
            miou=fields.figure("miou"),
            macc=fields.figure("macc"),
            aacc=fields.figure("aacc"),
            iou=fields.figures_by_name("iou"),
            acc=fields.figures_by_name("acc"),
            pixels=fields.count("pixels"),
            frames=fields.optional_count("frames"),
        )


@dataclass
class CorruptionFigures:
    """Figures over clean frames, over corrupted ones, and per corruption type (by name)."""

    clean: Figures
    corrupted: Figures
    types: dict[str, Figures]

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean.to_dict(),
            "corrupted": self.corrupted.to_dict(),
            "types": {name: figures.to_dict() for name, figures in self.types.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> CorruptionFigures:
        return _read(cls._read, data, source)

    @classmethod
    def _read(cls, fields: _Fields) -> CorruptionFigures:
        types = fields.fields("types")
        return cls(
            clean=Figures._read(fields.fields("clean")),
            corrupted=Figures._read(fields.fields("corrupted")),
            types={str(name): Figures._read(types.fields(name)) for name in types.data},
        )


@dataclass
class PerPosition:
    """mIoU by frames of context: ``miou[k - 1]`` over ``frames[k - 1]`` frames after seeing ``frames_seen[k - 1]``.

    ``mode`` is ``context`` (the same frames for every k) or ``labelled`` (the labelled frames at each window
    position). In stream mode, ``every`` is the spacing of the re-segmented frames and ``stream_miou`` their mIoU
    as the full stream saw them.
    """

    mode: str
    frames_seen: list[int]
    miou: list[float | None]
    frames: list[int]
    every: int | None = None
    stream_miou: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "frames_seen": list(self.frames_seen),
            "miou": list(self.miou),
            "frames": list(self.frames),
        }
        if self.every is not None:
            data["every"] = self.every
            data["stream_miou"] = self.stream_miou
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> PerPosition:
        return _read(cls._read, data, source)

    @classmethod
    def _read(cls, fields: _Fields) -> PerPosition:
        every = fields.optional_count("every")
        return cls(
            mode=fields.text("mode"),
            frames_seen=_counts(fields, "frames_seen"),
            miou=fields.figure_list("miou"),
            frames=_counts(fields, "frames"),
            every=every,
            stream_miou=fields.figure("stream_miou") if every is not None else None,
        )


@dataclass
class EvaluationResults:
    """Everything one evaluation measured.

    ``scored`` holds the figures over the scored frames (stream: every labelled frame; windows: the annotated
    frames); ``miou``, ``macc``, ``aacc``, ``iou`` and ``acc`` read through to it. ``headline`` is the protocol's
    own pair (``mIoU``, ``mAcc``; the report protocol's "mAcc" is pixel accuracy). Stream mode fills
    ``sequences``; window mode ``windows``, ``frames_per_window`` and ``annotated_frames``, and ``all_frames``
    (every labelled frame of every window) where windows carry more than the annotated label. ``run`` is what the
    ``evaluate`` command adds about the checkpoint and data.
    """

    mode: str
    protocol: str
    label_set: str
    classes: list[str]
    frames_scored: int
    scored: Figures
    headline: dict[str, float | None]
    tc: float | None
    tc_pairs: int
    mvc_8: float | None
    mvc_16: float | None
    mvc_runs: dict[str, int]
    score_at: str
    sequences: int | None = None
    windows: int | None = None
    frames_per_window: int | None = None
    annotated_frames: int | None = None
    all_frames: Figures | None = None
    corruption: CorruptionFigures | None = None
    per_position: PerPosition | None = None
    run: dict[str, Any] | None = field(default=None)

    @property
    def miou(self) -> float | None:
        return self.scored.miou

    @property
    def macc(self) -> float | None:
        return self.scored.macc

    @property
    def aacc(self) -> float | None:
        return self.scored.aacc

    @property
    def iou(self) -> dict[str, float | None]:
        return self.scored.iou

    @property
    def acc(self) -> dict[str, float | None]:
        return self.scored.acc

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (key order as ``results.json`` files have always had it)."""
        data: dict[str, Any] = {
            "mode": self.mode,
            "protocol": self.protocol,
            "label_set": self.label_set,
            "classes": list(self.classes),
            "frames_scored": self.frames_scored,
        }
        if self.sequences is not None:
            data["sequences"] = self.sequences
        if self.windows is not None:
            data["windows"] = self.windows
        if self.frames_per_window is not None:
            data["frames_per_window"] = self.frames_per_window
            data["annotated_frames"] = self.annotated_frames
        data.update(self.scored.to_dict())
        data["headline"] = dict(self.headline)
        if self.all_frames is not None:
            data["all_frames"] = self.all_frames.to_dict()
        if self.corruption is not None:
            data["corruption"] = self.corruption.to_dict()
        if self.per_position is not None:
            data["per_position"] = self.per_position.to_dict()
        data.update(
            tc=self.tc,
            tc_pairs=self.tc_pairs,
            mvc_8=self.mvc_8,
            mvc_16=self.mvc_16,
            mvc_runs=dict(self.mvc_runs),
            score_at=self.score_at,
        )
        if self.run is not None:
            data["run"] = self.run
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> EvaluationResults:
        """Read the JSON form back; a missing key or a value of the wrong type is a VidsegError naming ``source``
        (e.g. the file) and the key."""
        return _read(cls._read, data, source)

    @classmethod
    def _read(cls, fields: _Fields) -> EvaluationResults:
        all_frames = fields.optional_fields("all_frames")
        corruption = fields.optional_fields("corruption")
        per_position = fields.optional_fields("per_position")
        headline = fields.fields("headline")
        mvc_runs = fields.fields("mvc_runs")
        classes = fields.items("classes")
        if not all(isinstance(name, str) for name in classes):
            raise _Malformed("classes", "a list of class names", classes)
        run = fields.get("run", optional=True)
        if run is not None and not isinstance(run, dict):
            raise _Malformed("run", "an object", run)
        return cls(
            mode=fields.text("mode"),
            protocol=fields.text("protocol"),
            label_set=fields.text("label_set"),
            classes=list(classes),
            frames_scored=fields.count("frames_scored"),
            scored=Figures._read(fields),
            headline={str(name): headline.figure(name) for name in headline.data},
            tc=fields.figure("tc"),
            tc_pairs=fields.count("tc_pairs"),
            mvc_8=fields.figure("mvc_8"),
            mvc_16=fields.figure("mvc_16"),
            mvc_runs={str(name): mvc_runs.count(name) for name in mvc_runs.data},
            score_at=fields.text("score_at"),
            sequences=fields.optional_count("sequences"),
            windows=fields.optional_count("windows"),
            frames_per_window=fields.optional_count("frames_per_window"),
            annotated_frames=fields.optional_count("annotated_frames"),
            all_frames=None if all_frames is None else Figures._read(all_frames),
            corruption=None if corruption is None else CorruptionFigures._read(corruption),
            per_position=None if per_position is None else PerPosition._read(per_position),
            run=run,
        )


def read_results(path: str | os.PathLike) -> EvaluationResults:
    """The results JSON that ``vidseg evaluate`` (or the demo) wrote; VidsegError naming the file if it is not."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise VidsegError(f"cannot read evaluation results {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise VidsegError(f"{path}: not JSON ({error})") from None
    return EvaluationResults.from_dict(data, source=str(path))


def _read(read: Callable[[_Fields], _T], data: Any, source: str) -> _T:
    try:
        return read(_Fields(data))
    except _Malformed as error:
        if error.missing:
            raise VidsegError(f"{source}: evaluation results lack the key {error.key!r}") from None
        found = repr(error.found) if len(repr(error.found)) <= 60 else repr(error.found)[:57] + "..."
        raise VidsegError(
            f"{source}: evaluation results key {error.key!r} should hold {error.expected}, found {found}"
        ) from None


def _figure(value: Any, key: str) -> float | None:
    """A fraction or None; NaN (which older files may hold) reads as None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _Malformed(key, "a number or null", value)
    return None if value is None or math.isnan(value) else float(value)


def _counts(fields: _Fields, key: str) -> list[int]:
    values = fields.items(key)
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in values):
        raise _Malformed(fields._path(key), "a list of counts", values)
    return list(values)

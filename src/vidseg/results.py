"""Evaluation results: what ``vidseg.evaluate.evaluate_model`` returns, and the JSON it is saved as.

Readers (the ``evaluate`` command, training's validation, the demo report) use attributes; ``to_dict`` gives the
JSON that ``results.json`` files hold (figures are fractions in [0, 1], None where undefined) and ``from_dict``
reads it back. Keys of the JSON are the attribute names; the figures over the scored frames sit at its top level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vidseg.errors import VidsegError


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
    def from_dict(cls, data: dict[str, Any]) -> Figures:
        return cls(
            miou=data["miou"],
            macc=data["macc"],
            aacc=data["aacc"],
            iou=dict(data["iou"]),
            acc=dict(data["acc"]),
            pixels=int(data["pixels"]),
            frames=data.get("frames"),
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
    def from_dict(cls, data: dict[str, Any]) -> CorruptionFigures:
        return cls(
            clean=Figures.from_dict(data["clean"]),
            corrupted=Figures.from_dict(data["corrupted"]),
            types={name: Figures.from_dict(figures) for name, figures in data["types"].items()},
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
    def from_dict(cls, data: dict[str, Any]) -> PerPosition:
        return cls(
            mode=data["mode"],
            frames_seen=list(data["frames_seen"]),
            miou=list(data["miou"]),
            frames=list(data["frames"]),
            every=data.get("every"),
            stream_miou=data.get("stream_miou"),
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
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> EvaluationResults:
        """Read the JSON form back; a missing key is an error naming ``source`` (e.g. the file) and the key."""
        try:
            return cls(
                mode=data["mode"],
                protocol=data["protocol"],
                label_set=data["label_set"],
                classes=list(data["classes"]),
                frames_scored=int(data["frames_scored"]),
                scored=Figures.from_dict({key: data[key] for key in ("miou", "macc", "aacc", "iou", "acc", "pixels")}),
                headline=dict(data["headline"]),
                tc=data["tc"],
                tc_pairs=int(data["tc_pairs"]),
                mvc_8=data["mvc_8"],
                mvc_16=data["mvc_16"],
                mvc_runs=dict(data["mvc_runs"]),
                score_at=data["score_at"],
                sequences=data.get("sequences"),
                windows=data.get("windows"),
                frames_per_window=data.get("frames_per_window"),
                annotated_frames=data.get("annotated_frames"),
                all_frames=Figures.from_dict(data["all_frames"]) if data.get("all_frames") else None,
                corruption=CorruptionFigures.from_dict(data["corruption"]) if data.get("corruption") else None,
                per_position=PerPosition.from_dict(data["per_position"]) if data.get("per_position") else None,
                run=data.get("run"),
            )
        except KeyError as error:
            raise VidsegError(f"{source}: evaluation results lack the key {error.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise VidsegError(f"{source}: not vidseg evaluation results ({error})") from None

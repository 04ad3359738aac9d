"""How long a run trains and at what rate: the budget (steps, epochs, minutes), the reasons to stop, the LR
schedule as a function of the budget's progress."""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field

import torch

from vidseg.config import TrainConfig


class StopReason(str, enum.Enum):
    """Why training stopped; the value is what the log and the metrics file say."""

    BUDGET = "budget"
    """A budget of ``train.steps``, ``train.epochs`` or ``train.minutes`` is used up."""
    SIGTERM = "sigterm"
    """The process was asked to stop; ``last.pt`` is written and the run can be resumed."""


@dataclass
class Budget:
    """The training budget: any of steps, epochs and minutes (the first one used up ends the run).

    Time counts over the sessions of a run: ``earlier_seconds`` (restored from the checkpoint) plus the time
    since this session started.
    """

    steps: int | None
    epochs: int | None
    minutes: float | None
    steps_per_epoch: int
    earlier_seconds: float = 0.0
    session_start: float = field(default_factory=time.monotonic)

    @classmethod
    def from_config(cls, train: TrainConfig, steps_per_epoch: int) -> Budget:
        return cls(train.steps, train.epochs, train.minutes, steps_per_epoch)

    def start_session(self) -> None:
        self.session_start = time.monotonic()

    def elapsed(self) -> float:
        """Training seconds of the run so far."""
        return self.earlier_seconds + time.monotonic() - self.session_start

    def out_of_time(self) -> bool:
        return self.minutes is not None and self.elapsed() >= self.minutes * 60

    def spent(self, step: int, epoch: int) -> bool:
        """True once any budget is used up after ``step`` steps and ``epoch`` complete epochs."""
        return bool(self.spent_parts(step, epoch))

    def spent_parts(self, step: int, epoch: int) -> list[str]:
        """The budgets used up, as config settings (``train.steps=7``)."""
        parts = []
        if self.steps is not None and step >= self.steps:
            parts.append(f"train.steps={self.steps}")
        if self.epochs is not None and epoch >= self.epochs:
            parts.append(f"train.epochs={self.epochs}")
        if self.out_of_time():
            parts.append(f"train.minutes={self.minutes:g}")
        return parts

    def progress(self, step: int) -> float:
        """How far training is through its budget after ``step`` steps, 0 ... 1 (the furthest of steps, epochs
        and time): what the LR schedule follows."""
        fractions = [0.0]
        if self.steps is not None:
            fractions.append(step / self.steps)
        if self.epochs is not None:
            fractions.append(step / (self.epochs * self.steps_per_epoch))
        if self.minutes is not None:
            fractions.append(self.elapsed() / (self.minutes * 60))
        return min(1.0, max(fractions))

    def total_steps(self) -> int | None:
        """The number of steps the step and epoch budgets allow (None if only time limits the run)."""
        totals = [self.steps] if self.steps is not None else []
        if self.epochs is not None:
            totals.append(self.epochs * self.steps_per_epoch)
        return min(totals) if totals else None

    def minutes_left(self) -> float | None:
        if self.minutes is None:
            return None
        return max(0.0, self.minutes * 60 - self.elapsed()) / 60


class LRSchedule:
    """Learning rate as a function of training progress in [0, 1] (of the step, epoch or time budget).

    ``constant``: the base rate. ``cosine``: linear warm-up over ``warmup_fraction`` of the budget, then a
    cosine decay to ``final_lr_scale`` x the base rate. Every parameter group keeps its own base rate.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str, warmup_fraction: float, final_lr_scale: float):
        self.optimizer = optimizer
        self.kind = kind
        self.warmup_fraction = warmup_fraction
        self.final_lr_scale = final_lr_scale
        self.progress = 0.0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def factor(self, progress: float) -> float:
        if self.kind == "constant":
            return 1.0
        if progress < self.warmup_fraction:
            return progress / self.warmup_fraction
        decay = min(1.0, (progress - self.warmup_fraction) / (1.0 - self.warmup_fraction))
        return self.final_lr_scale + (1.0 - self.final_lr_scale) * 0.5 * (1.0 + math.cos(math.pi * decay))

    def set_progress(self, progress: float) -> None:
        self.progress = progress
        factor = self.factor(progress)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def state_dict(self) -> dict:
        return {"kind": self.kind, "progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.set_progress(state["progress"])

"""The run directory: resume discovery, the metrics log, the lock, and the checkpoint files."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidseg import distributed
from vidseg.checkpoint import TrainState
from vidseg.config import Config, TrainConfig, dump_config
from vidseg.errors import VidsegError
from vidseg.fileio import (
    atomic_write_text,
    check_outputs_spare_inputs,
    exclusive_lock,
    explained_write_errors,
    make_folder,
    remove_dead_temporaries,
)
from vidseg.metrics import nan_to_none

LOG_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RUN_FILES = (CONFIG_FILE, LOG_FILE, "last.pt", "best.pt")


def find_resume_checkpoint(run_dir: Path, log: Callable[[str], None]) -> tuple[Path, TrainState]:
    """The newest checkpoint of ``run_dir`` that loads; say which ones were skipped and why."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VidsegError(f"--resume {run_dir}: no such run directory")
    candidates = [p for p in [run_dir / "last.pt", *run_dir.glob("step-*.pt"), run_dir / "best.pt"] if p.is_file()]
    if not candidates:
        raise VidsegError(
            f"--resume {run_dir}: the directory holds no checkpoint (last.pt, best.pt or step-*.pt); "
            "start a new run with `vidseg train CONFIG --out DIR`"
        )
    # Newest first; at equal times last.pt, then the periodic ones, then best.pt.
    priority = {path: i for i, path in enumerate(candidates)}
    candidates.sort(key=lambda p: (-p.stat().st_mtime, priority[p]))
    problems = []
    for path in candidates:
        try:
            state = TrainState.load(path)
            missing = state.missing_for_training()
            if missing:
                raise VidsegError(f"checkpoint {path} is not a training checkpoint (it lacks {', '.join(missing)})")
        except VidsegError as error:
            problems.append(str(error))
            continue
        if problems:
            log(f"resume: skipped {len(problems)} unusable checkpoint(s): " + " | ".join(problems))
            log(f"resume: falling back to {path} (step {state.step})")
        return path, state
    raise VidsegError(f"--resume {run_dir}: no checkpoint loads: " + " | ".join(problems))


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and, when it imports, TensorBoard; main process only."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, log: Callable[[str], None] = print):
        self.path = run_dir / LOG_FILE
        self.enabled = enabled
        self.events = 0
        """Events written to the file so far; a checkpoint records it."""
        self.writer = None
        if enabled and tensorboard:
            try:  # an optional dependency, imported only when asked for
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log(
                    "train.tensorboard: TensorBoard is not installed (pip install tensorboard), so only "
                    f"{LOG_FILE} is written; set train.tensorboard=false to silence this"
                )
            else:
                self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def keep_first(self, events: int) -> None:
        """Keep the first ``events`` events: drop those a stopped or killed run wrote after its checkpoint."""
        if not self.enabled:
            return
        lines = self.path.read_text(encoding="utf-8").splitlines() if self.path.exists() else []
        kept = lines[:events]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self.events = len(kept)

    def write(self, event: dict) -> None:
        if not self.enabled:
            return
        with explained_write_errors(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(nan_to_none(event)) + "\n")
        self.events += 1
        if self.writer is not None:
            for key, value in event.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{event['event']}/{key}", value, event.get("step", 0))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class RunDir:
    """A training run's directory on disk: who may write it (the lock), where a resumed run starts (the newest
    checkpoint that loads), its ``config.yaml`` and metrics log, and its checkpoint files.

    Every method may be called on every process; only the main process reads or writes files (the others get
    its answers), so no process is left waiting for the others.
    """

    def __init__(self, path: str | Path, ctx: distributed.Context, log: Callable[[str], None]):
        self.path = Path(path)
        self.ctx = ctx
        self.log = log
        self.metrics_log = MetricsLog(self.path, enabled=False, tensorboard=False)
        self.newest_checkpoint_step: int | None = None
        """Step of the newest checkpoint of the run (for messages)."""

    def lock(self, config: Config, resume: bool, held: contextlib.ExitStack) -> None:
        """Check that the run's files spare its inputs and hold the directory's lock until ``held`` closes (one
        writer per run: a second ``train --out`` or ``--resume`` on it fails naming this process)."""

        def check_and_lock() -> None:
            outputs = [(f"run directory file {name}", self.path / name) for name in RUN_FILES]
            inputs = [("data.root", config.data.root), ("train.init_from", config.train.init_from)]
            check_outputs_spare_inputs(outputs, inputs)
            if not resume or self.path.is_dir():  # resume explains a missing run directory itself
                held.enter_context(exclusive_lock(self.path, "training"))

        self._on_main(check_and_lock)

    def starting_point(self, resume: bool) -> TrainState | None:
        """The checkpoint to resume from (the newest that loads), or None for a new run."""

        def decide() -> TrainState | None:
            if resume:
                return find_resume_checkpoint(self.path, self.log)[1]
            if (self.path / "last.pt").exists():
                raise VidsegError(
                    f"{self.path} already holds a run (last.pt); continue it with --resume {self.path}, "
                    "or train into another directory with --out"
                )
            return None

        state = self._on_main(decide)
        if state is not None:
            self.newest_checkpoint_step = state.step
        return state

    def open(self, config: Config, resumed: TrainState | None) -> MetricsLog:
        """Create the directory, clear what killed writers left, write ``config.yaml``; the metrics log, cut
        back to the events of the checkpoint a resumed run starts from."""
        if self.ctx.is_main:
            make_folder(self.path)
            remove_dead_temporaries(self.path)  # left by a process killed while writing
            atomic_write_text(self.path / CONFIG_FILE, dump_config(config))
        self.metrics_log = MetricsLog(
            self.path, enabled=self.ctx.is_main, tensorboard=config.train.tensorboard, log=self.log
        )
        if resumed is not None and resumed.log_events is not None:
            self.metrics_log.keep_first(resumed.log_events)
        return self.metrics_log

    def write_checkpoint(self, name: str, state: TrainState) -> None:
        """Write ``state`` as ``name`` (main process only)."""
        if self.ctx.is_main:
            state.save(self.path / name)
        if name != "best.pt":
            self.newest_checkpoint_step = state.step

    def _on_main(self, decide: Callable[[], Any]) -> Any:
        """Run ``decide`` on the main process only and give every process its result, or raise its VidsegError
        everywhere."""
        outcome = None
        if self.ctx.is_main:
            try:
                outcome = ("ok", decide())
            except VidsegError as error:
                outcome = ("error", str(error))
        kind, value = distributed.broadcast_object(outcome)
        if kind == "error":
            raise VidsegError(value)
        return value


def checkpoint_due(step: int, evaluated: bool, train: TrainConfig) -> tuple[bool, bool]:
    """The rule for checkpoints inside an epoch, after optimizer step ``step``: whether to write ``last.pt``
    (after a step that evaluated, or a multiple of ``train.checkpoint_every``) and whether to keep a copy
    ``step-NNNNNNN.pt`` (the multiples, with ``train.keep_checkpoints``). ``last.pt`` is also written at the
    end of every epoch and when training stops; ``best.pt`` whenever validation mIoU improves."""
    periodic = bool(train.checkpoint_every and step % train.checkpoint_every == 0)
    return periodic or evaluated, periodic and train.keep_checkpoints

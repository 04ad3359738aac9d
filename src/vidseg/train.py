"""The training loop: one readable loop for a single process and for DDP under ``torchrun``.

``train(config, run_dir)`` trains the config's model and writes the run directory:
  * ``config.yaml``: the resolved config;
  * ``metrics.jsonl``: one JSON object per event (``train`` log lines, ``eval`` results, ``stop``);
  * ``last.pt`` and ``best.pt`` (by validation mIoU), optional ``step-NNNNNNN.pt``: each a ``TrainState``
    (``vidseg.checkpoint``), so that ``train(config, run_dir, resume=True)`` continues exactly where it stopped.

Read it top to bottom: ``train`` sets up a ``Trainer`` (model, optimizer, schedule, scaler, loss, budget,
progress) and calls ``train_one_epoch`` until the budget is spent or a SIGTERM asks it to stop. The pieces live
in ``vidseg.training``: ``data`` (datasets, seeded samples, epoch order, class weights), ``losses`` (the loss and
where a new term goes), ``budget`` (budget, stop reasons, LR schedule), ``run_dir`` (lock, resume discovery,
metrics log, checkpoint files), ``setup`` (warm start, optimizer, what a resume may change).

Exact resume rests on three choices: each sample's random draws depend only on (seed, epoch, index), not on
a worker's RNG stream; the epoch's sample order is a pure function of (seed, epoch); and checkpoints are taken
at optimizer-step boundaries, recording how many micro-batches of the epoch were consumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from vidseg import distributed
from vidseg.checkpoint import TrainState, restore_rng_states, rng_states
from vidseg.config import Config, config_from_dict, config_to_dict, load_config
from vidseg.data.transforms import MEAN, STD
from vidseg.errors import VidsegError
from vidseg.evaluate import evaluate_model
from vidseg.metrics import all_reduce_sum
from vidseg.models import RecurrentUNet, build_model
from vidseg.models.inference import cpu_has_fast_bf16
from vidseg.models.unet import State, run_clip
from vidseg.models.zoo import architecture_options
from vidseg.training.budget import Budget, LRSchedule, StopReason
from vidseg.training.data import SeededSamples, build_datasets, class_frequency_weights, epoch_batches
from vidseg.training.losses import Criterion, segmentation_loss
from vidseg.training.run_dir import (
    CONFIG_FILE,
    LOG_FILE,
    RUN_FILES,
    MetricsLog,
    RunDir,
    checkpoint_due,
    find_resume_checkpoint,
)
from vidseg.training.setup import (
    OPTIMIZER_SETTINGS,
    build_optimizer,
    identity_init_temporal,
    refuse_resume_changes,
    warm_start,
)

__all__ = [  # what tests and other modules import from here
    "CONFIG_FILE", "LOG_FILE", "RUN_FILES", "Budget", "ClipForward", "LRSchedule", "MetricsLog", "SeededSamples",
    "StopReason", "TrainResult", "Trainer", "build_datasets", "class_frequency_weights", "epoch_batches",
    "find_resume_checkpoint", "restore_rng_states", "resume_config", "rng_states", "segmentation_loss", "train",
    "train_one_epoch", "warm_start",
]


# ------------------------------------------------------------------------------------------- the entry point


def train(config: Config, run_dir: str | Path, resume: bool = False, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``config``'s model into ``run_dir``; with ``resume``, continue from its newest loadable checkpoint.

    Under ``torchrun`` every process calls this; the process group is set up and torn down here.
    """
    ctx = distributed.init(config.train.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if config.train.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        with contextlib.ExitStack() as held:
            RunDir(run_dir, ctx, log).lock(config, resume, held)
            return Trainer(config, Path(run_dir), ctx, resume, log).run()
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        distributed.shutdown()


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config of an existing run (its ``config.yaml``, else the newest checkpoint's), with overrides."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if path.is_file():
        return load_config(path, overrides)
    _, state = find_resume_checkpoint(run_dir, lambda message: print(message, file=sys.stderr))
    return config_from_dict(state.config or {}, source=f"the config stored in {run_dir}", overrides=overrides)


# ------------------------------------------------------------------------------------------- the clip forward


class ClipForward(nn.Module):
    """The training forward of a clip as a module (what DDP wraps): the model's steps in the training memory
    layout. Activation checkpointing is the model's own flag (``RecurrentUNet.set_grad_checkpointing``).

    With ``own_logits`` (a model with output memory, ``loss.memory_gradient: false``) it returns the network's own
    per-frame logits too, ``(logits, own)``, and the memory's gate reads the network's outputs detached.
    """

    def __init__(self, model: RecurrentUNet, channels_last: bool = False, own_logits: bool = False):
        super().__init__()
        self.model = model
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.own_logits = own_logits
        if own_logits:
            if model.output_memory is None:
                raise ValueError("own_logits needs a model with output memory")
            model.output_memory.detach_network = True

    def step(
        self, frame: torch.Tensor, state: State | None, encoder_grad_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        return self.model.step(frame.contiguous(memory_format=self.memory_format), state, encoder_grad_scale)

    def forward(
        self, frames: torch.Tensor, encoder_grad_scale: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``frames [B, T, 3, H, W]`` -> logits (and the own logits, see the class); ``encoder_grad_scale [B, T]``
        as in ``RecurrentUNet.step``."""
        scales = iter(encoder_grad_scale.unbind(1)) if encoder_grad_scale is not None else None
        own: list[torch.Tensor] = []
        height, width = frames.shape[-2:]

        def keep_own(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            own.append(output[..., :height, :width])

        def step(frame: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
            return self.step(frame, state, next(scales) if scales is not None else None)

        if not self.own_logits:
            return run_clip(step, frames, None, self.model.in_channels)[0]
        if self.model.grad_checkpointing != "off":  # the own logits would come from inside recomputed steps
            raise ValueError("own logits are not collected with activation checkpointing; turn one off")
        hook = self.model.head.register_forward_hook(keep_own)
        try:
            logits = run_clip(step, frames, None, self.model.in_channels)[0]
        finally:
            hook.remove()
        return logits, torch.stack(own, dim=1)


# ------------------------------------------------------------------------------------------------- the state


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    """Micro-batches of ``epoch`` already consumed by this process."""
    best_miou: float = -math.inf
    metrics: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    step: int
    epoch: int
    stopped_by: StopReason
    metrics: dict
    run_dir: Path


@dataclass
class StepReport:
    """What each process knows after the micro-batches of an optimizer step. One all-reduce (a sum) per step
    carries it: the loss for logging and every process's reasons to stop."""

    loss: float
    nonfinite: float
    stop_requested: float
    out_of_time: float

    def summed_over_processes(self, device: torch.device) -> StepReport:
        names = [f.name for f in dataclasses.fields(self)]
        values = torch.tensor([getattr(self, name) for name in names], dtype=torch.float64, device=device)
        return StepReport(**dict(zip(names, all_reduce_sum(values).tolist())))


class Trainer:
    """One training run: its data, model, optimizer, schedule, loss, budget and progress, and the steps that
    change them. Build it through ``train()``; ``run()`` trains until the budget is spent."""

    def __init__(self, config: Config, run_dir: Path, ctx: distributed.Context, resume: bool, log: Callable):
        self.config = config
        self.ctx = ctx
        self.log = log if ctx.is_main else _silent
        self.seed = config.train.seed
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        self.run_dir = RunDir(run_dir, ctx, self.log)
        resumed = self.run_dir.starting_point(resume)
        if resumed is not None:
            self.log(f"resuming {self.run_dir.path} at step {resumed.step}")

        train_set, self.val_set = build_datasets(config, with_val=self.evaluates)
        self.label_set = train_set.label_set
        self.log(train_set.index.describe())
        self.train_set = SeededSamples(train_set, self.seed)
        batches_per_epoch = len(
            epoch_batches(len(train_set), 0, self.seed, config.data.batch_size, ctx.rank, ctx.world_size)
        )
        self.budget = Budget.from_config(config.train, math.ceil(batches_per_epoch / config.optim.accumulate))

        self.model, self.copied = self._build_model(resumed)
        self.optimizer = build_optimizer(self.model, config, self.copied)
        self.schedule = LRSchedule(
            self.optimizer, config.optim.schedule, config.optim.warmup_fraction, config.optim.final_lr_scale
        )
        self.amp_dtype, self.scaler = self._mixed_precision()
        self.progress = Progress()
        self.class_weights = self._class_weights(resumed)
        self.criterion = Criterion(config.loss, self.class_weights)
        if resumed is not None:
            self.restore(resumed)

        # The clip forward, or its DDP wrapper.
        own_logits = not config.loss.memory_gradient
        self.clip_module: nn.Module = ClipForward(self.model, config.train.channels_last, own_logits)
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.clip_module = nn.parallel.DistributedDataParallel(self.clip_module, device_ids=device_ids)
        self.metrics_log = self.run_dir.open(config, resumed)
        self.stop_requested = False
        self.last_saved: tuple | None = None
        self.bar: tqdm[Any] | None = None

    # ---------------------------------------------------------------------------------------- set-up pieces

    @property
    def evaluates(self) -> bool:
        return self.config.eval.every_epochs > 0 or self.config.eval.every_steps > 0

    def _build_model(self, resumed: TrainState | None) -> tuple[RecurrentUNet, list[str]]:
        """The model to train on its device (warm-started or identity-initialised as configured) and the names
        of the parameters a warm start copied."""
        train_cfg = self.config.train
        # The architecture options as a checkpoint rebuilds them (one list, zoo.architecture_options).
        model = build_model(
            self.config.model.name,
            num_classes=self.label_set.num_classes,
            state_dropout=self.config.model.state_dropout,
            **architecture_options(dataclasses.asdict(self.config.model)),
        )
        copied: list[str] = []
        if resumed is not None:
            copied = list(resumed.copied_parameters)
        elif train_cfg.init_from:
            copied = warm_start(model, train_cfg.init_from, train_cfg.init_temporal, self.log)
        elif train_cfg.init_temporal == "identity":
            identity_init_temporal(model)
        model.to(self.ctx.device)
        if train_cfg.channels_last:
            # Module.to takes memory_format (a documented keyword) but its stub overloads omit it.
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if train_cfg.activation_checkpointing in ("step", "stage"):
            model.set_grad_checkpointing(granularity=train_cfg.activation_checkpointing)
        return model, copied

    def _mixed_precision(self) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
        """The autocast dtype (None = float32) and, for fp16, the gradient scaler."""
        amp, device = self.config.train.amp, self.ctx.device
        if amp == "fp16" and device.type != "cuda":
            raise VidsegError("train.amp: fp16 needs a CUDA device; on CPU use 'bf16' or 'off'")
        if amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
            self.log(
                "warning: train.amp=bf16 on a CPU without native bf16 convolutions (AVX512-BF16 or AMX): training "
                "runs several times slower than float32 here; --set train.amp=off is faster"
            )
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        return dtype, torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def _class_weights(self, resumed: TrainState | None) -> torch.Tensor | None:
        setting, num_classes = self.config.loss.class_weights, self.label_set.num_classes
        if setting == "none":
            return None
        if isinstance(setting, list):
            if len(setting) != num_classes:
                raise VidsegError(
                    f"loss.class_weights: expected {num_classes} weights for label set "
                    f"{self.label_set.name!r}, found {len(setting)}"
                )
            weights = torch.tensor(setting, dtype=torch.float32)
        elif resumed is not None and resumed.class_weights is not None:
            weights = resumed.class_weights
        else:
            self.log("counting class frequencies of the training labels for loss.class_weights ...")
            weights = class_frequency_weights(
                self.train_set,
                num_classes,
                self.config.loss.frames,
                self.config.loss.class_weight_samples,
                self.config.data.num_workers,
                self.ctx,
                class_names=self.label_set.class_names,
                warn=self.log,
            )
            self.log("class weights: " + " ".join(f"{w:.2f}" for w in weights.tolist()))
        return weights.to(self.ctx.device)

    # ------------------------------------------------------------------------------------ saving and restoring

    def state(self) -> TrainState:
        """Everything a checkpoint holds, as of now."""
        progress = self.progress
        return TrainState(
            model_name=self.config.model.name,
            num_classes=self.label_set.num_classes,
            label_set=self.label_set.name,
            label_set_spec=self.label_set.spec(),
            working_size=list(self.config.data.size),
            model=self.model.state_dict(),
            normalization={"mean": list(MEAN), "std": list(STD)},
            config=config_to_dict(self.config),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler is not None else None,
            step=progress.step,
            epoch=progress.epoch,
            metrics=dict(progress.metrics),
            rng={
                **rng_states(),
                "data_order": {"seed": self.seed, "epoch": progress.epoch, "batches_done": progress.batches_done},
            },
            train_seconds=self.budget.elapsed(),
            class_weights=self.class_weights.cpu() if self.class_weights is not None else None,
            copied_parameters=self.copied,
            log_events=self.metrics_log.events,
        )

    def restore(self, state: TrainState) -> None:
        """Continue from ``state``: VidsegError if it is another run's (model, classes, seed, fixed settings)."""
        config, num_classes = self.config, self.label_set.num_classes
        if state.model_name != config.model.name or state.num_classes != num_classes:
            raise VidsegError(
                f"resume: the checkpoint holds {state.model_name} with {state.num_classes} classes but the "
                f"config asks for {config.model.name} with {num_classes}; resume with the run's own config"
            )
        data_order = state.data_order
        if data_order["seed"] != self.seed:
            raise VidsegError(
                f"resume: the run was seeded with {data_order['seed']} but the config says train.seed={self.seed}"
            )
        refuse_resume_changes(state.config or {}, config_to_dict(config), self.run_dir.path)
        self.model.load_state_dict(state.model)
        # The hyperparameters of this config, not the stored ones, must drive the rest of the run.
        settings = [{key: group[key] for key in OPTIMIZER_SETTINGS} for group in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(state.optimizer)  # type: ignore[arg-type]  # a training checkpoint
        except ValueError as error:
            raise VidsegError(f"resume: the optimizer state does not fit this config ({error})") from error
        for group, setting in zip(self.optimizer.param_groups, settings):
            group.update(setting)
            group["initial_lr"] = setting["lr"]
        self.schedule.load_state_dict(state.scheduler)  # type: ignore[arg-type]  # a training checkpoint
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self.progress = Progress(
            step=state.step or 0,
            epoch=state.epoch or 0,
            batches_done=data_order["batches_done"],
            best_miou=state.metrics.get("best_miou", -math.inf),
            metrics=state.metrics,
        )
        self.budget.earlier_seconds = state.train_seconds
        restore_rng_states(state.rng)  # type: ignore[arg-type]  # a training checkpoint

    def save(self, name: str) -> None:
        """Write checkpoint ``name`` (rank 0's BatchNorm statistics: each process updated its own)."""
        distributed.broadcast_buffers(self.model)
        self.run_dir.write_checkpoint(name, self.state())

    def save_last(self, keep_copy: bool = False) -> None:
        """Write ``last.pt`` (and with ``keep_copy`` a ``step-NNNNNNN.pt``) unless nothing changed since."""
        progress = self.progress
        where = (progress.step, progress.epoch, progress.batches_done, progress.metrics.get("val_step"))
        if where == self.last_saved:
            return
        self.save("last.pt")
        if keep_copy:
            self.save(f"step-{progress.step:07d}.pt")
        self.last_saved = where

    # ---------------------------------------------------------------------------------------------- the loop

    def run(self) -> TrainResult:
        """Train until a budget is spent or SIGTERM asks to stop; the last checkpoint is written either way."""
        progress = self.progress
        previous_handler = self._catch_sigterm()
        self.bar = self._progress_bar()
        self.budget.start_session()
        try:
            stopped_by = StopReason.BUDGET if self.budget_spent() else None
            while stopped_by is None:
                stopped_by = train_one_epoch(self)
                if stopped_by is None:  # the epoch is complete
                    self.end_epoch()
                    if self.budget_spent():
                        stopped_by = StopReason.BUDGET
            if stopped_by is StopReason.BUDGET and self.evaluates and progress.metrics.get("val_step") != progress.step:
                self.validate()
            self.save_last()
            self.metrics_log.write(
                {"event": "stop", "step": progress.step, "epoch": progress.epoch, "reason": stopped_by.value}
            )
        finally:
            if self.bar is not None:
                self.bar.close()
            self.metrics_log.close()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        if stopped_by is StopReason.SIGTERM:
            self.log(
                f"stopped by SIGTERM at step {progress.step}; checkpoint {self.run_dir.path / 'last.pt'} written; "
                f"continue with: vidseg train --resume {self.run_dir.path}"
            )
        else:
            self.log(self._stop_summary())
        return TrainResult(progress.step, progress.epoch, stopped_by, dict(progress.metrics), self.run_dir.path)

    def budget_spent(self) -> bool:
        return self.budget.spent(self.progress.step, self.progress.epoch)

    def end_epoch(self) -> None:
        progress = self.progress
        progress.epoch += 1
        progress.batches_done = 0
        every = self.config.eval.every_epochs
        if every and progress.epoch % every == 0:
            self.validate()
        self.save_last()

    def epoch_loader(self) -> tuple[torch.utils.data.DataLoader, int]:
        """The loader of the rest of the current epoch (from ``progress.batches_done``) and the epoch's number
        of micro-batches."""
        config, ctx, progress = self.config, self.ctx, self.progress
        batches = epoch_batches(
            len(self.train_set), progress.epoch, self.seed, config.data.batch_size, ctx.rank, ctx.world_size
        )
        self.train_set.epoch = progress.epoch
        loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_sampler=batches[progress.batches_done :],
            num_workers=config.data.num_workers,
            pin_memory=ctx.device.type == "cuda",
            # Worker seeds come from here, not from the global RNG; samples do not use them anyway.
            generator=torch.Generator().manual_seed(self.seed + progress.epoch),
        )
        return loader, len(batches)

    def micro_step(self, batch: dict, group_size: int, sync: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch (gradients scaled by 1 / ``group_size``); its loss."""
        frames = batch["frames"].to(self.ctx.device, non_blocking=True)
        encoder_grad_scale = None
        if self.config.loss.corrupted_encoder_gradient != 1.0:
            corrupted = batch["corruption"].to(self.ctx.device) > 0
            encoder_grad_scale = torch.where(corrupted, self.config.loss.corrupted_encoder_gradient, 1.0)
        # Under DDP, gradients are all-reduced only on the last micro-batch of an accumulation group.
        gradient_sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.ctx.distributed and not sync:
            assert isinstance(self.clip_module, nn.parallel.DistributedDataParallel)  # wrapped in __init__
            gradient_sync = self.clip_module.no_sync()
        with gradient_sync:
            with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.clip_module(frames, encoder_grad_scale)
            if isinstance(logits, tuple):  # output memory trained apart: the gate on the blend, the network on its own
                logits, own = logits
                loss = self.criterion(logits, batch) + self.criterion(own, batch)
            else:
                loss = self.criterion(logits, batch)
            scaled = loss / group_size
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()
        return loss

    def optimizer_step(self, step_loss: torch.Tensor) -> tuple[float, StopReason | None]:
        """Check the loss, step the optimizer and the schedule; return the loss (mean over processes) and why
        training must stop now (None to go on)."""
        config, progress = self.config, self.progress
        local_loss = step_loss.item()
        report = StepReport(
            loss=local_loss,
            nonfinite=float(not math.isfinite(local_loss)),
            stop_requested=float(self.stop_requested),
            out_of_time=float(self.budget.out_of_time()),
        ).summed_over_processes(self.ctx.device)
        loss_value = report.loss / self.ctx.world_size
        if report.nonfinite > 0:
            self._stop_on_nonfinite(loss_value if not math.isfinite(loss_value) else local_loss)
        # The rate of a step is the schedule's value at the progress the step completes (never 0 in warm-up).
        self.schedule.set_progress(self.budget.progress(progress.step + 1))
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if config.optim.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        progress.step += 1
        steps_spent = self.budget.steps is not None and progress.step >= self.budget.steps
        if report.out_of_time > 0 or steps_spent:
            return loss_value, StopReason.BUDGET
        if report.stop_requested > 0:
            return loss_value, StopReason.SIGTERM
        return loss_value, None

    def _stop_on_nonfinite(self, value: float) -> None:
        progress = self.progress
        step = progress.step + 1
        self.metrics_log.write({"event": "nonfinite", "step": step, "epoch": progress.epoch, "loss": value})
        newest = self.run_dir.newest_checkpoint_step
        if newest is not None:
            kept = f"the run's checkpoints in {self.run_dir.path} (the newest at step {newest}) are kept"
        else:
            kept = "no checkpoint had been written yet"
        raise VidsegError(
            f"the training loss became {value} at step {step} (epoch {progress.epoch}, micro-batch "
            f"{progress.batches_done} of the epoch); training stopped and {kept}. Lower optim.lr, set "
            "optim.grad_clip, or check the data for bad labels"
        )

    def _stop_summary(self) -> str:
        """Why a run that used up its budget stopped, and which checkpoint is best."""
        progress, path = self.progress, self.run_dir.path
        spent = self.budget.spent_parts(progress.step, progress.epoch)
        why = f"stopped at step {progress.step} (epoch {progress.epoch}): budget {' and '.join(spent) or 'reached'}"
        best_step = progress.metrics.get("best_step")
        if best_step is not None:
            best = (
                f"best checkpoint: {path / 'best.pt'} (validation mIoU {progress.best_miou:.4f} at step "
                f"{best_step})"
            )
        elif self.evaluates:
            best = f"no validation mIoU was defined, so there is no best.pt; last: {path / 'last.pt'}"
        else:
            best = f"no validation (eval.every_epochs and eval.every_steps are 0); last: {path / 'last.pt'}"
        return f"{why}; {best}"

    # ----------------------------------------------------------------------------------------- eval and logs

    def validate(self) -> None:
        progress = self.progress
        # Each process updated its BatchNorm statistics on its own batches; evaluate (and save) rank 0's.
        distributed.broadcast_buffers(self.model)
        results = evaluate_model(
            self.model,
            self.val_set,
            device=self.ctx.device,
            amp="bf16" if self.config.train.amp == "bf16" else "off",
            batch_size=self.config.eval.batch_size,
            num_workers=self.config.data.num_workers,
            protocol=self.config.eval.protocol,
            tc=self.config.eval.tc,
            per_position=self.config.eval.per_position,
            mode=self.config.eval.mode,
            score_at=self.config.eval.score_at,
            label_set=self.label_set,
            progress=self.bar is not None and not self.bar.disable,
            state_stride=self.config.eval.state_stride,
        )
        self.model.train()
        miou = results.miou
        improved = miou is not None and miou > progress.best_miou
        if miou is not None and improved:
            progress.best_miou = miou
            progress.metrics["best_step"] = progress.step
        figures = results.to_dict()  # checkpoints and metrics.jsonl keep the results' JSON form
        progress.metrics.update({"val": figures, "val_step": progress.step, "best_miou": progress.best_miou})
        event = {"event": "eval", "step": progress.step, "epoch": progress.epoch}
        event.update({key: value for key, value in figures.items() if not isinstance(value, (list, dict))})
        self.metrics_log.write(event)
        shown = "undefined" if miou is None else f"{miou:.4f}"
        self.say(f"step {progress.step}: validation mIoU {shown} (best {progress.best_miou:.4f})")
        if improved:
            self.save("best.pt")

    def log_train(self, window: TrainWindow) -> None:
        progress = self.progress
        seconds = max(time.monotonic() - window.start, 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        event = {
            "event": "train",
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": window.loss / max(window.steps, 1),
            "lr": lr,
            "frames_per_s": window.frames / seconds,
            "elapsed_s": self.budget.elapsed(),
        }
        progress.metrics["train"] = event
        self.metrics_log.write(event)
        if self.bar is not None and not self.bar.disable:
            postfix = {"loss": f"{event['loss']:.4f}", "lr": f"{lr:.2e}", "frames/s": f"{event['frames_per_s']:.1f}"}
            minutes_left = self.budget.minutes_left()
            if self.bar.total is None and minutes_left is not None:
                postfix["left"] = f"{minutes_left:.1f} min"
            self.bar.set_postfix(postfix, refresh=False)
        else:
            self.log(
                f"step {progress.step} epoch {progress.epoch} loss {event['loss']:.4f} lr {lr:.2e} "
                f"{event['frames_per_s']:.1f} frames/s"
            )

    def say(self, message: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(message)
        else:
            self.log(message)

    def _progress_bar(self) -> tqdm[Any] | None:
        if not self.ctx.is_main:
            return None
        return tqdm(
            total=self.budget.total_steps(),
            initial=self.progress.step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=None,  # quiet when stderr is not a terminal
        )

    def _catch_sigterm(self):
        def request_stop(signum, frame):
            self.stop_requested = True

        try:
            return signal.signal(signal.SIGTERM, request_stop)
        except ValueError:  # not the main thread: signals stay with the caller
            return None


@dataclass
class TrainWindow:
    """What happened since the last ``train`` log line."""

    loss: float = 0.0
    steps: int = 0
    frames: int = 0
    start: float = field(default_factory=time.monotonic)


def train_one_epoch(trainer: Trainer) -> StopReason | None:
    """Train to the end of the epoch (returns None) or until training must stop (returns why).

    Micro-batches are grouped by ``optim.accumulate`` into optimizer steps; after a step it logs, evaluates
    (``eval.every_steps``) and writes ``last.pt`` when ``checkpoint_due`` says so.
    """
    config, progress = trainer.config, trainer.progress
    accumulate = config.optim.accumulate
    loader, num_batches = trainer.epoch_loader()
    trainer.model.train()
    step_loss = torch.zeros((), dtype=torch.float64, device=trainer.ctx.device)
    window = TrainWindow()
    for batch in loader:
        index = progress.batches_done
        group_start = index - index % accumulate
        group_size = min(accumulate, num_batches - group_start)
        last_of_group = index == group_start + group_size - 1
        loss = trainer.micro_step(batch, group_size, sync=last_of_group)
        step_loss += loss.detach() / group_size
        window.frames += batch["frames"].shape[0] * batch["frames"].shape[1] * trainer.ctx.world_size
        progress.batches_done += 1
        if not last_of_group:
            continue
        loss_value, stop = trainer.optimizer_step(step_loss)
        step_loss.zero_()
        window.loss += loss_value
        window.steps += 1
        if progress.step % config.train.log_every == 0 or stop:
            trainer.log_train(window)
            window = TrainWindow()
        if trainer.bar is not None:
            trainer.bar.update(1)
        evaluated = bool(config.eval.every_steps and progress.step % config.eval.every_steps == 0)
        if evaluated:
            trainer.validate()
        write_last, keep_copy = checkpoint_due(progress.step, evaluated, config.train)
        if write_last:
            trainer.save_last(keep_copy=keep_copy)
        if stop is not None:
            return stop
    return None


def _silent(message: str) -> None:
    pass

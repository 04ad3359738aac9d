"""The training loop: one readable loop for a single process and for DDP under ``torchrun``.

``train(config, run_dir)`` trains the config's model and writes the run directory:
  * ``config.yaml``: the resolved config;
  * ``metrics.jsonl``: one JSON object per event (``train`` log lines, ``eval`` results, ``stop``);
  * ``last.pt`` and ``best.pt`` (by validation mIoU), optional ``step-NNNNNNN.pt``; every checkpoint holds
    the model, optimizer, schedule, step/epoch, config, metrics, RNG states and the data order, so that
    ``train(config, run_dir, resume=True)`` continues exactly where it stopped.

Exact resume rests on three choices: each sample's random draws depend only on (seed, epoch, index), not on
a worker's RNG stream; the epoch's sample order is a pure function of (seed, epoch); and checkpoints are taken
at optimizer-step boundaries, recording how many micro-batches of the epoch were consumed.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward
from tqdm import tqdm

from vidseg import checkpoint as ckpt
from vidseg import distributed
from vidseg.config import Config, config_from_dict, config_to_dict, dump_config, load_config
from vidseg.data.clips import ClipDataset, open_dataset
from vidseg.data.corrupt import CorruptedClips, Corruption
from vidseg.data.labels import IGNORE_INDEX
from vidseg.data.mix import CutMixClips
from vidseg.data.transforms import MEAN, STD, ClipTransform
from vidseg.errors import VidsegError
from vidseg.evaluate import evaluate_model
from vidseg.fileio import (
    atomic_write_text,
    check_outputs_spare_inputs,
    exclusive_lock,
    explained_write_errors,
    make_folder,
    remove_dead_temporaries,
)
from vidseg.metrics import all_reduce_sum, nan_to_none
from vidseg.models import build_model
from vidseg.models.inference import cpu_has_fast_bf16
from vidseg.models.temporal import ConvRNN, zero_input_path

if TYPE_CHECKING:
    from vidseg.models import RecurrentUNet

LOG_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
RUN_FILES = (CONFIG_FILE, LOG_FILE, "last.pt", "best.pt")


# ------------------------------------------------------------------------------------------------ data


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose every sample draws its randomness from a seed made of (seed, epoch, index).

    The random window position, frame stride, crop and flip of a sample are then the same whichever worker
    loads it and whether or not training was interrupted. Uses the ``dataset[(index, seed)]`` protocol of
    ``CityscapesSequences``.
    """

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        sample_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1, np.uint64)[0]
        return self.dataset[(index, int(sample_seed) % 2**63)]


def epoch_batches(
    num_samples: int, epoch: int, seed: int, batch_size: int, rank: int, world_size: int
) -> list[list[int]]:
    """This process's micro-batches (lists of sample indices) for ``epoch``: a pure function of its arguments.

    The order is a DistributedSampler's (shuffled with seed + epoch, padded by repetition so that every process
    gets the same number of samples).
    """
    sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        range(num_samples),  # type: ignore[arg-type]  # the sampler only takes len() of its "dataset"
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]


def build_datasets(config: Config, with_val: bool = True):
    """The training dataset (random windows and augmentation) and the validation dataset (deterministic), of
    any layout (``data.layout``); both read their labels in ``data.label_set`` (None: the layout's default)."""
    data = config.data
    size = (data.size[0], data.size[1])
    scale = (data.scale[0], data.scale[1])
    scaled = scale != (1.0, 1.0)
    train_transform = ClipTransform(size, scale_range=scale if scaled else None, crop=scaled, hflip=data.hflip)
    stride = tuple(data.frame_stride) if isinstance(data.frame_stride, list) else data.frame_stride
    train_set: ClipDataset | CutMixClips | CorruptedClips
    val_set: ClipDataset | CorruptedClips
    try:
        train_set = open_dataset(
            data.root,
            data.train_split,
            num_frames=data.num_frames,
            gt_position=data.gt_position,
            frame_stride=stride,
            transform=train_transform,
            layout=data.layout,
            label_set=data.label_set,
            skip_missing=data.skip_missing,
            cache=data.cache,
        )
    except ValueError as error:  # a window that cannot fit the snippets
        raise VidsegError(f"data (num_frames, gt_position, frame_stride) of the training split: {error}") from None
    if data.mixup.kind == "cutmix" and data.mixup.prob > 0:  # mixed clean, then corrupted per frame
        train_set = CutMixClips(train_set, data.mixup.prob, data.mixup.alpha)
    corruption = None
    if data.corrupt.rate > 0:  # the "-C" variant: corrupted frames, drawn anew per sample in training
        corruption = Corruption(data.corrupt.rate, tuple(data.corrupt.kinds), data.corrupt.seed)
        train_set = CorruptedClips(train_set, corruption, deterministic=False)
    if not with_val:
        return train_set, None
    try:
        val_set = open_dataset(
            data.root,
            data.val_split,
            num_frames=config.eval.num_frames,
            gt_position=config.eval.gt_position,
            transform=ClipTransform(size, resize_labels=config.eval.score_at == "working"),
            layout=data.layout,
            label_set=data.label_set,
            skip_missing=data.skip_missing,
            cache=data.cache,
        )
    except ValueError as error:
        raise VidsegError(f"eval (num_frames, gt_position) of the validation split: {error}") from None
    if corruption is not None:
        val_set = CorruptedClips(val_set, corruption, deterministic=True)
    if config.eval.max_samples is not None and config.eval.max_samples < len(val_set):
        evenly_spaced = np.linspace(0, len(val_set) - 1, config.eval.max_samples).round().astype(int)
        return train_set, torch.utils.data.Subset(val_set, evenly_spaced.tolist())
    return train_set, val_set


def class_frequency_weights(
    dataset,
    num_classes: int,
    frames: str,
    max_samples: int,
    num_workers: int,
    ctx: distributed.Context,
    class_names: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """Class weights 1 / sqrt(frequency) over the labels the loss sees, normalised to mean 1 over seen classes.

    Counted on up to ``max_samples`` evenly spaced samples (0 = all), split among the processes. Classes never
    seen get the largest weight, so that a class missing from the counted subset is not switched off; ``warn``
    is called with a message naming them (``class_names``).
    """
    total = len(dataset)
    chosen = np.linspace(0, total - 1, max_samples).round().astype(int) if 0 < max_samples < total else range(total)
    mine = [int(chosen[i]) for i in distributed.shard(len(chosen), ctx.rank, ctx.world_size)]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, mine), batch_size=None, num_workers=num_workers
    )
    counts = torch.zeros(num_classes, dtype=torch.float64)
    for sample in loader:
        labels = sample["labels"]
        if frames == "annotated":
            labels = labels[sample["gt_index"]]
        labels = labels[labels != IGNORE_INDEX].long()
        counts += torch.bincount(labels, minlength=num_classes)[:num_classes].double()
    counts = all_reduce_sum(counts.to(ctx.device)).cpu()
    if counts.sum() == 0:
        raise VidsegError(
            f"loss.class_weights: the {len(chosen)} counted training samples hold no labelled pixel; "
            "check data.root and data.label_set"
        )
    seen = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[seen] = (counts[seen] / counts.sum()).rsqrt()
    weights[seen] /= weights[seen].mean()
    weights[~seen] = weights[seen].max()
    if warn is not None and not bool(seen.all()):
        names = class_names or [str(i) for i in range(num_classes)]
        absent = ", ".join(names[i] for i in range(num_classes) if not seen[i])
        warn(
            f"warning: classes absent from the labels of the {len(chosen)} counted training samples: {absent}; "
            f"they get the largest weight ({float(weights[seen].max()):.2f}) in case they occur elsewhere. If "
            "they never occur the model cannot learn them: check data.label_set, or count every sample with "
            "loss.class_weight_samples=0"
        )
    return weights.float()


# ------------------------------------------------------------------------------------------- the loss


def segmentation_loss(
    logits: torch.Tensor, batch: dict, frames: str, class_weights: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy (ignore 255, optional class weights) on the annotated frame or on every labelled frame.

    Args:
        logits: ``[B, T, C, H, W]``.
        batch: a collated sample batch with ``labels [B, T, H, W]``, ``labelled [B, T]``, ``gt_index [B]``.
        frames: ``"annotated"`` or ``"labelled"``.
        class_weights: ``[C]`` or None.

    Returns:
        The mean over counted pixels (weighted mean with class weights); 0 if no pixel counts.
    """
    labels = batch["labels"].to(logits.device, non_blocking=True)
    if frames == "annotated":
        rows = torch.arange(logits.shape[0], device=logits.device)
        gt_index = batch["gt_index"].to(logits.device)
        logits, labels = logits[rows, gt_index], labels[rows, gt_index]
    else:
        labelled = batch["labelled"].to(logits.device)
        logits, labels = logits[labelled], labels[labelled]
    logits = logits.float()
    total = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=IGNORE_INDEX, reduction="sum")
    counted = labels != IGNORE_INDEX
    if class_weights is None:
        denominator = counted.sum().to(total.dtype)
    else:
        denominator = class_weights[labels[counted]].sum()
    # A window without labelled pixels contributes nothing (rather than 0 / 0).
    return total / denominator.clamp(min=1e-12)


# ------------------------------------------------------------------------------------ the LR schedule


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


# --------------------------------------------------------------------------- model set-up and forward


class ClipForward(nn.Module):
    """The clip forward of a RecurrentUNet as a module (what DDP wraps), optionally recomputing each step.

    With ``checkpoint_steps`` the activations of a time step are not kept for the backward pass; only each
    step's input frame and state are, and the step is run again during backward.
    """

    def __init__(self, model: RecurrentUNet, checkpoint_steps: bool = False, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.checkpoint_steps = checkpoint_steps
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        state = None
        outputs = []
        for t in range(frames.shape[1]):
            frame = frames[:, t].contiguous(memory_format=self.memory_format)
            if self.checkpoint_steps and torch.is_grad_enabled():
                logits, state = recompute_in_backward(
                    RecomputeOnce(self.model.step, self.model), frame, state, use_reentrant=False
                )
            else:
                logits, state = self.model.step(frame, state)
            outputs.append(logits)
        return torch.stack(outputs, dim=1)


class RecomputeOnce:
    """A function for ``torch.utils.checkpoint`` whose second call (the recomputation in backward) leaves the
    BatchNorm running statistics as they were, so that checkpointing does not count every batch twice."""

    def __init__(self, function: Callable, module: nn.Module):
        self.function = function
        self.module = module
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            return self.function(*args)
        with preserved_batchnorm_statistics(self.module):
            return self.function(*args)


@contextlib.contextmanager
def preserved_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Restore the BatchNorm running statistics of ``module`` after the block (outputs are unaffected: in
    training mode BatchNorm normalises with batch statistics)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    buffers = [buffer for m in norms for buffer in m.buffers()]
    saved = [buffer.clone() for buffer in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)


def checkpoint_stages(model: RecurrentUNet) -> None:
    """Recompute every encoder stage, temporal unit and decoder stage of ``model`` in the backward pass.

    Only the instances' ``forward`` is wrapped; parameter names and the state dict do not change.
    """
    for stage in [*model.encoder, *model.temporal, *model.decoder]:
        plain_forward = stage.forward

        def forward(*args, _plain=plain_forward, _stage=stage):
            if not torch.is_grad_enabled():
                return _plain(*args)
            return recompute_in_backward(RecomputeOnce(_plain, _stage), *args, use_reentrant=False)

        stage.forward = forward


def warm_start(model: RecurrentUNet, path: str, init_temporal: str, log: Callable[[str], None]) -> list[str]:
    """Copy every weight of checkpoint ``path`` whose name and shape match; return the copied parameter names.

    With ``init_temporal="identity"`` cRNN units then start as C_x = identity (centre tap 1), C_h = 0 and zero
    biases: on the non-negative features of vanilla and ResNet blocks the unit passes its input through
    unchanged, so the model reproduces the logits of the per-frame model whose weights it copied.
    """
    source = ckpt.load_checkpoint(path)
    target = model.state_dict()
    matching = {
        name: value for name, value in source["model"].items() if name in target and target[name].shape == value.shape
    }
    parameter_names = {name for name, _ in model.named_parameters()}
    copied = sorted(name for name in matching if name in parameter_names)
    if not copied:
        raise VidsegError(
            f"train.init_from: no weight of {path} (model {source['model_name']}) matches the model to train by "
            "name and shape; warm-start from a checkpoint of the same block type and size"
        )
    model.load_state_dict(matching, strict=False)
    kept = sorted(set(target) - set(matching))
    log(
        f"warm start: copied {len(matching)} of {len(target)} tensors from {path} ({source['model_name']}); "
        f"{len(kept)} keep their fresh values" + (f", e.g. {', '.join(kept[:3])}" if kept else "")
    )
    if init_temporal == "identity":
        identity_init_temporal(model)
    return copied


@torch.no_grad()
def identity_init_temporal(model: RecurrentUNet) -> None:
    """Set every cRNN unit to y_t = ReLU(x_t): C_x = identity (centre tap), C_h = 0, zero biases; residual units
    (cRNN or cGRU) to a zero input path (their state stays 0, their skip is x)."""
    if model.temporal_residual:
        for cell in model.temporal:
            zero_input_path(cell)
        return
    units = [unit for unit in model.temporal if isinstance(unit, ConvRNN)]
    if not units:
        raise VidsegError("train.init_temporal: 'identity' needs a model with cRNN units (*-crnn-*)")
    for unit in units:
        weight = unit.input_conv.weight
        weight.zero_()
        centre_h, centre_w = weight.shape[2] // 2, weight.shape[3] // 2
        weight[:, :, centre_h, centre_w] = torch.eye(weight.shape[0], dtype=weight.dtype)
        # The cRNN convolutions are built with biases.
        assert unit.input_conv.bias is not None and unit.hidden_conv.bias is not None
        unit.input_conv.bias.zero_()
        unit.hidden_conv.weight.zero_()
        unit.hidden_conv.bias.zero_()


def build_optimizer(model: nn.Module, config: Config, copied: list[str]) -> torch.optim.Optimizer:
    """Adam or AdamW; weights copied by a warm start get ``optim.copied_lr_scale`` x the learning rate."""
    optim = config.optim
    copied_set = set(copied)
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if n not in copied_set], "lr": optim.lr}]
    if copied_set:
        groups.append({"params": [p for n, p in named if n in copied_set], "lr": optim.lr * optim.copied_lr_scale})
    groups = [group for group in groups if group["params"]]
    optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return optimizer_class(
        groups, lr=optim.lr, betas=(optim.betas[0], optim.betas[1]), eps=optim.eps, weight_decay=optim.weight_decay
    )


# What a resumed run takes from its (possibly changed) config: the optimizer's hyperparameters, the schedule
# (optim.schedule, warmup_fraction, final_lr_scale: LRSchedule is built from the config and only its progress is
# restored), optim.grad_clip, the budget, logging, checkpointing, evaluation and the device. Settings that
# decide what each step computes from which samples cannot change without breaking exact resume; a changed one
# is refused (keys, or whole sections ending in ".").
OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay")
RESUME_FIXED = (
    "model.", "data.", "loss.", "optim.name", "optim.accumulate", "train.seed", "train.amp", "train.init_from",
    "train.init_temporal",
)
RESUME_FREE = ("data.root", "data.cache", "data.num_workers")
"""Exceptions to RESUME_FIXED: where the same data is read from, and how fast."""


def refuse_resume_changes(stored: dict, current: dict, run_dir: Path) -> None:
    """VidsegError listing the settings of ``RESUME_FIXED`` that differ between the run's stored config and the
    one it is resumed with (keys that the stored config lacks, from older versions, are not compared)."""
    changed = [
        f"{key} {old!r} -> {new!r}"
        for key, old, new in _differences(stored, current)
        if key.startswith(RESUME_FIXED) and key not in RESUME_FREE
    ]
    if changed:
        raise VidsegError(
            f"resume {run_dir}: {', '.join(changed)} cannot change in a resumed run: the model, the data, the "
            "loss, the optimizer type, accumulation, the seed, amp and the warm start decide what each step "
            "computes, so the run would no longer be the one its checkpoints record. Resume with the old values, "
            "or start a new run (vidseg train CONFIG --out NEW_DIR --set train.init_from=OLD_DIR/last.pt)"
        )


def _differences(before: dict, after: dict, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    for key, value in after.items():
        if key not in before:
            continue
        old = before[key]
        if isinstance(value, dict) and isinstance(old, dict):
            yield from _differences(old, value, f"{prefix}{key}.")
        elif old != value:
            yield f"{prefix}{key}", old, value


# ------------------------------------------------------------------------------------------ RNG states


def rng_states() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) RNG states as tensors and plain data, as a checkpoint holds them."""
    version, internal, gauss = random.getstate()
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)  # the legacy form is a tuple
    states: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` saved (or the tuples that checkpoints of earlier versions hold)."""
    python, numpy_state = states["python"], states["numpy"]
    if isinstance(python, dict):
        python = (python["version"], tuple(python["state"].tolist()), python["gauss"])
    random.setstate(python)
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        numpy_state = ("MT19937", keys, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


# -------------------------------------------------------------------------------------- run directory


def find_resume_checkpoint(run_dir: Path, log: Callable[[str], None]) -> tuple[Path, dict]:
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
            payload = ckpt.load_checkpoint(path)
            missing = [
                key for key in ("config", "optimizer", "scheduler", "step", "epoch", "rng") if key not in payload
            ]
            if missing:
                raise VidsegError(f"checkpoint {path} is not a training checkpoint (it lacks {', '.join(missing)})")
        except VidsegError as error:
            problems.append(str(error))
            continue
        if problems:
            log(f"resume: skipped {len(problems)} unusable checkpoint(s): " + " | ".join(problems))
            log(f"resume: falling back to {path} (step {payload['step']})")
        return path, payload
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
            try:
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


# ------------------------------------------------------------------------------------------- training


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    """Micro-batches of ``epoch`` already consumed by this process."""
    seconds: float = 0.0
    """Training time of the earlier sessions of this run."""
    best_miou: float = -math.inf
    metrics: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    step: int
    epoch: int
    stopped_by: str
    """``budget`` or ``sigterm``."""
    metrics: dict
    run_dir: Path


class Trainer:
    """Everything one training run needs; ``run()`` executes it. Build it through ``train()``."""

    def __init__(self, config: Config, run_dir: Path, ctx: distributed.Context, resume: bool, log: Callable):
        self.config = config
        self.run_dir = Path(run_dir)
        self.ctx = ctx
        self.log = log if ctx.is_main else _silent
        train_cfg = self.train_cfg = config.train
        self.seed = train_cfg.seed
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)

        payload = self._on_every_process(lambda: self._starting_point(resume))
        if payload is not None:
            self.log(f"resuming {self.run_dir} at step {payload['step']}")

        train_set, self.val_set = build_datasets(config, with_val=self._evaluates())
        self.label_set = train_set.label_set
        self.num_classes = self.label_set.num_classes
        self.log(train_set.index.describe())
        self.train_set = SeededSamples(train_set, self.seed)
        self.batches_per_epoch = len(
            epoch_batches(len(train_set), 0, self.seed, config.data.batch_size, ctx.rank, ctx.world_size)
        )
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.optim.accumulate)

        self.model = build_model(
            config.model.name,
            num_classes=self.num_classes,
            temporal_residual=config.model.temporal_residual,
            state_dropout=config.model.state_dropout,
            warp_state=config.model.warp_state,
        )
        self.copied: list[str] = []
        if payload is not None:
            self.copied = list(payload.get("copied_parameters", []))
        elif train_cfg.init_from:
            self.copied = warm_start(self.model, train_cfg.init_from, train_cfg.init_temporal, self.log)
        elif train_cfg.init_temporal == "identity":
            identity_init_temporal(self.model)
        self.model.to(ctx.device)
        if train_cfg.channels_last:
            # Module.to takes memory_format (a documented keyword) but its stub overloads omit it.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if train_cfg.activation_checkpointing == "stage":
            checkpoint_stages(self.model)

        self.optimizer = build_optimizer(self.model, config, self.copied)
        self.schedule = LRSchedule(
            self.optimizer, config.optim.schedule, config.optim.warmup_fraction, config.optim.final_lr_scale
        )
        if train_cfg.amp == "fp16" and ctx.device.type != "cuda":
            raise VidsegError("train.amp: fp16 needs a CUDA device; on CPU use 'bf16' or 'off'")
        if train_cfg.amp == "bf16" and ctx.device.type == "cpu" and not cpu_has_fast_bf16():
            self.log(
                "warning: train.amp=bf16 on a CPU without native bf16 convolutions (AVX512-BF16 or AMX): training "
                "runs several times slower than float32 here; --set train.amp=off is faster"
            )
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train_cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if train_cfg.amp == "fp16" else None

        self.progress = Progress()
        self.class_weights = self._class_weights(payload)
        if payload is not None:
            self._load_state(payload)

        # The clip forward, or its DDP wrapper.
        self.clip_module: nn.Module = ClipForward(
            self.model,
            checkpoint_steps=train_cfg.activation_checkpointing in ("step", "stage"),
            channels_last=train_cfg.channels_last,
        )
        if ctx.distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.clip_module = nn.parallel.DistributedDataParallel(self.clip_module, device_ids=device_ids)

        if ctx.is_main:
            make_folder(self.run_dir)
            remove_dead_temporaries(self.run_dir)  # left by a process killed while writing
            atomic_write_text(self.run_dir / CONFIG_FILE, dump_config(config))
        self.metrics_log = MetricsLog(
            self.run_dir, enabled=ctx.is_main, tensorboard=train_cfg.tensorboard, log=self.log
        )
        if payload is not None and payload.get("log_events") is not None:
            self.metrics_log.keep_first(payload["log_events"])
        self.stop_requested = False
        self.last_saved: tuple | None = None
        self.checkpoint_step = payload["step"] if payload is not None else None
        """Step of the newest checkpoint of the run."""
        self.session_start = time.monotonic()
        self.bar: tqdm[Any] | None = None

    # --------------------------------------------------------------------------------- set-up pieces

    def _starting_point(self, resume: bool) -> dict | None:
        """The checkpoint to resume from (the newest that loads), or None for a new run."""
        if resume:
            return find_resume_checkpoint(self.run_dir, self.log)[1]
        if (self.run_dir / "last.pt").exists():
            raise VidsegError(
                f"{self.run_dir} already holds a run (last.pt); continue it with --resume {self.run_dir}, "
                "or train into another directory with --out"
            )
        return None

    def _on_every_process(self, decide: Callable[[], Any]) -> Any:
        """Run ``decide`` on the main process only (it reads the run directory) and give every process its
        result, or raise its VidsegError everywhere, so that no process is left waiting for the others."""
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

    def _evaluates(self) -> bool:
        return self.config.eval.every_epochs > 0 or self.config.eval.every_steps > 0

    def _class_weights(self, payload: dict | None) -> torch.Tensor | None:
        setting = self.config.loss.class_weights
        if setting == "none":
            return None
        if isinstance(setting, list):
            if len(setting) != self.num_classes:
                raise VidsegError(
                    f"loss.class_weights: expected {self.num_classes} weights for label set "
                    f"{self.label_set.name!r}, found {len(setting)}"
                )
            weights = torch.tensor(setting, dtype=torch.float32)
        elif payload is not None and payload.get("class_weights") is not None:
            weights = payload["class_weights"]
        else:
            self.log("counting class frequencies of the training labels for loss.class_weights ...")
            weights = class_frequency_weights(
                self.train_set,
                self.num_classes,
                self.config.loss.frames,
                self.config.loss.class_weight_samples,
                self.config.data.num_workers,
                self.ctx,
                class_names=self.label_set.class_names,
                warn=self.log,
            )
            self.log("class weights: " + " ".join(f"{w:.2f}" for w in weights.tolist()))
        return weights.to(self.ctx.device)

    def _load_state(self, payload: dict) -> None:
        if payload["model_name"] != self.config.model.name or payload["num_classes"] != self.num_classes:
            raise VidsegError(
                f"resume: the checkpoint holds {payload['model_name']} with {payload['num_classes']} classes but the "
                f"config asks for {self.config.model.name} with {self.num_classes}; resume with the run's own config"
            )
        data_order = payload["rng"]["data_order"]
        if data_order["seed"] != self.seed:
            raise VidsegError(
                f"resume: the run was seeded with {data_order['seed']} but the config says train.seed={self.seed}"
            )
        refuse_resume_changes(payload.get("config") or {}, config_to_dict(self.config), self.run_dir)
        self.model.load_state_dict(payload["model"])
        # The hyperparameters of this config, not the stored ones, must drive the rest of the run.
        settings = [{key: group[key] for key in OPTIMIZER_SETTINGS} for group in self.optimizer.param_groups]
        try:
            self.optimizer.load_state_dict(payload["optimizer"])
        except ValueError as error:
            raise VidsegError(f"resume: the optimizer state does not fit this config ({error})") from error
        for group, setting in zip(self.optimizer.param_groups, settings):
            group.update(setting)
            group["initial_lr"] = setting["lr"]
        self.schedule.load_state_dict(payload["scheduler"])
        if self.scaler is not None and payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        self.progress = Progress(
            step=payload["step"],
            epoch=payload["epoch"],
            batches_done=data_order["batches_done"],
            seconds=payload.get("train_seconds", 0.0),
            best_miou=payload["metrics"].get("best_miou", -math.inf),
            metrics=payload["metrics"],
        )
        restore_rng_states(payload["rng"])

    # ------------------------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        progress = self.progress
        previous_handler = self._catch_sigterm()
        self.bar = self._progress_bar()
        self.session_start = time.monotonic()
        try:
            stopped_by = "budget" if self._budget_spent() else ""
            while not stopped_by:
                stopped_by = self._train_epoch()
                if not stopped_by:  # the epoch is complete
                    self._end_epoch()
                    if self._budget_spent():
                        stopped_by = "budget"
            if stopped_by == "budget" and self._evaluates() and progress.metrics.get("val_step") != progress.step:
                self._validate()
            self._save_last()
            self.metrics_log.write(
                {"event": "stop", "step": progress.step, "epoch": progress.epoch, "reason": stopped_by}
            )
        finally:
            if self.bar is not None:
                self.bar.close()
            self.metrics_log.close()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        if stopped_by == "sigterm":
            self.log(
                f"stopped by SIGTERM at step {progress.step}; checkpoint {self.run_dir / 'last.pt'} written; "
                f"continue with: vidseg train --resume {self.run_dir}"
            )
        else:
            self.log(self._stop_summary())
        return TrainResult(progress.step, progress.epoch, stopped_by, dict(progress.metrics), self.run_dir)

    def _train_epoch(self) -> str:
        """Train to the end of the epoch (returns "") or until training must stop (returns the reason)."""
        config, ctx, progress = self.config, self.ctx, self.progress
        accumulate = config.optim.accumulate
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
        self.model.train()
        step_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
        window = {"loss": 0.0, "steps": 0, "frames": 0, "start": time.monotonic()}
        for batch in loader:
            index = progress.batches_done
            group_start = index - index % accumulate
            group_size = min(accumulate, len(batches) - group_start)
            last_of_group = index == group_start + group_size - 1
            loss = self._micro_step(batch, group_size, sync=last_of_group)
            step_loss += loss.detach() / group_size
            window["frames"] += batch["frames"].shape[0] * batch["frames"].shape[1] * ctx.world_size
            progress.batches_done += 1
            if not last_of_group:
                continue
            loss_value, stop = self._optimizer_step(step_loss)
            step_loss.zero_()
            window["loss"] += loss_value
            window["steps"] += 1
            if progress.step % self.train_cfg.log_every == 0 or stop:
                self._log_train(window)
                window = {"loss": 0.0, "steps": 0, "frames": 0, "start": time.monotonic()}
            if self.bar is not None:
                self.bar.update(1)
            evaluate_now = config.eval.every_steps and progress.step % config.eval.every_steps == 0
            if evaluate_now:
                self._validate()
            periodic = self.train_cfg.checkpoint_every and progress.step % self.train_cfg.checkpoint_every == 0
            if periodic or evaluate_now:
                self._save_last(keep_copy=bool(periodic) and self.train_cfg.keep_checkpoints)
            if stop:
                return stop
        return ""

    def _end_epoch(self) -> None:
        progress = self.progress
        progress.epoch += 1
        progress.batches_done = 0
        every = self.config.eval.every_epochs
        if every and progress.epoch % every == 0:
            self._validate()
        self._save_last()

    def _micro_step(self, batch: dict, group_size: int, sync: bool) -> torch.Tensor:
        frames = batch["frames"].to(self.ctx.device, non_blocking=True)
        # Under DDP, gradients are all-reduced only on the last micro-batch of an accumulation group.
        gradient_sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.ctx.distributed and not sync:
            assert isinstance(self.clip_module, nn.parallel.DistributedDataParallel)  # wrapped in __init__
            gradient_sync = self.clip_module.no_sync()
        with gradient_sync:
            with torch.autocast(self.ctx.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.clip_module(frames)
            loss = segmentation_loss(logits, batch, self.config.loss.frames, self.class_weights)
            scaled = loss / group_size
            if self.scaler is not None:
                scaled = self.scaler.scale(scaled)
            scaled.backward()
        return loss

    def _optimizer_step(self, step_loss: torch.Tensor) -> tuple[float, str]:
        """Check the loss, step the optimizer and the schedule; return the loss (mean over processes) and why
        training must stop now ("" to go on)."""
        config, progress = self.config, self.progress
        over_time = self.train_cfg.minutes is not None and self._elapsed() >= self.train_cfg.minutes * 60
        local_loss = step_loss.item()
        # One collective per step carries the loss for logging and every process's reasons to stop.
        flags = torch.tensor(
            [local_loss, float(not math.isfinite(local_loss)), float(self.stop_requested), float(over_time)],
            dtype=torch.float64,
            device=self.ctx.device,
        )
        totals: list[float] = all_reduce_sum(flags).tolist()
        loss_value = totals[0] / self.ctx.world_size
        if totals[1] > 0:
            self._stop_on_nonfinite(loss_value if not math.isfinite(loss_value) else local_loss)
        # The rate of a step is the schedule's value at the progress the step completes (never 0 in warm-up).
        self.schedule.set_progress(self._budget_progress(progress.step + 1))
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
        if totals[3] > 0 or (self.train_cfg.steps is not None and progress.step >= self.train_cfg.steps):
            return loss_value, "budget"
        if totals[2] > 0:
            return loss_value, "sigterm"
        return loss_value, ""

    def _stop_on_nonfinite(self, value: float) -> None:
        progress = self.progress
        step = progress.step + 1
        self.metrics_log.write({"event": "nonfinite", "step": step, "epoch": progress.epoch, "loss": value})
        if self.checkpoint_step is not None:
            kept = f"the run's checkpoints in {self.run_dir} (the newest at step {self.checkpoint_step}) are kept"
        else:
            kept = "no checkpoint had been written yet"
        raise VidsegError(
            f"the training loss became {value} at step {step} (epoch {progress.epoch}, micro-batch "
            f"{progress.batches_done} of the epoch); training stopped and {kept}. Lower optim.lr, set "
            "optim.grad_clip, or check the data for bad labels"
        )

    def _stop_summary(self) -> str:
        """Why a run that used up its budget stopped, and which checkpoint is best."""
        train_cfg, progress = self.train_cfg, self.progress
        spent = []
        if train_cfg.steps is not None and progress.step >= train_cfg.steps:
            spent.append(f"train.steps={train_cfg.steps}")
        if train_cfg.epochs is not None and progress.epoch >= train_cfg.epochs:
            spent.append(f"train.epochs={train_cfg.epochs}")
        if train_cfg.minutes is not None and self._elapsed() >= train_cfg.minutes * 60:
            spent.append(f"train.minutes={train_cfg.minutes:g}")
        why = f"stopped at step {progress.step} (epoch {progress.epoch}): budget {' and '.join(spent) or 'reached'}"
        best_step = progress.metrics.get("best_step")
        if best_step is not None:
            best = (
                f"best checkpoint: {self.run_dir / 'best.pt'} (validation mIoU {progress.best_miou:.4f} at step "
                f"{best_step})"
            )
        elif self._evaluates():
            best = f"no validation mIoU was defined, so there is no best.pt; last: {self.run_dir / 'last.pt'}"
        else:
            best = f"no validation (eval.every_epochs and eval.every_steps are 0); last: {self.run_dir / 'last.pt'}"
        return f"{why}; {best}"

    def _budget_spent(self) -> bool:
        train_cfg, progress = self.train_cfg, self.progress
        return (
            (train_cfg.steps is not None and progress.step >= train_cfg.steps)
            or (train_cfg.epochs is not None and progress.epoch >= train_cfg.epochs)
            or (train_cfg.minutes is not None and self._elapsed() >= train_cfg.minutes * 60)
        )

    def _elapsed(self) -> float:
        return self.progress.seconds + time.monotonic() - self.session_start

    def _budget_progress(self, step: int) -> float:
        """How far training is through its budget after ``step`` steps, 0 ... 1 (the furthest of steps, epochs
        and time)."""
        train_cfg = self.train_cfg
        fractions = [0.0]
        if train_cfg.steps is not None:
            fractions.append(step / train_cfg.steps)
        if train_cfg.epochs is not None:
            fractions.append(step / (train_cfg.epochs * self.steps_per_epoch))
        if train_cfg.minutes is not None:
            fractions.append(self._elapsed() / (train_cfg.minutes * 60))
        return min(1.0, max(fractions))

    # -------------------------------------------------------------------------- eval, logs, saving

    def _validate(self) -> None:
        progress = self.progress
        # Each process updated its BatchNorm statistics on its own batches; evaluate (and save) rank 0's.
        distributed.broadcast_buffers(self.model)
        results = evaluate_model(
            self.model,
            self.val_set,
            device=self.ctx.device,
            amp="bf16" if self.train_cfg.amp == "bf16" else "off",
            batch_size=self.config.eval.batch_size,
            num_workers=self.config.data.num_workers,
            protocol=self.config.eval.protocol,
            tc=self.config.eval.tc,
            per_position=self.config.eval.per_position,
            mode=self.config.eval.mode,
            score_at=self.config.eval.score_at,
            label_set=self.label_set,
            progress=self.bar is not None and not self.bar.disable,
        ).to_dict()
        self.model.train()
        miou = results["miou"]
        improved = miou is not None and miou > progress.best_miou
        if improved:
            progress.best_miou = miou
            progress.metrics["best_step"] = progress.step
        progress.metrics.update({"val": results, "val_step": progress.step, "best_miou": progress.best_miou})
        event = {"event": "eval", "step": progress.step, "epoch": progress.epoch}
        event.update({key: value for key, value in results.items() if not isinstance(value, (list, dict))})
        self.metrics_log.write(event)
        shown = "undefined" if miou is None else f"{miou:.4f}"
        self._say(f"step {progress.step}: validation mIoU {shown} (best {progress.best_miou:.4f})")
        if improved:
            self._save("best.pt")

    def _log_train(self, window: dict) -> None:
        progress = self.progress
        seconds = max(time.monotonic() - window["start"], 1e-9)
        lr = self.optimizer.param_groups[0]["lr"]
        event = {
            "event": "train",
            "step": progress.step,
            "epoch": progress.epoch,
            "loss": window["loss"] / max(window["steps"], 1),
            "lr": lr,
            "frames_per_s": window["frames"] / seconds,
            "elapsed_s": self._elapsed(),
        }
        progress.metrics["train"] = event
        self.metrics_log.write(event)
        if self.bar is not None and not self.bar.disable:
            postfix = {"loss": f"{event['loss']:.4f}", "lr": f"{lr:.2e}", "frames/s": f"{event['frames_per_s']:.1f}"}
            if self.bar.total is None and self.train_cfg.minutes is not None:
                postfix["left"] = f"{max(0.0, self.train_cfg.minutes * 60 - self._elapsed()) / 60:.1f} min"
            self.bar.set_postfix(postfix, refresh=False)
        else:
            self.log(
                f"step {progress.step} epoch {progress.epoch} loss {event['loss']:.4f} lr {lr:.2e} "
                f"{event['frames_per_s']:.1f} frames/s"
            )

    def _say(self, message: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(message)
        else:
            self.log(message)

    def _progress_bar(self) -> tqdm[Any] | None:
        if not self.ctx.is_main:
            return None
        totals = [self.train_cfg.steps] if self.train_cfg.steps is not None else []
        if self.train_cfg.epochs is not None:
            totals.append(self.train_cfg.epochs * self.steps_per_epoch)
        return tqdm(
            total=min(totals) if totals else None,
            initial=self.progress.step,
            unit="step",
            desc="train",
            dynamic_ncols=True,
            disable=None,  # quiet when stderr is not a terminal
        )

    def _payload(self) -> dict:
        progress = self.progress
        return {
            "model_name": self.config.model.name,
            "num_classes": self.num_classes,
            "label_set": self.label_set.name,
            "label_set_spec": self.label_set.spec(),
            "working_size": list(self.config.data.size),
            "model": self.model.state_dict(),
            "normalization": _normalization(),
            "config": config_to_dict(self.config),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": progress.step,
            "epoch": progress.epoch,
            "metrics": dict(progress.metrics),
            "rng": {
                **rng_states(),
                "data_order": {"seed": self.seed, "epoch": progress.epoch, "batches_done": progress.batches_done},
            },
            "train_seconds": self._elapsed(),
            "class_weights": self.class_weights.cpu() if self.class_weights is not None else None,
            "copied_parameters": self.copied,
            "log_events": self.metrics_log.events,
        }

    def _save(self, name: str) -> None:
        distributed.broadcast_buffers(self.model)
        if self.ctx.is_main:
            ckpt.save_checkpoint(self.run_dir / name, self._payload())

    def _save_last(self, keep_copy: bool = False) -> None:
        progress = self.progress
        where = (progress.step, progress.epoch, progress.batches_done, progress.metrics.get("val_step"))
        if where == self.last_saved:
            return
        self._save("last.pt")
        if keep_copy:
            self._save(f"step-{progress.step:07d}.pt")
        self.last_saved = where
        self.checkpoint_step = progress.step

    def _catch_sigterm(self):
        def request_stop(signum, frame):
            self.stop_requested = True

        try:
            return signal.signal(signal.SIGTERM, request_stop)
        except ValueError:  # not the main thread: signals stay with the caller
            return None


def _silent(message: str) -> None:
    pass


def _normalization() -> dict:
    return {"mean": list(MEAN), "std": list(STD)}


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
            _lock_run_dir(Path(run_dir), config, ctx, resume, held)
            return Trainer(config, Path(run_dir), ctx, resume, log).run()
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
        distributed.shutdown()


def _lock_run_dir(
    run_dir: Path, config: Config, ctx: distributed.Context, resume: bool, held: contextlib.ExitStack
) -> None:
    """On the main process: check that the run's files spare its inputs and hold the run directory's lock
    (one writer per run: a second ``train --out`` or ``--resume`` on it fails naming this process); every
    process gets the main process's VidsegError."""
    error = None
    if ctx.is_main:
        try:
            outputs = [(f"run directory file {name}", run_dir / name) for name in RUN_FILES]
            inputs = [("data.root", config.data.root), ("train.init_from", config.train.init_from)]
            check_outputs_spare_inputs(outputs, inputs)
            if not resume or run_dir.is_dir():  # resume explains a missing run directory itself
                held.enter_context(exclusive_lock(run_dir, "training"))
        except VidsegError as failure:
            error = str(failure)
    error = distributed.broadcast_object(error)
    if error is not None:
        raise VidsegError(error)


def resume_config(run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The config of an existing run (its ``config.yaml``, else the newest checkpoint's), with overrides."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if path.is_file():
        return load_config(path, overrides)
    _, payload = find_resume_checkpoint(run_dir, lambda message: print(message, file=sys.stderr))
    return config_from_dict(payload["config"], source=f"the config stored in {run_dir}", overrides=overrides)

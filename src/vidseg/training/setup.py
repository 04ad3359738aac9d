"""Setting up a run's model and optimizer: warm start, identity-initialised temporal units, parameter groups,
and what a resumed run may change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidseg.checkpoint import TrainState
from vidseg.config import Config
from vidseg.errors import VidsegError
from vidseg.models import RecurrentUNet
from vidseg.models.temporal import ConvRNN, zero_input_path


def warm_start(model: RecurrentUNet, path: str, init_temporal: str, log: Callable[[str], None]) -> list[str]:
    """Copy every weight of checkpoint ``path`` whose name and shape match; return the copied parameter names.

    With ``init_temporal="identity"`` cRNN units then start as C_x = identity (centre tap 1), C_h = 0 and zero
    biases: on the non-negative features of vanilla and ResNet blocks the unit passes its input through
    unchanged, so the model reproduces the logits of the per-frame model whose weights it copied.
    """
    source = TrainState.load(path)
    target = model.state_dict()
    matching = {
        name: value for name, value in source.model.items() if name in target and target[name].shape == value.shape
    }
    parameter_names = {name for name, _ in model.named_parameters()}
    copied = sorted(name for name in matching if name in parameter_names)
    if not copied:
        raise VidsegError(
            f"train.init_from: no weight of {path} (model {source.model_name}) matches the model to train by "
            "name and shape; warm-start from a checkpoint of the same block type and size"
        )
    model.load_state_dict(matching, strict=False)
    kept = sorted(set(target) - set(matching))
    log(
        f"warm start: copied {len(matching)} of {len(target)} tensors from {path} ({source.model_name}); "
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
    """Adam or AdamW; weights copied by a warm start get ``optim.copied_lr_scale`` x the learning rate; those
    under an ``optim.freeze`` prefix are left out (and stop requiring gradients)."""
    optim = config.optim
    copied_set = set(copied)
    named = freeze_parameters(model, optim.freeze)
    groups = [{"params": [p for n, p in named if n not in copied_set], "lr": optim.lr}]
    if copied_set:
        groups.append({"params": [p for n, p in named if n in copied_set], "lr": optim.lr * optim.copied_lr_scale})
    groups = [group for group in groups if group["params"]]
    optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return optimizer_class(
        groups, lr=optim.lr, betas=(optim.betas[0], optim.betas[1]), eps=optim.eps, weight_decay=optim.weight_decay
    )


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> list[tuple[str, nn.Parameter]]:
    """Stop the parameters under ``prefixes`` from requiring gradients; return the other (trainable) ones.

    Raises:
        VidsegError: a prefix that names no parameter of the model (a typo would otherwise train everything).
    """
    named = list(model.named_parameters())
    modules = sorted({".".join(name.split(".")[:2]) + "." for name, _ in named})
    for prefix in prefixes:
        if not prefix or not any(name.startswith(prefix) for name, _ in named):
            raise VidsegError(
                f"optim.freeze: {prefix!r} names no parameter of the model; prefixes look like {', '.join(modules)}"
            )
    frozen = tuple(prefixes)
    for name, parameter in named:
        if frozen and name.startswith(frozen):
            parameter.requires_grad_(False)
    trainable = [(name, parameter) for name, parameter in named if parameter.requires_grad]
    if not trainable:
        raise VidsegError(
            f"optim.freeze: {', '.join(prefixes)} freeze every parameter of the model; nothing would train"
        )
    return trainable


# What a resumed run takes from its (possibly changed) config: the optimizer's hyperparameters, the schedule
# (optim.schedule, warmup_fraction, final_lr_scale: LRSchedule is built from the config and only its progress is
# restored), optim.grad_clip, the budget, logging, checkpointing, evaluation and the device. Settings that
# decide what each step computes from which samples cannot change without breaking exact resume; a changed one
# is refused (keys, or whole sections ending in ".").
OPTIMIZER_SETTINGS = ("lr", "betas", "eps", "weight_decay")
RESUME_FIXED = (
    "model.", "data.", "loss.", "optim.name", "optim.accumulate", "optim.freeze", "train.seed", "train.amp",
    "train.init_from", "train.init_temporal",
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

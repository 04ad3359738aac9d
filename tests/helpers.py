"""Helpers shared by test modules (import as ``from helpers import ...``; pytest puts tests/ on the path)."""

from __future__ import annotations

import torch
from torch import nn

from vidseg.config import Config, config_from_dict


def quiet(message: str) -> None:
    """A ``log`` callback that drops every message."""


def tiny_config(root, **sections) -> Config:
    """A fast training config on a generated tree: 16x32 frames, 3-frame windows, batch 2, two steps, no
    evaluation; ``sections`` update the config's sections (``train={"steps": 4}``)."""
    raw = {
        "model": {"name": "vanilla-crnn-small-shallow"},
        "data": {"root": str(root), "size": [16, 32], "num_frames": 3, "batch_size": 2},
        "loss": {"frames": "labelled"},
        "optim": {"lr": 3e-3},
        "train": {"steps": 2, "log_every": 1, "tensorboard": False},
        "eval": {"every_epochs": 0, "num_frames": 3, "batch_size": 2},
    }
    for section, values in sections.items():
        raw[section].update(values)
    return config_from_dict(raw, source="tiny config")


def with_random_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with random BatchNorm statistics (a fresh model's are the identity), so that fusing them is tested."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model

"""Named model configurations: ``{block}-{temporal}-{size}``, e.g. ``resnet-cgru-small-deep``.

Sizes and the parameter counts of the report's Table 3 (20 output classes: 19 Cityscapes classes + void); the
rules that reproduce them are in ``docs/model-spec.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vidseg.models.blocks import BLOCK_SETS
from vidseg.models.temporal import TEMPORAL_UNITS
from vidseg.models.unet import RecurrentUNet

SIZES: dict[str, tuple[int, ...]] = {
    "small-shallow": (16, 32, 64),
    "small-deep": (16, 32, 64, 128),
    "original": (64, 128, 256),
}

MODEL_NAMES: list[str] = [f"{b}-{t}-{s}" for b in BLOCK_SETS for t in TEMPORAL_UNITS for s in SIZES]

# Table 3 of the report, with 20 classes. Entries missing here were not published.
REPORT_PARAMS: dict[str, int] = {
    "vanilla-none-small-shallow": 125_732,
    "vanilla-none-small-deep": 507_940,
    "vanilla-none-original": 1_958_996,
    "vanilla-crnn-small-shallow": 222_724,
    "vanilla-crnn-small-deep": 900_100,
    "vanilla-crnn-original": 3_508_180,
    "vanilla-cgru-small-shallow": 416_372,
    "vanilla-cgru-small-deep": 1_683_700,
    "vanilla-cgru-original": 6_605_204,
    "resnet-crnn-small-shallow": 229_908,
    "resnet-crnn-small-deep": 923_860,
    "resnet-crnn-original": 3_598_356,
    "resnet-cgru-small-shallow": 423_556,
    "resnet-cgru-small-deep": 1_707_460,
    "resnet-cgru-original": 6_695_380,
    "convnext-crnn-small-deep": 760_420,
    "convnext-crnn-original": 2_933_588,
    "convnext-cgru-small-deep": 1_544_020,
    "convnext-cgru-original": 6_030_612,
}
REPORT_NUM_CLASSES = 20


def parse_model_name(name: str) -> tuple[str, str, str]:
    """Split a model name into (block, temporal, size); raise ValueError listing the valid names."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; valid names are: {', '.join(MODEL_NAMES)}")
    block, temporal, size = name.split("-", 2)
    return block, temporal, size


def build_model(
    name: str,
    num_classes: int = REPORT_NUM_CLASSES,
    temporal_residual: bool = False,
    state_dropout: float = 0.0,
    warp_state: bool = False,
    temporal_levels: Sequence[int] | None = None,
    temporal_kernel: int = 3,
    temporal_gate: bool = False,
    temporal_memory_only: bool = False,
    output_memory: bool = False,
) -> RecurrentUNet:
    """Build a named model with freshly initialised weights.

    Args:
        name: one of ``MODEL_NAMES``.
        num_classes: output classes (20 reproduces the report's counts; 19 is standard Cityscapes).
        temporal_residual: residual temporal units (``RecurrentUNet``); same parameters, so the count is unchanged.
        state_dropout: state dropout probability in training (``RecurrentUNet``).
        warp_state: units warp the previous state by a predicted motion (``RecurrentUNet``; adds parameters).
        temporal_levels: the levels that carry a unit, None = all (``RecurrentUNet``; fewer units, fewer parameters).
        temporal_kernel: the units' kernel size (``RecurrentUNet``; 3 in the report's models).
        temporal_gate: gated residual skips ``x + g * h`` (``RecurrentUNet``; adds a 1x1 convolution per unit).
        temporal_memory_only: residual skips pass only what memory adds (``RecurrentUNet``; no parameters).
        output_memory: a learned running average of the class probabilities (``vidseg.models.memory``; any model,
            per-frame ones included; adds a small gate).
    """
    block, temporal, size = parse_model_name(name)
    return RecurrentUNet(
        blocks=BLOCK_SETS[block],
        channels=SIZES[size],
        temporal=TEMPORAL_UNITS[temporal],
        num_classes=num_classes,
        temporal_residual=temporal_residual,
        state_dropout=state_dropout,
        warp_state=warp_state,
        temporal_levels=temporal_levels,
        temporal_kernel=temporal_kernel,
        temporal_gate=temporal_gate,
        temporal_memory_only=temporal_memory_only,
        output_memory=output_memory,
    )


def architecture_options(model_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``build_model`` options that change what a trained model computes, from a stored ``model`` config
    section (a checkpoint's ``config["model"]``); options absent from older configs take their defaults."""
    model_config = model_config or {}
    return {
        "temporal_residual": bool(model_config.get("temporal_residual", False)),
        "warp_state": bool(model_config.get("warp_state", False)),
        "temporal_levels": model_config.get("temporal_levels"),
        "temporal_kernel": int(model_config.get("temporal_kernel", 3)),
        "temporal_gate": bool(model_config.get("temporal_gate", False)),
        "temporal_memory_only": bool(model_config.get("temporal_memory_only", False)),
        "output_memory": bool(model_config.get("output_memory", False)),
    }


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())

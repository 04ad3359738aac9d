"""Option values that the library and the command line share.

This module imports nothing heavy: ``vidseg --help`` builds every command's parser, whose ``choices`` come from
here, and must not wait for torch.
"""

from __future__ import annotations

from typing import Literal, get_args

AmpMode = Literal["off", "bf16", "fp16"]
"""Compute precision: ``off`` (float32), ``bf16``, or ``fp16`` (CUDA only; CPUs lack fast float16 kernels)."""
AMP_MODES: tuple[str, ...] = get_args(AmpMode)

Precision = Literal["fp32", "bf16", "fp16", "int8"]
"""Inference precision of ``Segmenter`` and ``vidseg segment``: the AMP modes, and int8 (CPU; quantised copy)."""
PRECISIONS: tuple[str, ...] = get_args(Precision)
PRECISION_OF_AMP: dict[str, str] = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}
"""The precision that each older ``amp`` spelling names."""


def resolve_precision(amp: str, precision: str | None, amp_name: str = "amp", name: str = "precision") -> str:
    """The precision that ``precision`` and its older spelling ``amp`` ask for together (``precision`` wins
    when ``amp`` is off); ValueError, naming both options, when they disagree or a value is unknown."""
    if amp not in AMP_MODES:
        raise ValueError(f"unknown {amp_name} mode {amp!r}; valid modes are: {', '.join(AMP_MODES)}")
    if precision is None:
        return PRECISION_OF_AMP[amp]
    if precision not in PRECISIONS:
        raise ValueError(f"unknown {name} {precision!r}; valid precisions are: {', '.join(PRECISIONS)}")
    if amp != "off" and PRECISION_OF_AMP[amp] != precision:
        raise ValueError(f"{amp_name} {amp!r} and {name} {precision!r} disagree; give {name} only")
    return precision


def autocast_mode(precision: str) -> str:
    """The ``amp`` mode that runs ``precision``: ``off`` for fp32 and int8 (the int8 copy computes its own way)."""
    return "off" if precision in ("fp32", "int8") else precision

MaskFormat = Literal["trainids", "labelids", "color"]
"""Mask PNG content: class indices, official Cityscapes label ids, or palette RGB (``segment.mask_image``)."""
MASK_FORMATS: tuple[str, ...] = get_args(MaskFormat)

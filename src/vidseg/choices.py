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

MaskFormat = Literal["trainids", "labelids", "color"]
"""Mask PNG content: class indices, official Cityscapes label ids, or palette RGB (``segment.mask_image``)."""
MASK_FORMATS: tuple[str, ...] = get_args(MaskFormat)

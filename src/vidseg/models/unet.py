"""The recurrent UNet: a UNet whose skip connections pass through convolutional temporal units.

One class covers every variant of the report (Sheludzko, Schwemmer and Gomez Ruiz, "Video Semantic
Segmentation", Lab Vision Systems, University of Bonn, 2023): the block type, the temporal unit and the
channel list are arguments. Per-frame baselines are the same class with ``temporal=None``.

Recurrent state is explicit. ``step(frame, state) -> (logits, state)`` processes one frame; the clip
forward is a loop over ``step`` (``run_clip``, which training and evaluation use too, each with its own step).
A state is a tuple with one hidden tensor per temporal unit, in level order, then the output memory for models
that have one (``vidseg.models.memory``); empty for per-frame models; ``None`` means the zero initial state.
Units sit on every encoder level, or on the levels ``temporal_levels`` names (the others pass their encoder
feature straight to the decoder).

Activation checkpointing is a flag the model reads (``set_grad_checkpointing``, as in timm): with it, the
activations of a time step (or of each stage) are not kept for the backward pass but recomputed during it. The flag
is plain data, so ``copy.deepcopy(model)`` (an EMA copy) runs its own stages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute_in_backward

from vidseg.models.blocks import BlockSet
from vidseg.models.memory import OutputMemory
from vidseg.models.temporal import SkipGate, drop_state

if TYPE_CHECKING:
    from vidseg.models.inference import InferenceUNet
    from vidseg.models.quantized import QuantizedUNet

State = tuple[torch.Tensor, ...]
Output = TypeVar("Output", torch.Tensor, tuple[torch.Tensor, ...])

GRAD_CHECKPOINTING = ("off", "step", "stage")
"""``step``: recompute each time step in backward; ``stage``: also each encoder stage, temporal unit and decoder
stage within the recomputed step."""

# The deepest ConvNeXt block pads by 3 in reflect mode, which needs at least 4 pixels per side.
MIN_BOTTOM_SIZE = 4


def check_state(state: State | None, features: Sequence[Any]) -> tuple[torch.Tensor | None, ...]:
    """The state to use with this frame's encoder ``features`` (anything with a ``shape``: tensors, or the int8
    copy's quantized activations): one entry per level (None = zeros).

    Raises ValueError when the state does not fit the frame (its size or batch changed mid-sequence).
    """
    if state is None or len(state) == 0:
        return (None,) * len(features)
    if len(state) != len(features):
        raise ValueError(f"state has {len(state)} tensors, the model has {len(features)} temporal units")
    for level, (feature, hidden) in enumerate(zip(features, state)):
        if hidden.shape != feature.shape:
            raise ValueError(
                f"state at level {level} has shape {tuple(hidden.shape)} but this frame needs "
                f"{tuple(feature.shape)}; frame size or batch size changed mid-sequence: reset the state (state=None)"
            )
    return tuple(state)


def run_levels(
    model: RecurrentUNet | InferenceUNet | QuantizedUNet,
    x: torch.Tensor,
    state: State | None,
    real: Callable[[Any], torch.Tensor] | None = None,
    encoder_grad_scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, State]:
    """Encoder, temporal units, decoder and head on one padded frame: the body of ``step``.

    Shared by ``RecurrentUNet`` and its fused and int8 copies (``vidseg.models.inference``, ``.quantized``), which
    have the same ``encoder``, ``temporal``, ``decoder`` and ``head`` module lists; ``real`` as in ``apply_units``.
    ``encoder_grad_scale [B]`` (training only) scales the gradient that each sample's encoder features receive from
    the units and the decoder (``scale_gradient``). Returns padded logits and the new state.
    """
    recompute = getattr(model, "grad_checkpointing", "off") == "stage" and torch.is_grad_enabled()
    run = _recomputed if recompute else _called
    frame, features = x, []
    for stage in model.encoder:
        x = run(stage, x)
        features.append(x)
    if encoder_grad_scale is not None:  # after the encoder's own chain, so each feature is scaled once
        features = [scale_gradient(feature, encoder_grad_scale) for feature in features]
    units_state, memory = split_state(model, state)
    if len(model.temporal):
        skips, new_state = apply_units(model, features, units_state, run, real)
    else:
        skips, new_state = features, ()
    y = skips[-1]
    for level in reversed(range(len(model.decoder))):
        y = run(model.decoder[level], y, skips[level])
    logits = model.head(y)
    if model.output_memory is not None:
        logits, memory = run(model.output_memory, y if real is None else real(y), logits, memory, frame)
        new_state = (*new_state, memory)
    return logits, new_state


def split_state(
    model: RecurrentUNet | InferenceUNet | QuantizedUNet, state: State | None
) -> tuple[State | None, torch.Tensor | None]:
    """A state as (the units' states, the output memory or None): the memory, when the model has one, is the
    state's last tensor (``vidseg.models.memory``)."""
    if model.output_memory is None or not state:
        return state, None
    if len(state) != len(model.temporal) + 1:
        raise ValueError(
            f"state has {len(state)} tensors, the model needs {len(model.temporal) + 1} "
            f"({len(model.temporal)} temporal units and the output memory)"
        )
    return state[:-1], state[-1]


def apply_units(
    model: RecurrentUNet | InferenceUNet | QuantizedUNet,
    features: list[Any],
    state: State | None,
    run: Callable[..., Any] | None = None,
    real: Callable[[Any], torch.Tensor] | None = None,
) -> tuple[list[Any], State]:
    """The temporal units on their levels' encoder ``features``: (the decoder's skip inputs, the new state).

    A unit level's skip is the unit's output h, or ``x + h`` for residual units, or ``x + (h - h0)`` with
    ``temporal_memory_only``, ``h0`` the unit's output for the same feature from the zero state (exactly 0 on a frame
    without history); other levels pass their feature.
    ``run(unit, x, h)`` calls a unit (default: directly); ``real(x)`` turns a feature into a float tensor for the
    residual sum (the int8 copy's quantized activations; default: unchanged). Shared by the model and its fused
    and int8 copies.
    """
    levels = model.temporal_levels
    hidden = check_state(state, [features[level] for level in levels])
    run = run or _called
    new_state: State = tuple(run(unit, features[level], h) for unit, level, h in zip(model.temporal, levels, hidden))
    skips = list(features)
    gates = model.skip_gates or (None,) * len(levels)
    memory_only = getattr(model, "temporal_memory_only", False)
    for unit, level, h, previous, gate in zip(model.temporal, levels, new_state, hidden, gates):
        if model.temporal_residual:
            feature = features[level] if real is None else real(features[level])
            if memory_only:  # what memory adds: nothing on a frame without history
                h = h - run(unit, features[level], None) if previous is not None else torch.zeros_like(h)
            skips[level] = feature + h if gate is None else gate(feature, h)
        else:
            skips[level] = h
    return skips, new_state


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (scale,) = ctx.saved_tensors
        return grad * scale.to(grad.dtype).view(-1, *([1] * (grad.dim() - 1))), None


def scale_gradient(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged in the forward pass; in the backward pass sample i's gradient times ``scale[i]`` (0 stops it,
    1 passes it whole)."""
    return _ScaleGradient.apply(x, scale)


def _called(module: nn.Module, *args: Any) -> Any:
    return module(*args)


def _recomputed(module: nn.Module, *args: Any) -> Any:
    return recompute_in_backward(RecomputeOnce(module, module), *args, use_reentrant=False)


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


def run_clip(
    step: Callable[[torch.Tensor, State | None], tuple[Output, State]],
    frames: torch.Tensor,
    state: State | None,
    in_channels: int,
) -> tuple[Output, State]:
    """A clip ``[B, T, C, H, W]`` through ``step`` frame by frame, carrying the state: the one loop over frames.

    ``step(frame, state) -> (output, state)`` is the model's ``step`` or any function around it (training adds
    the memory layout, evaluation keeps class maps instead of logits). The outputs are stacked on a time axis
    (dim 1); a step that returns a tuple of tensors gets a tuple of stacked tensors.
    """
    if frames.dim() != 5:
        raise ValueError(
            f"the model expects a clip [B, T, {in_channels}, H, W], got shape {tuple(frames.shape)}; "
            "for a single frame [B, C, H, W] use model.step(frame, state), or add a time axis with frames[:, None]"
        )
    if frames.shape[1] == 0:
        raise ValueError(f"the clip has no frames: shape {tuple(frames.shape)} has T = 0")
    output, new_state = step(frames[:, 0], state)
    outputs = [output]
    for t in range(1, frames.shape[1]):
        output, new_state = step(frames[:, t], new_state)
        outputs.append(output)
    if isinstance(output, tuple):
        stacked: Any = tuple(torch.stack(parts, dim=1) for parts in zip(*outputs))
        return stacked, new_state
    return torch.stack(outputs, dim=1), new_state


class RecurrentUNet(nn.Module):
    """UNet with temporal units on its skip paths and bottom.

    Args:
        blocks: stage constructors of the block type (``vidseg.models.blocks.BLOCK_SETS``).
        channels: channels per level c_0 ... c_{L-1}; the deepest level is the bottom.
        temporal: temporal unit class (``ConvRNN``, ``ConvGRU``) or None for a per-frame model.
        num_classes: output classes.
        in_channels: input channels (3 for RGB).
        temporal_residual: skips pass ``x + h`` (residual units, see ``vidseg.models.temporal``) instead of ``h``.
        state_dropout: in training mode, probability that a sample's incoming state is replaced by zeros
            (``vidseg.models.temporal.drop_state``); no effect in eval mode.
        warp_state: units motion-compensate the previous state first (``vidseg.models.temporal.StateWarp``).
        temporal_levels: the encoder levels (0 = full resolution) that carry a temporal unit; None = every level.
        temporal_kernel: kernel size of the units' convolutions (odd; 3 in the report's models). 1 makes a unit a
            per-pixel recurrence over channels, at a ninth of the FLOPs.
        temporal_gate: residual skips pass ``x + g * h`` with a gate g computed from x and h
            (``vidseg.models.temporal.SkipGate``) instead of ``x + h``; needs ``temporal_residual``.
        temporal_memory_only: residual skips pass ``x + (h - h0)``, ``h0`` the unit's state for the same frame from
            the zero state: only what memory adds (``apply_units``); needs ``temporal_residual``.
        output_memory: the output is a learned running average of the class probabilities
            (``vidseg.models.memory``); any model, per-frame ones included (which it makes temporal).
    """

    def __init__(
        self,
        blocks: BlockSet,
        channels: tuple[int, ...] | list[int],
        temporal: type[nn.Module] | None,
        num_classes: int,
        in_channels: int = 3,
        temporal_residual: bool = False,
        state_dropout: float = 0.0,
        warp_state: bool = False,
        temporal_levels: Sequence[int] | None = None,
        temporal_kernel: int = 3,
        temporal_gate: bool = False,
        temporal_memory_only: bool = False,
        output_memory: bool = False,
    ):
        super().__init__()
        channels = tuple(channels)
        if len(channels) < 2:
            raise ValueError(f"a UNet needs at least 2 levels, got channels={channels}")
        if temporal is None and (
            temporal_residual
            or state_dropout
            or warp_state
            or temporal_levels is not None
            or temporal_kernel != 3
            or temporal_gate
            or temporal_memory_only
        ):
            raise ValueError(
                "temporal_residual, state_dropout, warp_state, temporal_levels, temporal_kernel, temporal_gate and "
                "temporal_memory_only need temporal units; the model has none"
            )
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and positive, got {temporal_kernel}")
        if temporal_gate and not temporal_residual:
            raise ValueError("temporal_gate gates the residual skip x + h: it needs temporal_residual=True")
        if temporal_memory_only and not temporal_residual:
            raise ValueError("temporal_memory_only corrects the residual skip x + h: it needs temporal_residual=True")
        levels = tuple(range(len(channels))) if temporal_levels is None else tuple(sorted(temporal_levels))
        if temporal is not None and (
            not levels or len(set(levels)) != len(levels) or not all(0 <= level < len(channels) for level in levels)
        ):
            raise ValueError(
                f"temporal_levels must be distinct levels 0 to {len(channels) - 1}, at least one, got {temporal_levels}"
            )
        if not 0 <= state_dropout < 1:
            raise ValueError(f"state_dropout is a probability in [0, 1), got {state_dropout}")
        self.temporal_residual = temporal_residual
        self.temporal_memory_only = temporal_memory_only
        self.state_dropout = state_dropout
        self.warp_state = warp_state
        self.channels = channels
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.is_temporal = temporal is not None or output_memory
        self.temporal_levels = levels if temporal is not None else ()
        self.temporal_kernel = temporal_kernel

        self.encoder = nn.ModuleList([blocks.stem(in_channels, channels[0])])
        self.encoder.extend(blocks.down(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))
        # Only the options that are on: a unit class without them still builds the plain model.
        unit_options: dict[str, Any] = {
            name: True for name, on in (("residual", temporal_residual), ("warp", warp_state)) if on
        }
        if temporal_kernel != 3:
            unit_options["kernel"] = temporal_kernel
        self.temporal = nn.ModuleList(
            [temporal(channels[level], **unit_options) for level in self.temporal_levels] if temporal else []
        )
        self.skip_gates = nn.ModuleList(
            [SkipGate(channels[level]) for level in self.temporal_levels] if temporal_gate else []
        )
        # decoder[k] maps level k+1 to level k; it runs from the deepest level up.
        self.decoder = nn.ModuleList(blocks.up(c_deep, c) for c, c_deep in zip(channels[:-1], channels[1:]))
        self.head = nn.Conv2d(channels[0], num_classes, 3, padding=1)
        self.output_memory = OutputMemory(channels[0], num_classes) if output_memory else None
        self.grad_checkpointing = "off"
        """One of ``GRAD_CHECKPOINTING``; set it with ``set_grad_checkpointing``."""

    def set_grad_checkpointing(self, enable: bool = True, granularity: str = "step") -> None:
        """Recompute activations in the backward pass instead of keeping them (only while gradients are on):
        each time step (``granularity="step"``) or, within it, each stage (``"stage"``). Outputs, gradients and
        BatchNorm statistics are those of the plain forward; only memory and time change."""
        if granularity not in GRAD_CHECKPOINTING[1:]:
            raise ValueError(f"granularity must be 'step' or 'stage', got {granularity!r}")
        self.grad_checkpointing = granularity if enable else "off"

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a frame of ``height x width`` is zero-padded to internally."""
        m = self.size_multiple
        minimum = MIN_BOTTOM_SIZE * m
        return max(minimum, (height + m - 1) // m * m), max(minimum, (width + m - 1) // m * m)

    def _check_frame(self, frame: torch.Tensor) -> None:
        if frame.dim() != 4:
            raise ValueError(
                f"step() expects one frame per clip as [B, {self.in_channels}, H, W], got shape {tuple(frame.shape)}; "
                "for a clip [B, T, C, H, W] call the model itself"
            )
        if frame.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels (RGB), got {frame.shape[1]} "
                f"in shape {tuple(frame.shape)}; "
                "convert grayscale or RGBA frames to RGB first"
            )

    def step(
        self, frame: torch.Tensor, state: State | None = None, encoder_grad_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Segment one frame.

        Args:
            frame: ``[B, 3, H, W]`` normalised frames, any H and W.
            state: the state returned for the previous frame, or None to start from zeros.
            encoder_grad_scale: training only: ``[B]``, the scale of the gradient that each sample's encoder
                features receive from the units and the decoder (``loss.corrupted_encoder_gradient``); None = 1.

        Returns:
            logits ``[B, num_classes, H, W]`` and the new state.
        """
        if self.grad_checkpointing != "off" and torch.is_grad_enabled():
            return recompute_in_backward(
                RecomputeOnce(self._step, self), frame, state, encoder_grad_scale, use_reentrant=False
            )
        return self._step(frame, state, encoder_grad_scale)

    def _step(
        self, frame: torch.Tensor, state: State | None, encoder_grad_scale: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        self._check_frame(frame)
        if self.training and self.state_dropout > 0 and state:
            state = drop_state(state, self.state_dropout)
        height, width = frame.shape[-2:]
        padded_h, padded_w = self.padded_size(height, width)
        padded = F.pad(frame, (0, padded_w - width, 0, padded_h - height))
        logits, state = run_levels(self, padded, state, encoder_grad_scale=encoder_grad_scale)
        return logits[..., :height, :width], state

    def forward(self, frames: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Segment a clip frame by frame, carrying the state.

        Args:
            frames: ``[B, T, 3, H, W]``.
            state: initial state, or None for zeros.

        Returns:
            logits ``[B, T, num_classes, H, W]`` and the state after the last frame.
        """
        return run_clip(self.step, frames, state, self.in_channels)

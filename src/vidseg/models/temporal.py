"""Convolutional temporal units that carry a hidden state from frame to frame.

State is explicit: ``unit(x, h) -> h_new``; ``h = None`` means the zero initial state.
  * cRNN (Keren & Schuller, 2017, as adapted in the report): y_t = ReLU(C_x * x_t + C_h * y_{t-1}).
  * cGRU (Ballas et al., 2016; report eqs. 8-11): [r, z] = sigmoid(C_rz * [x, h]),
    n = tanh(C_n * [x, r * h]), h_t = (1 - z) * n + z * h_{t-1}.
All convolutions are 3x3, stride 1, padding 1, with bias.

Residual (identity-preserving) variants, ``residual=True``: the UNet passes ``x_t + h_t`` on the skip path instead
of ``h_t`` (``RecurrentUNet(temporal_residual=True)``), so the unit learns a correction to the per-frame feature
rather than a replacement. The state stays ``h_t`` and stays bounded: the cGRU's is in (-1, 1) already, and the
residual cRNN uses tanh instead of ReLU, y_t = tanh(C_x * x_t + C_h * y_{t-1}), bounded and able to subtract
(a ReLU correction could only add to a stale feature, never remove it). Both start with their input path at zero
(C_x and the biases for the cRNN; the x half of C_n and its bias for the cGRU), so that h_t = 0 on every frame and
the model computes exactly its per-frame twin until training moves them; the recurrent weights keep their
random initialisation.

Gated residual skips (``RecurrentUNet(temporal_gate=True)``, ``SkipGate``): the skip is ``x_t + g_t * h_t`` with a
gate ``g_t`` from a 1x1 convolution of ``[x_t, h_t]``; the state stays ``h_t``.

State warping, ``warp=True`` (``RecurrentUNet(warp_state=True)``): before the unit, the previous state is
motion-compensated, as NetWarp (Gadde et al., 2017) and GRFP (Nilsson and Sminchisescu, 2018) warp theirs with
optical flow; here the flow is the model's own: ``StateWarp`` predicts it from the current features and the
previous state, so the state contract and every caller stay as they are (no flow input, nothing to compute
outside the model). It starts at zero motion (an identity warp).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class StateWarp(nn.Module):
    """Warps the previous hidden state by a motion field predicted from ``[x_t, h_{t-1}]``.

    A 3x3 convolution gives, per pixel of this level, where its content was on the previous frame (dx, dy in
    pixels); ``h_{t-1}`` is resampled there (bilinear, edges replicated). The convolution starts at zero, so the
    warp starts as the identity (exact up to float rounding of the sampling grid).

    Args:
        channels: channels of the features and of the state.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.motion = nn.Conv2d(2 * channels, 2, 3, padding=1)
        with torch.no_grad():
            for parameter in self.motion.parameters():
                parameter.zero_()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return warp(h, self.motion(torch.cat([x, h], dim=1)))


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image [B, C, H, W]`` sampled at each pixel plus ``flow [B, 2, H, W]`` (dx, dy in pixels; bilinear, edges
    replicated): backward warping, output pixel p = image(p + flow(p))."""
    height, width = image.shape[-2:]
    # Pixel positions and the sampling in float32: bf16 cannot hold positions beyond 256 exactly (a zero flow
    # would move pixels by up to 2 px at width 480).
    flow = flow.float()
    ys = torch.arange(height, dtype=torch.float32, device=flow.device).reshape(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32, device=flow.device).reshape(1, 1, width)
    # Normalised to [-1, 1] with align_corners=True: -1 and 1 are the centres of the first and last pixels.
    grid_x = (xs + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    grid_y = (ys + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack([grid_x, grid_y], dim=-1)
    sampled = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return sampled.to(image.dtype)


class SkipGate(nn.Module):
    """The skip of a gated residual unit: ``x + g * h`` with ``g = sigmoid(C_g * [x, h])``, a 1x1 convolution.

    The gate sees the current feature and the unit's new state, so it can keep memory out of a clean, confident
    frame (g -> 0: the decoder gets the per-frame feature) and let it in where the frame is corrupted or
    occluded (g -> 1); in the issue 15 screen it stayed near 1/2 on both kinds of frame (docs/benchmarks.md,
    section 6). It gates the skip only: the state that goes on to the next frame is ``h`` unchanged.
    Cost: 2c^2 multiply-adds per pixel, a ninth of a 3x3 cRNN unit's 18c^2.

    Args:
        channels: channels of the feature and of the state.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return x + torch.sigmoid(self.conv(torch.cat([x, h], dim=1))) * h


class ConvRNN(nn.Module):
    """Convolutional RNN cell whose output is its hidden state.

    Args:
        channels: input and hidden channels.
        residual: the residual variant (see the module docstring): tanh instead of ReLU, input path zeroed.
        warp: motion-compensate the previous state first (``StateWarp``).
        kernel: the convolutions' kernel size (odd; the report's units use 3).
    """

    def __init__(self, channels: int, residual: bool = False, warp: bool = False, kernel: int = 3):
        super().__init__()
        self.residual = residual
        self.input_conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)  # C_x
        self.hidden_conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2)  # C_h
        if residual:
            zero_input_path(self)
        self.state_warp = StateWarp(channels) if warp else None

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = torch.zeros_like(x)
        elif self.state_warp is not None:
            h = self.state_warp(x, h)
        pre_activation = self.input_conv(x) + self.hidden_conv(h)
        return torch.tanh(pre_activation) if self.residual else F.relu(pre_activation)


class ConvGRU(nn.Module):
    """Convolutional GRU cell.

    Args:
        channels: input and hidden channels.
        residual: the residual variant (see the module docstring): the x half of C_n and its bias start at zero.
        warp: motion-compensate the previous state first (``StateWarp``).
        kernel: the convolutions' kernel size (odd; the report's units use 3).
    """

    def __init__(self, channels: int, residual: bool = False, warp: bool = False, kernel: int = 3):
        super().__init__()
        self.channels = channels
        self.residual = residual
        pad = kernel // 2
        self.gates_conv = nn.Conv2d(2 * channels, 2 * channels, kernel, padding=pad)  # C_rz: r first, then z
        self.candidate_conv = nn.Conv2d(2 * channels, channels, kernel, padding=pad)  # C_n
        if residual:
            zero_input_path(self)
        self.state_warp = StateWarp(channels) if warp else None

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = torch.zeros_like(x)
        elif self.state_warp is not None:
            h = self.state_warp(x, h)
        r, z = torch.sigmoid(self.gates_conv(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate_conv(torch.cat([x, r * h], dim=1)))
        return (1 - z) * n + z * h


@torch.no_grad()
def zero_input_path(unit: nn.Module) -> None:
    """Zero what feeds the current frame into ``unit``'s state: from the zero initial state the state then stays
    exactly zero on every frame (the recurrent weights multiply zeros), so a residual unit passes ``x`` unchanged.

    cRNN: C_x and both biases; cGRU: the x half of C_n and its bias (the new state is a mix of the candidate and
    the old state, both zero). TypeError for other units.
    """
    if isinstance(unit, ConvRNN):
        for conv in (unit.input_conv, unit.hidden_conv):
            assert conv.bias is not None  # built with biases
            conv.bias.zero_()
        unit.input_conv.weight.zero_()
    elif isinstance(unit, ConvGRU):
        assert unit.candidate_conv.bias is not None
        unit.candidate_conv.weight[:, : unit.channels].zero_()
        unit.candidate_conv.bias.zero_()
    else:
        raise TypeError(f"no input path to zero in {type(unit).__name__}; expected ConvRNN or ConvGRU")


def drop_state(state: tuple[torch.Tensor, ...], probability: float) -> tuple[torch.Tensor, ...]:
    """State dropout: each sample's whole state (every level at once) becomes the zero initial state with
    ``probability``, independently per sample and per call (per frame); kept states are not rescaled. Under
    torch.distributed each process draws the masks of the whole global batch from the (shared, equally seeded)
    generator and keeps its own slice, so samples on different processes drop independently while every
    process's generator stays in step (what exact resume relies on).

    Zeros are exactly what the model sees on the first frame of a clip, so a dropped step teaches it to segment
    from the current frame alone; dropping every level together leaves no stale memory at another level to
    lean on; not rescaling keeps the state's distribution the same as in evaluation, where nothing is dropped.
    """
    if not state:
        return state
    first = state[0]
    batch = first.shape[0]
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    keep = torch.rand(world * batch, device=first.device)[rank * batch : (rank + 1) * batch] >= probability
    mask = keep.reshape(-1, 1, 1, 1)
    return tuple(torch.where(mask, hidden, hidden.new_zeros(())) for hidden in state)


TEMPORAL_UNITS: dict[str, type[nn.Module] | None] = {"none": None, "crnn": ConvRNN, "cgru": ConvGRU}

"""An inference-only copy of a RecurrentUNet: BatchNorm folded into convolutions, activations and residual
additions fused into the convolutions (oneDNN post-ops on CPU), one dtype and memory layout throughout.

``optimize_for_inference(model)`` returns a module with the same ``step(frame, state)`` and clip ``forward``
as the model it was built from; its outputs equal the model's in eval mode up to rounding (exactly the same
function in fp32; bf16 rounds intermediate results). Training uses the plain model.
"""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models import blocks, temporal
from vidseg.models.unet import RecurrentUNet, State, run_clip, run_levels

_ACTIVATIONS = {
    "none": lambda x: x,
    "relu": F.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


def _batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``bn`` in eval mode as ``x * scale + shift`` per channel (float64)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics (track_running_stats=False) cannot be folded")
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.detach().double() - bn.running_mean.double() * scale


def _fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as a single convolution (eval-mode statistics)."""
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros(conv.out_channels).double()
    if bn is not None:
        scale, shift = _batchnorm_affine(bn)
        weight = weight * scale.reshape(-1, 1, 1, 1)
        bias = bias * scale + shift
    return weight.float(), bias.float()


class FusedConv(nn.Module):
    """act(conv(x) [+ other]) with BatchNorm folded in; oneDNN fused kernel on CPU, plain ops elsewhere.

    Args:
        conv: the convolution (stride, padding and groups are taken from it; reflect padding is applied here).
        bn: BatchNorm that follows the convolution, or None.
        act: "none", "relu", "gelu", "sigmoid" or "tanh", applied after the (optional) residual addition.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, act: str = "none"):
        super().__init__()
        if isinstance(conv.padding, str):
            raise ValueError(f"cannot fuse a convolution with padding={conv.padding!r}; give the padding in pixels")
        weight, bias = _fold_batchnorm(conv, bn)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride = list(conv.stride)
        self.groups = conv.groups
        self.reflect = conv.padding_mode == "reflect"
        self.padding = [0, 0] if self.reflect else list(conv.padding)
        self.reflect_padding = (conv.padding[1], conv.padding[1], conv.padding[0], conv.padding[0])
        self.act = act

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if self.reflect:
            x = F.pad(x, self.reflect_padding, mode="reflect")
        if x.device.type == "cpu" and torch.backends.mkldnn.enabled and (
            x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and cpu_has_fast_bf16())
        ):
            algorithm = "none" if self.act == "gelu" else ""
            if other is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups, self.act, [], algorithm
                )
            # oneDNN fuses only ReLU after a residual addition; other activations run as a separate op.
            fuse_act = self.act == "relu"
            y = torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, self.weight, self.bias, self.padding, self.stride, [1, 1], self.groups,
                "add", None, "relu" if fuse_act else None, [], "",
            )
            return y if fuse_act else _ACTIVATIONS[self.act](y)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.groups)
        if other is not None:
            y = y + other
        return _ACTIVATIONS[self.act](y)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU (it needs AVX512-BW/VL/DQ or AVX-NE-CONVERT). Without them
    bf16 convolutions fall back to PyTorch's reference kernels: same results up to rounding, but several times
    slower than float32 (about 10x for training on an AVX2-only AMD EPYC)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _conv_bn_act(seq: nn.Sequential, act: str | None = None) -> FusedConv:
    """Fuse a ``conv_bn_act`` Sequential [Conv2d, BatchNorm2d, optional activation]; ``act`` overrides the
    activation (e.g. one applied after a residual addition)."""
    conv, bn = seq[0], seq[1]
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"expected [Conv2d, BatchNorm2d, ...], got [{type(conv).__name__}, {type(bn).__name__}, ...]")
    if act is None:
        act = {nn.ReLU: "relu", nn.GELU: "gelu"}[type(seq[2])] if len(seq) == 3 else "none"
    return FusedConv(conv, bn, act)


class FusedSequential(nn.Sequential):
    pass


class FusedResNetBlock(nn.Module):
    def __init__(self, block: blocks.ResNetBlock):
        super().__init__()
        self.conv1 = _conv_bn_act(block.conv1)
        self.shortcut = FusedConv(block.shortcut)
        self.conv2 = _conv_bn_act(block.conv2, act="relu")  # ReLU after the residual addition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x), other=self.shortcut(x))


class FusedConvNeXtBlock(nn.Module):
    def __init__(self, block: blocks.ConvNeXtBlock):
        super().__init__()
        self.dwconv = FusedConv(block.dwconv, block.norm1)
        self.pwconv1 = FusedConv(block.pwconv1, None, "gelu")
        self.pwconv2 = FusedConv(block.pwconv2, block.norm2, "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.pwconv1(self.dwconv(x)), other=x)


class FusedUp(nn.Module):
    def __init__(self, up: blocks.Up):
        super().__init__()
        self.upsample = up.upsample
        self.block = _fuse(up.block)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upsample(deep), skip], dim=1))


class FusedConvNeXtUp(nn.Module):
    norm_scale: torch.Tensor
    norm_shift: torch.Tensor

    def __init__(self, up: blocks.ConvNeXtUp):
        super().__init__()
        # BatchNorm before a stride-2 transposed conv cannot fold into its bias; keep it as one affine op.
        scale, shift = _batchnorm_affine(up.norm)
        self.register_buffer("norm_scale", scale.float().reshape(1, -1, 1, 1))
        self.register_buffer("norm_shift", shift.float().reshape(1, -1, 1, 1))
        self.upsample = up.upsample
        self.gate = FusedConv(up.gate)
        self.skip_attn = FusedConv(up.skip_attn, None, "sigmoid")
        self.skip_out = FusedConv(up.skip_out)
        self.fuse = FusedConv(up.fuse)
        self.block = FusedConvNeXtBlock(up.block)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        u = self.upsample(torch.addcmul(self.norm_shift, deep, self.norm_scale))
        g1, g2, g3 = self.gate(u).chunk(3, dim=1)
        gated = self.skip_attn(g1 + skip) * skip + torch.sigmoid(g2) * torch.tanh(g3)
        return self.block(self.fuse(torch.cat([self.skip_out(gated), u], dim=1)))


class FusedConvRNN(nn.Module):
    zero_state_bias: torch.Tensor

    def __init__(self, unit: temporal.ConvRNN):
        super().__init__()
        self.hidden_conv = FusedConv(unit.hidden_conv)
        self.input_conv = FusedConv(unit.input_conv, None, "tanh" if unit.residual else "relu")
        self.register_buffer("zero_state_bias", self.hidden_conv.bias.detach().reshape(1, -1, 1, 1).clone())
        self.state_warp = unit.state_warp  # a small convolution and a resampling: kept as they are

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:  # C_h * 0 is just C_h's bias
            return self.input_conv(x, other=self.zero_state_bias.expand_as(x).contiguous(memory_format=_layout(x)))
        if self.state_warp is not None:
            h = self.state_warp(x, h).contiguous(memory_format=_layout(x))
        return self.input_conv(x, other=self.hidden_conv(h))


class FusedConvGRU(nn.Module):
    def __init__(self, unit: temporal.ConvGRU):
        super().__init__()
        self.gates_conv = FusedConv(unit.gates_conv, None, "sigmoid")
        self.candidate_conv = FusedConv(unit.candidate_conv, None, "tanh")
        self.state_warp = unit.state_warp

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:
            h = torch.zeros_like(x)
        elif self.state_warp is not None:
            h = self.state_warp(x, h).contiguous(memory_format=_layout(x))
        r, z = self.gates_conv(torch.cat([x, h], dim=1)).chunk(2, dim=1)
        n = self.candidate_conv(torch.cat([x, r * h], dim=1))
        return torch.lerp(n, h, z)  # (1 - z) * n + z * h in one pass


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and x.shape[1] > 1 else (
        torch.contiguous_format
    )


def _fuse(module: nn.Module) -> nn.Module:
    """The fused inference version of one building block of the UNet."""
    if isinstance(module, blocks.ResNetBlock):
        return FusedResNetBlock(module)
    if isinstance(module, blocks.ConvNeXtBlock):
        return FusedConvNeXtBlock(module)
    if isinstance(module, blocks.ConvNeXtUp):
        return FusedConvNeXtUp(module)
    if isinstance(module, blocks.Up):
        return FusedUp(module)
    if isinstance(module, temporal.ConvRNN):
        return FusedConvRNN(module)
    if isinstance(module, temporal.ConvGRU):
        return FusedConvGRU(module)
    if isinstance(module, nn.Sequential):
        if len(module) in (2, 3) and isinstance(module[0], nn.Conv2d) and isinstance(module[1], nn.BatchNorm2d):
            return _conv_bn_act(module)
        return FusedSequential(*(_fuse(child) for child in module))
    if isinstance(module, nn.Conv2d):
        return FusedConv(module)
    raise TypeError(f"no fused inference version of {type(module).__name__}")


class InferenceUNet(nn.Module):
    """Fused, eval-only twin of a ``RecurrentUNet`` with the same ``step`` and ``forward``.

    Logits and states come back in the compute dtype (call ``.float()`` where float32 is needed: an argmax
    does not need it, and skipping the conversion saves a full pass over the logits).
    """

    def __init__(self, model: RecurrentUNet, dtype: torch.dtype, channels_last: bool):
        super().__init__()
        self.source = _Geometry(model)
        self.is_temporal = model.is_temporal
        self.temporal_residual = model.temporal_residual
        self.temporal_memory_only = model.temporal_memory_only
        self.output_memory = copy.deepcopy(model.output_memory)  # the blend in float32, the gate in the copy's dtype
        self.temporal_levels = model.temporal_levels
        self.num_classes = model.num_classes
        self.channels = model.channels
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder = nn.ModuleList(_fuse(stage) for stage in model.encoder)
        self.temporal = nn.ModuleList(_fuse(unit) for unit in model.temporal)
        self.skip_gates = nn.ModuleList(copy.deepcopy(gate) for gate in model.skip_gates)  # a 1x1 conv each, as is
        self.decoder = nn.ModuleList(_fuse(stage) for stage in model.decoder)
        self.head = FusedConv(model.head)

    @torch.no_grad()
    def step(self, frame: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        self.source.check_frame(frame)
        height, width = frame.shape[-2:]
        padded_h, padded_w = self.source.padded_size(height, width)
        x = F.pad(frame.to(self.dtype), (0, padded_w - width, 0, padded_h - height))
        x = x.contiguous(memory_format=self.memory_format)
        logits, state = run_levels(self, x, state)
        return logits[..., :height, :width], state

    @torch.no_grad()
    def forward(self, frames: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return run_clip(self.step, frames, state, self.source.in_channels)


class _Geometry:
    """Input checks and padding rules borrowed from the source model (kept outside the module tree)."""

    def __init__(self, model: RecurrentUNet):
        self._model = copy.copy(model)

    def check_frame(self, frame: torch.Tensor) -> None:
        self._model._check_frame(frame)

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        return self._model.padded_size(height, width)

    @property
    def in_channels(self) -> int:
        return self._model.in_channels


def optimize_for_inference(
    model: RecurrentUNet, dtype: torch.dtype = torch.float32, channels_last: bool = True
) -> InferenceUNet:
    """Fold, fuse and cast an eval-mode copy of ``model`` for fast streaming inference.

    Args:
        model: a trained model (left untouched).
        dtype: compute dtype of the copy (torch.bfloat16 is several times faster than float32 on CPUs with
            AVX512-BF16 or AMX).
        channels_last: run convolutions in NHWC layout, which oneDNN prefers.
    """
    source = copy.deepcopy(model).eval()
    fused = InferenceUNet(source, dtype, channels_last).eval()
    if channels_last:  # Module.to takes memory_format at run time; its type stubs leave it out
        return fused.to(dtype=dtype, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fused.to(dtype=dtype)

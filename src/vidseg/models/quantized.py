"""An int8 copy of a RecurrentUNet for streaming on CPUs: oneDNN int8 convolutions through PyTorch.

Post-training static quantization of the fused inference copy (``vidseg.models.inference``):

- weights: int8, symmetric, one scale per output channel;
- activations between convolutions: uint8, one scale and zero point per tensor, calibrated (min/max) by
  streaming clips through the model, so that the ranges seen by the temporal units are those of a running
  video, not of a first frame;
- every convolution is one oneDNN kernel (``torch.ops.onednn.qconv2d_pointwise``) with its bias, the
  residual addition, the ReLU and the requantization to the next layer's uint8 fused in; convolutions whose
  consumer needs real numbers (temporal gates, logits) write float32 directly; the gates of gated residual skips
  (``model.temporal_gate``, a 1x1 convolution each) run in float32 on the float32 skip inputs, and so does the
  state warp (``model.warp_state``: a 2-channel motion convolution and a bilinear resampling of the state);
- the recurrent state stays float32: it is quantized only where a convolution reads it, never stored rounded,
  so rounding errors do not accumulate from frame to frame over a long video.

The first convolution reads the float32 frame and runs in float32 (its output is quantized): uint8 (or 7-bit) input
would keep only part of the levels of each 8-bit pixel after normalisation, a loss every later layer inherits.

Transposed 2x2 stride-2 convolutions of the decoder run as a 1x1 int8 convolution followed by a pixel shuffle
(the same function). Where the CPU lacks VNNI, activations use 7 bits (0..127) so that the AVX2 int8
multiply-add instruction cannot saturate.

``QuantizedUNet(model)`` starts in calibration mode (float32, recording ranges); ``freeze()`` switches it to
int8. It has the same ``step(frame, state)`` as the model.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models import blocks, inference
from vidseg.models.unet import RecurrentUNet, State, run_levels


class QTensor(NamedTuple):
    """A uint8 tensor and the affine map back to real numbers: ``(data - zero_point) * scale``."""

    data: torch.Tensor
    scale: float
    zero_point: int

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def dequantize(self) -> torch.Tensor:
        return (self.data.float() - self.zero_point).mul_(self.scale)


Activation = torch.Tensor | QTensor


@lru_cache(maxsize=1)
def has_vnni() -> bool:
    """Whether this CPU has a VNNI int8 dot product (AVX512-VNNI or AVX-VNNI); False where it cannot tell."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def int8_available() -> bool:
    """Whether this PyTorch build has oneDNN's int8 convolution operators."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qconv2d_pointwise")


class Observer:
    """Running min/max of a tensor over calibration, always including 0 (zero padding must be exact)."""

    def __init__(self) -> None:
        self.low = 0.0
        self.high = 0.0
        self.count = 0

    def observe(self, x: torch.Tensor) -> None:
        low, high = torch.aminmax(x.detach())
        self.low = min(self.low, float(low))
        self.high = max(self.high, float(high))
        self.count += 1

    def qparams(self, qmax: int) -> tuple[float, int]:
        """Scale and zero point of an asymmetric uint8 grid 0..qmax covering the observed range."""
        if self.count == 0:
            raise RuntimeError("an observer saw no data: calibrate with at least one frame before freeze()")
        span = self.high - self.low
        scale = span / qmax if span > 0 else 1.0
        zero_point = min(qmax, max(0, round(-self.low / scale)))
        return scale, int(zero_point)


class Quantize(nn.Module):
    """Where a float tensor becomes uint8: records its range in calibration, quantizes it once frozen.

    A QTensor passes through unchanged if it has this point's grid, and is requantized otherwise.
    """

    def __init__(self, observer: Observer | None = None):
        super().__init__()
        self.observer = observer or Observer()
        self.frozen = False
        self.scale, self.zero_point, self.qmax = 1.0, 0, 255

    def freeze(self, qmax: int) -> None:
        self.scale, self.zero_point = self.observer.qparams(qmax)
        self.qmax = qmax
        self.frozen = True

    def forward(self, x: Activation) -> Activation:
        if not self.frozen:
            assert isinstance(x, torch.Tensor)
            self.observer.observe(x)
            return x
        if isinstance(x, QTensor):
            if x.scale == self.scale and x.zero_point == self.zero_point:
                return x
            x = x.dequantize()
        layout = _layout(x)
        quantized = torch.quantize_per_tensor(x, self.scale, self.zero_point, torch.quint8)
        # Its bytes as a plain uint8 tensor: a view of the same storage (int_repr would copy them).
        data = torch.empty(0, dtype=torch.uint8).set_(
            quantized.untyped_storage(), quantized.storage_offset(), quantized.size(), quantized.stride()
        )
        if self.qmax < 255:
            data = data.clamp_(max=self.qmax)
        return QTensor(data.contiguous(memory_format=layout), self.scale, self.zero_point)


class QConv(nn.Module):
    """``act(conv(x) [+ other])`` with int8 weights and uint8 input; uint8 output on ``output``'s grid, or
    float32 output when ``output`` is None.

    Args:
        weight, bias: float32 weight and bias (BatchNorm already folded).
        stride, padding, groups: of the convolution (zero padding).
        act: "none" or "relu" (fused); other activations are applied by the caller on a float32 output.
        output: the Quantize point whose grid the output is written on, or None for float32 output.

    ``float_input`` (set by ``QuantizedUNet`` on its first convolution): the input stays float32 and the
    convolution runs in float32 with its float32 weights, writing ``output``'s grid.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: list[int],
        padding: list[int],
        groups: int = 1,
        act: str = "none",
        output: Quantize | None = None,
    ):
        super().__init__()
        if act not in ("none", "relu"):
            raise ValueError(f"an int8 convolution fuses only relu, got {act!r}")
        self.weight = nn.Parameter(weight.detach().float().clone(), requires_grad=False)
        bias = torch.zeros(weight.shape[0]) if bias is None else bias.detach().float().clone()
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.groups, self.act = list(stride), list(padding), groups, act
        self.output = output
        self.float_input = False
        self.frozen = False
        self._packed: tuple[float, int, torch.Tensor] | None = None

    @classmethod
    def from_fused(cls, conv: inference.FusedConv, output: Quantize | None = None, act: str | None = None) -> QConv:
        """The int8 version of ``conv``; ``act`` replaces its activation (``"none"`` where the caller applies it)."""
        if conv.reflect:
            raise ValueError("int8 convolutions support zero padding only (reflect padding is in ConvNeXt blocks)")
        return cls(conv.weight, conv.bias, conv.stride, conv.padding, conv.groups, act or conv.act, output)

    def freeze(self, qmax: int) -> None:
        self.frozen = True
        if self.float_input:
            return
        weight = self.weight.detach()
        scales = weight.abs().amax(dim=(1, 2, 3)).clamp_min(1e-12) / 127.0
        self.register_buffer("qweight", (weight / scales.view(-1, 1, 1, 1)).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("weight_scales", scales.double().float())
        self.register_buffer("weight_zero_points", torch.zeros(len(scales), dtype=torch.int32))
        del self.weight  # the int8 copy replaces it

    def _packed_weight(self, x: QTensor) -> torch.Tensor:
        # oneDNN packs weights for one input grid; every input of a frozen model has a fixed grid.
        if self._packed is None or self._packed[:2] != (x.scale, x.zero_point):
            packed = torch.ops.onednn.qconv_prepack(
                self.qweight, self.weight_scales, x.scale, x.zero_point, self.stride, self.padding, [1, 1],
                self.groups, None,
            )
            self._packed = (x.scale, x.zero_point, packed)
        return self._packed[2]

    def forward(self, x: Activation, other: Activation | None = None) -> Activation:
        if not self.frozen or self.float_input:
            assert isinstance(x, torch.Tensor)
            y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, groups=self.groups)
            if other is not None:
                assert isinstance(other, torch.Tensor)
                y = y + other
            # A frozen output grid whose zero is 0 clamps negatives to 0 itself: the ReLU is in the quantization.
            relu_in_grid = self.frozen and self.output is not None and self.output.zero_point == 0
            if self.act == "relu" and not relu_in_grid:
                y = F.relu(y)
            return self.output(y) if self.output is not None else y
        assert isinstance(x, QTensor)
        weight = self._packed_weight(x)
        if self.output is not None:
            out_scale, out_zero_point, out_dtype = self.output.scale, self.output.zero_point, None
        else:
            out_scale, out_zero_point, out_dtype = 1.0, 0, torch.float32
        common = (x.data, x.scale, x.zero_point, weight, self.weight_scales, self.weight_zero_points)
        geometry = (self.stride, self.padding, [1, 1], self.groups, out_scale, out_zero_point, out_dtype)
        if other is None:
            y = torch.ops.onednn.qconv2d_pointwise(*common, self.bias, *geometry, self.act, [], "")
        else:
            if self.output is None:  # float32 accumulator
                accum, accum_scale, accum_zero_point = other, 1.0, 0
                if isinstance(accum, QTensor):
                    accum = accum.dequantize()
            else:
                if not isinstance(other, QTensor):
                    other = self.output(other)
                assert isinstance(other, QTensor)
                accum, accum_scale, accum_zero_point = other.data, other.scale, other.zero_point
            # The accumulator is overwritten with the result: callers pass temporaries only.
            y = torch.ops.onednn.qconv2d_pointwise.binary(
                *common[:6], accum, self.bias, *geometry, accum_scale, accum_zero_point, "sum", 1.0,
                None if self.act == "none" else self.act, [], "",
            )
        if self.output is not None:
            return QTensor(y, out_scale, out_zero_point)
        return y


def _q(conv: inference.FusedConv, output: Quantize | None = None) -> QConv:
    return QConv.from_fused(conv, output if output is not None else Quantize())


class QSequential(nn.Sequential):
    pass


class QResNetBlock(nn.Module):
    def __init__(self, block: inference.FusedResNetBlock):
        super().__init__()
        self.conv1 = _q(block.conv1)
        self.shortcut = _q(block.shortcut)
        self.conv2 = _q(block.conv2)

    def forward(self, x: Activation) -> Activation:
        return self.conv2(self.conv1(x), other=self.shortcut(x))


class QUp(nn.Module):
    """Transposed 2x2 stride-2 convolution as a 1x1 convolution whose output pixels are rearranged (a pixel
    shuffle) straight into the buffer of the concatenation with the skip; then a block."""

    def __init__(self, up: inference.FusedUp):
        super().__init__()
        transposed = up.upsample
        if not (
            isinstance(transposed, nn.ConvTranspose2d)
            and tuple(transposed.kernel_size) == (2, 2)
            and tuple(transposed.stride) == (2, 2)
            and tuple(transposed.padding) == (0, 0)
            and transposed.groups == 1
        ):
            raise ValueError("int8 decoders need a 2x2 stride-2 transposed convolution")
        weight = transposed.weight.detach()  # [c_in, c_out, 2, 2]
        c_in, c_out = weight.shape[:2]
        # Output channel (a * 2 + b) * c_out + o of the 1x1 convolution is pixel (a, b) of channel o, so that in
        # channels-last memory each output pixel's c_out channels are one contiguous run.
        pointwise = weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in, 1, 1)
        bias = transposed.bias.detach() if transposed.bias is not None else torch.zeros(c_out)
        self.deep = Quantize()
        self.concat = Quantize()  # the upsampled features and the skip share one grid so they can be concatenated
        self.upsample = QConv(pointwise, bias.repeat(4), [1, 1], [0, 0], output=self.concat)
        self.block = _quantize(up.block)

    def forward(self, deep: Activation, skip: Activation) -> Activation:
        upsampled = self.upsample(self.deep(deep))
        skip = self.concat(skip)
        if isinstance(upsampled, QTensor):
            assert isinstance(skip, QTensor)
            joined: Activation = QTensor(_shuffle_and_concat(upsampled.data, skip.data), skip.scale, skip.zero_point)
        else:
            assert isinstance(skip, torch.Tensor)
            joined = _shuffle_and_concat(upsampled, skip)
        return self.block(joined)


def _shuffle_and_concat(upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``cat([pixel_shuffle(upsampled), skip])`` in channels-last memory for ``upsampled`` channels ordered
    ``(a, b, o)`` (``QUp``): one pass over each input, written into the result."""
    batch, channels4, height, width = upsampled.shape
    c_up, c_skip = channels4 // 4, skip.shape[1]
    joined = torch.empty(
        batch, c_up + c_skip, 2 * height, 2 * width, dtype=upsampled.dtype, memory_format=torch.channels_last
    )
    rows = joined.permute(0, 2, 3, 1).view(batch, height, 2, width, 2, c_up + c_skip)  # [B, H, a, W, b, C]
    pixels = upsampled.permute(0, 2, 3, 1).reshape(batch, height, width, 2, 2, c_up)  # [B, H, W, a, b, c_up]
    rows[..., :c_up].copy_(pixels.permute(0, 1, 3, 2, 4, 5))
    joined.permute(0, 2, 3, 1)[..., c_up:].copy_(skip.permute(0, 2, 3, 1))
    return joined


class QConvGRU(nn.Module):
    """ConvGRU with each convolution over ``[x, h]`` split into an x part and an h part (two uint8 inputs on
    their own grids, one float32 accumulator); gates, candidate and the state update run in float32, in place on
    the convolutions' outputs. The candidate convolutions are built with twice the weights, so that the candidate's
    tanh is one sigmoid: ``tanh(c) = 2 sigmoid(2c) - 1`` (see ``_tanh_from_doubled``)."""

    def __init__(self, unit: inference.FusedConvGRU):
        super().__init__()
        gates, candidate = unit.gates_conv, unit.candidate_conv
        c = gates.weight.shape[1] // 2
        self.hidden = Quantize()
        self.reset_hidden = Quantize()
        pad, stride = gates.padding, gates.stride
        self.gates_x = QConv(gates.weight[:, :c], gates.bias, stride, pad)
        self.gates_h = QConv(gates.weight[:, c:], None, stride, pad)
        doubled_bias = None if candidate.bias is None else 2 * candidate.bias
        self.candidate_x = QConv(2 * candidate.weight[:, :c], doubled_bias, stride, pad)
        self.candidate_h = QConv(2 * candidate.weight[:, c:], None, stride, pad)
        self.state_warp = unit.state_warp  # float32, on the dequantized x: a 2-channel motion and a resampling

    def forward(self, x: Activation, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:
            h = torch.zeros(x.shape).contiguous(memory_format=torch.channels_last)
        elif self.state_warp is not None:
            h = self.state_warp(_real(x), h).contiguous(memory_format=torch.channels_last)
        gates = self.gates_h(self.hidden(h), other=self.gates_x(x))
        assert isinstance(gates, torch.Tensor)
        r, z = gates.sigmoid_().chunk(2, dim=1)
        candidate = self.candidate_h(self.reset_hidden(r * h), other=self.candidate_x(x))
        assert isinstance(candidate, torch.Tensor)
        return torch.lerp(_tanh_from_doubled(candidate), h, z)


def _tanh_from_doubled(doubled: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` from ``2x``, in place: ``2 sigmoid(2x) - 1`` (PyTorch's AVX2 tanh takes twice as long as this)."""
    return doubled.sigmoid_().mul_(2).sub_(1)


class QConvRNN(nn.Module):
    """ConvRNN: ``relu(C_x x + C_h h)`` as one int8 convolution with the float32 ``C_h h`` as accumulator; the
    residual variant's tanh runs on the float32 output (oneDNN fuses only ReLU after a sum)."""

    zero_state_bias: torch.Tensor

    def __init__(self, unit: inference.FusedConvRNN):
        super().__init__()
        self.hidden = Quantize()
        self.hidden_conv = QConv.from_fused(unit.hidden_conv)
        self.tanh = unit.input_conv.act == "tanh"
        self.input_conv = QConv.from_fused(unit.input_conv, act="none" if self.tanh else None)
        zero_state_bias = unit.zero_state_bias.detach().clone()
        if self.tanh:  # both convolutions compute twice the pre-activation (see _tanh_from_doubled)
            for conv in (self.hidden_conv, self.input_conv):
                conv.weight.data.mul_(2)
                conv.bias.data.mul_(2)
            zero_state_bias.mul_(2)
        self.register_buffer("zero_state_bias", zero_state_bias)
        self.state_warp = unit.state_warp  # float32, on the dequantized x: a 2-channel motion and a resampling

    def forward(self, x: Activation, h: torch.Tensor | None) -> torch.Tensor:
        if h is None:
            other = self.zero_state_bias.expand(x.shape).contiguous(memory_format=torch.channels_last)
        else:
            if self.state_warp is not None:
                h = self.state_warp(_real(x), h).contiguous(memory_format=torch.channels_last)
            other = self.hidden_conv(self.hidden(h))
        y = self.input_conv(x, other=other)
        assert isinstance(y, torch.Tensor)
        return _tanh_from_doubled(y) if self.tanh else y


def _quantize(module: nn.Module) -> nn.Module:
    """The int8 version of one fused building block."""
    if isinstance(module, inference.FusedResNetBlock):
        return QResNetBlock(module)
    if isinstance(module, inference.FusedUp):
        return QUp(module)
    if isinstance(module, inference.FusedConvGRU):
        return QConvGRU(module)
    if isinstance(module, inference.FusedConvRNN):
        return QConvRNN(module)
    if isinstance(module, inference.FusedSequential):
        return QSequential(*(_quantize(child) for child in module))
    if isinstance(module, inference.FusedConv):
        return _q(module)
    raise ValueError(f"no int8 version of {type(module).__name__} (int8 supports vanilla and resnet blocks)")


class QuantizedUNet(nn.Module):
    """Int8 twin of a ``RecurrentUNet`` with the same ``step``; see the module docstring.

    Args:
        model: a trained model (left untouched).
        activation_bits: 8, or 7 (0..127, the default on CPUs without VNNI, where 8-bit inputs can saturate the
            AVX2 multiply-add); None chooses by the CPU.
    """

    def __init__(self, model: RecurrentUNet, activation_bits: int | None = None):
        super().__init__()
        if any(isinstance(m, blocks.ConvNeXtBlock | blocks.ConvNeXtUp) for m in model.modules()):
            raise ValueError("int8 supports vanilla and resnet blocks, not convnext ones (GELU, reflect padding)")
        fused = inference.optimize_for_inference(model, torch.float32, channels_last=True)
        self.source = fused.source
        self.is_temporal = model.is_temporal
        self.temporal_residual = model.temporal_residual
        self.temporal_memory_only = model.temporal_memory_only
        self.output_memory = fused.output_memory  # float32, on the dequantized feature and the float32 logits
        self.temporal_levels = model.temporal_levels
        self.skip_gates = fused.skip_gates  # float32 1x1 convolutions on the float32 skip (x dequantized, h float)
        self.num_classes = model.num_classes
        self.channels = model.channels
        self.activation_bits = activation_bits or (8 if has_vnni() else 7)
        self.encoder = nn.ModuleList(_quantize(stage) for stage in fused.encoder)
        stem = self.encoder[0]
        if not (isinstance(stem, QSequential) and isinstance(stem[0], QConv)):
            raise ValueError(f"int8 expects a stem that starts with a plain convolution, found {stem}")
        stem[0].float_input = True  # reads the float32 frame (see the module docstring)
        self.temporal = nn.ModuleList(_quantize(unit) for unit in fused.temporal)
        self.decoder = nn.ModuleList(_quantize(stage) for stage in fused.decoder)
        self.head = QConv.from_fused(fused.head)  # float32 logits
        self.frozen = False
        self.calibration_frames = 0

    def freeze(self) -> QuantizedUNet:
        """Turn the recorded ranges into uint8 grids and the weights into int8 (all but the first convolution's,
        which stays float32); the model then runs in int8."""
        if self.calibration_frames == 0:
            raise RuntimeError("calibrate the model (run step on some frames) before freeze()")
        qmax = 2**self.activation_bits - 1
        for module in self.modules():
            if isinstance(module, Quantize | QConv):
                module.freeze(qmax)
        self.frozen = True
        return self

    @torch.no_grad()
    def step(self, frame: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Segment one normalised float32 frame ``[B, 3, H, W]``; float32 logits and float32 state."""
        self.source.check_frame(frame)
        height, width = frame.shape[-2:]
        padded_h, padded_w = self.source.padded_size(height, width)
        padded = F.pad(frame.float(), (0, padded_w - width, 0, padded_h - height))
        # Skips of residual units pass x + h in float32 (_real dequantizes x).
        logits, new_state = run_levels(self, padded.contiguous(memory_format=torch.channels_last), state, _real)
        if not self.frozen:
            self.calibration_frames += frame.shape[0]
        return logits[..., :height, :width], new_state


def _real(x: Activation) -> torch.Tensor:
    return x.dequantize() if isinstance(x, QTensor) else x


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else (
        torch.contiguous_format
    )


def grid_summary(model: QuantizedUNet) -> dict[str, float]:
    """Smallest and largest activation scale of a frozen model (for reports and sanity checks)."""
    scales = [m.scale for m in model.modules() if isinstance(m, Quantize)]
    return {"min_scale": min(scales), "max_scale": max(scales), "log2_range": math.log2(max(scales) / min(scales))}

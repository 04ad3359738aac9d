"""Output memory: a learned running average of the class probabilities, whose weight each pixel of each frame sets.

``RecurrentUNet(output_memory=True)`` keeps, besides its units' states, a memory ``m`` of class probabilities at
the (padded) frame size. On frame t, with ``p_t = softmax(logits_t)`` and a gate ``g_t`` in (0, 1) per pixel:

    m_t = (g_t * p_t + (1 - g_t) * m_{t-1}) / (g_t + (1 - g_t) * sum_c m_{t-1})

and the model returns ``log m_t`` as its logits (a log-probability: cross-entropy and argmax read it as they read
logits). The zero state is a memory that holds nothing (sum 0), and then ``m_t = p_t`` exactly: the first frame of
a video gets the per-frame prediction, whatever the gate says; later memories sum to 1, so the division is by 1.

The gate sees what a frame's reliability shows in: the decoder's last feature, ``p_t``, ``m_{t-1}``, the entropy of
each, their agreement ``sum_c p_t m_{t-1}``, and the frame itself (the mean and standard deviation of each colour
channel: dark, overexposed, noisy and blurred pixels show there before the network reads them), averaged over 4 x 4
pixels, through a 1x1 convolution to ``hidden`` channels, ReLU, plus the frame-wide mean of that layer (a corrupted
frame is often corrupted everywhere), and a 1x1 convolution, upsampled bilinearly to the frame. It starts at a
constant ``initial_gate`` (the last convolution's weights at zero), close to 1: the model starts as its per-frame
network with a little averaging, and learns where to lean on memory (a corrupted or occluded frame) and where not to
(a clean frame after motion). Unlike the units on the skips, it cannot change what a frame's own prediction is: it
only weighs it against the past, which is what a model trained on 1 Hz video can carry to 15 Hz video
(docs/benchmarks.md, issue 15 on CamVid). It does not warp the memory: motion between frames is not compensated.

``detach_network`` (training only, ``loss.memory_gradient: false``): the gate reads the network's outputs without
passing gradient back into them, so the loss on ``log m_t`` trains the gate alone.

Cost per pixel: about ``12 * num_classes`` operations for the blend, entropies and agreement, and
``hidden * (channels + 2 * num_classes + 10) / 16`` multiply-adds for the gate (about 46 for small-deep with 11
classes and hidden 16: its training FLOPs at 180 x 240 grow by 0.3% per frame with a memory).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-8
GATE_STRIDE = 4
"""The gate is computed on 4 x 4 pixel means and upsampled: a sixteenth of its full-resolution cost."""
FRAME_STATISTICS = 6
"""The gate's inputs from the frame: the mean and standard deviation of each colour channel over 4 x 4 pixels."""


def frame_statistics(frame: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation ``[B, 6, h, w]`` of each channel of a frame ``[B, 3, H, W]`` over 4 x 4 pixels."""
    frame = frame.float()
    mean = F.avg_pool2d(frame, GATE_STRIDE, ceil_mode=True)
    square = F.avg_pool2d(frame * frame, GATE_STRIDE, ceil_mode=True)
    return torch.cat([mean, (square - mean * mean).clamp_min(0).add(1e-6).sqrt()], dim=1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy ``[B, 1, H, W]`` of probabilities ``[B, K, H, W]`` (0 for an empty memory)."""
    return -(p * p.clamp_min(EPS).log()).sum(dim=1, keepdim=True)


class OutputMemory(nn.Module):
    """``(feature, logits, memory, frame) -> (log m_t, m_t)``, see the module docstring; ``frame`` is the (padded)
    input frame the logits come from.

    Args:
        channels: channels of the decoder's last feature (the level-0 width).
        num_classes: classes of the logits.
        hidden: channels of the gate's hidden layer.
        initial_gate: the gate's starting value everywhere (the weight of the current frame).
    """

    def __init__(self, channels: int, num_classes: int, hidden: int = 16, initial_gate: float = 0.9):
        super().__init__()
        if not 0 < initial_gate < 1:
            raise ValueError(f"initial_gate must be in (0, 1), got {initial_gate}")
        self.hidden = nn.Conv2d(channels + 2 * num_classes + 3 + FRAME_STATISTICS, hidden, 1)
        self.gate = nn.Conv2d(hidden, 1, 1)
        assert self.gate.bias is not None
        with torch.no_grad():
            self.gate.weight.zero_()
            self.gate.bias.fill_(math.log(initial_gate / (1 - initial_gate)))
        self.detach_network = False
        """Training only: the gate reads the network's feature and logits detached (plain data, not saved)."""

    def forward(
        self, feature: torch.Tensor, logits: torch.Tensor, memory: torch.Tensor | None, frame: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.detach_network and torch.is_grad_enabled():
            feature, logits = feature.detach(), logits.detach()
        p = logits.float().softmax(dim=1)
        if memory is None:
            memory = torch.zeros_like(p)
        if memory.shape != p.shape:
            raise ValueError(
                f"output memory has shape {tuple(memory.shape)} but this frame needs {tuple(p.shape)}; frame size or "
                "batch size changed mid-sequence: reset the state (state=None)"
            )
        memory = memory.float()
        agreement = (p * memory).sum(dim=1, keepdim=True)
        inputs = torch.cat([feature.float(), p, memory, entropy(p), entropy(memory), agreement], dim=1)
        pooled = torch.cat([F.avg_pool2d(inputs, GATE_STRIDE, ceil_mode=True), frame_statistics(frame)], dim=1)
        hidden = torch.relu(self.hidden(pooled.to(self.hidden.weight.dtype)))  # a bf16 copy gates in bf16
        hidden = hidden + hidden.mean(dim=(2, 3), keepdim=True)
        gate = F.interpolate(self.gate(hidden).float(), size=p.shape[-2:], mode="bilinear", align_corners=False)
        g = torch.sigmoid(gate)
        mass = memory.sum(dim=1, keepdim=True)
        blended = (g * p + (1 - g) * memory) / (g + (1 - g) * mass)
        return blended.clamp_min(EPS).log(), blended

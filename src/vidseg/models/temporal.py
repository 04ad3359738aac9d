"""Convolutional temporal units that carry a hidden state from frame to frame.

State is explicit: ``unit(x, h) -> h_new``; ``h = None`` means the zero initial state.
  * cRNN (Keren & Schuller, 2017, as adapted in the report): y_t = ReLU(C_x * x_t + C_h * y_{t-1}).
  * cGRU (Ballas et al., 2016; report eqs. 8-11): [r, z] = sigmoid(C_rz * [x, h]),
    n = tanh(C_n * [x, r * h]), h_t = (1 - z) * n + z * h_{t-1}.
All convolutions are 3x3, stride 1, padding 1, with bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvRNN(nn.Module):
    """Convolutional RNN cell whose output is its hidden state.

    Args:
        channels: input and hidden channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.input_conv = nn.Conv2d(channels, channels, 3, padding=1)  # C_x
        self.hidden_conv = nn.Conv2d(channels, channels, 3, padding=1)  # C_h

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = torch.zeros_like(x)
        return F.relu(self.input_conv(x) + self.hidden_conv(h))


class ConvGRU(nn.Module):
    """Convolutional GRU cell.

    Args:
        channels: input and hidden channels.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.gates_conv = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)  # C_rz: first c are r, next c are z
        self.candidate_conv = nn.Conv2d(2 * channels, channels, 3, padding=1)  # C_n

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            h = torch.zeros_like(x)
        r, z = torch.sigmoid(self.gates_conv(torch.cat([x, h], dim=1))).chunk(2, dim=1)
        n = torch.tanh(self.candidate_conv(torch.cat([x, r * h], dim=1)))
        return (1 - z) * n + z * h


TEMPORAL_UNITS: dict[str, type[nn.Module] | None] = {"none": None, "crnn": ConvRNN, "cgru": ConvGRU}

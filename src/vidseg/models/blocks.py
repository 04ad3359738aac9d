"""Convolutional building blocks of the recurrent UNet: vanilla UNet, ResNet and ConvNeXt variants.

Each block type provides three stages that the UNet assembles (see ``BlockSet``):
  * ``stem(3, c0)``: full-resolution input stage;
  * ``down(c_prev, c)``: 2x2 stride-2 downsampling followed by a block;
  * ``up(c_deep, c)``: upsampling of the deeper features, fusion with the skip, a block.

Layouts follow ``docs/model-spec.md`` exactly (they reproduce the report's Table 3 parameter counts).
Papers: U-Net (Ronneberger et al., 2015), ResNet (He et al., 2015), ConvNeXt (Liu et al., 2022) and the
ConvUNeXt decoder gate (Han et al., 2022).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, act: type[nn.Module] | None) -> nn.Sequential:
    """Conv (with bias, 'same' zero padding) -> BatchNorm -> optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class VanillaBlock(nn.Sequential):
    """[Conv3x3, BN, ReLU] x 2, as in U-Net."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            conv_bn_act(in_channels, out_channels, 3, nn.ReLU),
            conv_bn_act(out_channels, out_channels, 3, nn.ReLU),
        )


class ResNetBlock(nn.Module):
    """Basic residual block with a 1x1 projection shortcut that is always present.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_bn_act(in_channels, out_channels, 3, nn.ReLU)
        self.conv2 = conv_bn_act(out_channels, out_channels, 3, None)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block with BatchNorm instead of LayerNorm, no layer scale.

    depthwise Conv7x7 (reflect padding) -> BN -> 1x1 d->4d -> GELU -> 1x1 4d->d -> BN; out = GELU(x + .).
    The pointwise layers are 1x1 convolutions, equivalent to the channels-last Linear layers of ConvNeXt
    with identical parameter counts, and they keep the tensor in one layout throughout.

    Args:
        dim: channels in and out.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, padding_mode="reflect")
        self.norm1 = nn.BatchNorm2d(dim)
        self.pwconv1 = nn.Conv2d(dim, 4 * dim, 1)
        self.act = nn.GELU()
        self.pwconv2 = nn.Conv2d(4 * dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(self.dwconv(x))
        y = self.norm2(self.pwconv2(self.act(self.pwconv1(y))))
        return self.act(x + y)


# ---------------------------------------------------------------------------------------------- stems


class VanillaStem(VanillaBlock):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels)


class ResNetStem(nn.Sequential):
    """[Conv7x7, BN, ReLU], [Conv3x3, BN, ReLU]; no shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            conv_bn_act(in_channels, out_channels, 7, nn.ReLU),
            conv_bn_act(out_channels, out_channels, 3, nn.ReLU),
        )


class ConvNeXtStem(nn.Sequential):
    """[Conv7x7 (zero padding), BN, GELU], then a ConvNeXt block."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(conv_bn_act(in_channels, out_channels, 7, nn.GELU), ConvNeXtBlock(out_channels))


# --------------------------------------------------------------------------------------- down stages


class Down(nn.Sequential):
    """2x2 stride-2 convolution that keeps the channels, then a block that changes them."""

    def __init__(self, in_channels: int, out_channels: int, block: type[nn.Module]):
        super().__init__(nn.Conv2d(in_channels, in_channels, 2, stride=2), block(in_channels, out_channels))


class VanillaDown(Down):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, VanillaBlock)


class ResNetDown(Down):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, ResNetBlock)


class ConvNeXtDown(nn.Sequential):
    """2x2 stride-2 convolution that changes the channels, then a ConvNeXt block."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 2, stride=2), ConvNeXtBlock(out_channels))


# ----------------------------------------------------------------------------------------- up stages


class Up(nn.Module):
    """2x2 stride-2 transposed conv (halves the channels), concat (upsampled, skip), then a block."""

    def __init__(self, deep_channels: int, out_channels: int, block: type[nn.Module]):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(deep_channels, out_channels, 2, stride=2)
        self.block = block(2 * out_channels, out_channels)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([self.upsample(deep), skip], dim=1))


class VanillaUp(Up):
    def __init__(self, deep_channels: int, out_channels: int):
        super().__init__(deep_channels, out_channels, VanillaBlock)


class ResNetUp(Up):
    def __init__(self, deep_channels: int, out_channels: int):
        super().__init__(deep_channels, out_channels, ResNetBlock)


class ConvNeXtUp(nn.Module):
    """ConvUNeXt decoder stage: BN + transposed conv on the deep input, a gated skip, 1x1 fusion, a block.

    With u the upsampled features and s the skip, [g1, g2, g3] = gate(u) and
    s' = L2(sigmoid(L1(g1 + s)) * s + sigmoid(g2) * tanh(g3)); out = CN(Conv1x1(concat(s', u))).
    """

    def __init__(self, deep_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(deep_channels)
        self.upsample = nn.ConvTranspose2d(deep_channels, out_channels, 2, stride=2)
        self.gate = nn.Conv2d(out_channels, 3 * out_channels, 1)
        self.skip_attn = nn.Conv2d(out_channels, out_channels, 1)  # L1
        self.skip_out = nn.Conv2d(out_channels, out_channels, 1)  # L2
        self.fuse = nn.Conv2d(2 * out_channels, out_channels, 1)
        self.block = ConvNeXtBlock(out_channels)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        u = self.upsample(self.norm(deep))
        g1, g2, g3 = self.gate(u).chunk(3, dim=1)
        gated = torch.sigmoid(self.skip_attn(g1 + skip)) * skip + torch.sigmoid(g2) * torch.tanh(g3)
        return self.block(self.fuse(torch.cat([self.skip_out(gated), u], dim=1)))


@dataclass(frozen=True)
class BlockSet:
    """The three stage constructors of one block type, each called as ``stage(in_channels, out_channels)``."""

    stem: type[nn.Module]
    down: type[nn.Module]
    up: type[nn.Module]


BLOCK_SETS: dict[str, BlockSet] = {
    "vanilla": BlockSet(stem=VanillaStem, down=VanillaDown, up=VanillaUp),
    "resnet": BlockSet(stem=ResNetStem, down=ResNetDown, up=ResNetUp),
    "convnext": BlockSet(stem=ConvNeXtStem, down=ConvNeXtDown, up=ConvNeXtUp),
}

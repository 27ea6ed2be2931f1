"""Spatial stage: an SD/SDXL-style 2D convolutional autoencoder applied frame by frame.

The encoder stops after its mid block and emits ``block_out_channels[-1]`` features at
1/``downsample`` resolution (no output norm/conv, no quant conv); the decoder starts at its mid
block (no input conv). MUG-V hands these features to the temporal stage (SPEC: "MUG-V video VAE").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mugv.vae.config import SpatialConfig

_EPS = 1e-6


class ResnetBlock2D(nn.Module):
    """GroupNorm -> SiLU -> conv3x3, twice, plus a 1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class MidAttention(nn.Module):
    """Single-head self-attention over all H*W positions of a frame, with a residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        h = rearrange(self.norm(x), "N C H W -> N 1 (H W) C")
        h = F.scaled_dot_product_attention(self.to_q(h), self.to_k(h), self.to_v(h))
        h = rearrange(self.to_out(h), "N 1 (H W) C -> N C H W", H=H, W=W)
        return x + h


class MidBlock2D(nn.Module):
    """resnet -> (attention) -> resnet at the lowest resolution."""

    def __init__(self, channels: int, groups: int, attention: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, groups) for _ in range(2)])
        self.attention = MidAttention(channels, groups) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        if self.attention is not None:
            x = self.attention(x)
        return self.resnets[1](x)


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv with asymmetric (right/bottom) zero padding, as in SD's VAE."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample2D(nn.Module):
    """Nearest 2x upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level2D(nn.Module):
    """The resnets of one resolution level and the resampler that leaves it (if any)."""

    def __init__(self, widths: list[int], groups: int, resample: nn.Module | None) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock2D(widths[i], widths[i + 1], groups) for i in range(len(widths) - 1)
        )
        self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.resample is None else self.resample(x)


class SpatialEncoder(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (N, C_mid, H/8, W/8) mid-block features."""

    def __init__(self, config: SpatialConfig) -> None:
        super().__init__()
        ch, g = config.block_out_channels, config.norm_groups
        self.conv_in = nn.Conv2d(config.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        prev = ch[0]
        for i, width in enumerate(ch):
            widths = [prev] + [width] * config.layers_per_block
            last = i == len(ch) - 1
            self.down_blocks.append(Level2D(widths, g, None if last else Downsample2D(width)))
            prev = width
        self.mid_block = MidBlock2D(ch[-1], g, config.mid_attention)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # (N, ch[0], H, W)
        for block in self.down_blocks:
            x = block(x)
        return self.mid_block(x)  # (N, ch[-1], H/8, W/8)


class SpatialDecoder(nn.Module):
    """(N, C_mid, H/8, W/8) features -> (N, 3, H, W) frames."""

    def __init__(self, config: SpatialConfig) -> None:
        super().__init__()
        ch, g = tuple(reversed(config.block_out_channels)), config.norm_groups
        self.mid_block = MidBlock2D(ch[0], g, config.mid_attention)
        self.up_blocks = nn.ModuleList()
        prev = ch[0]
        for i, width in enumerate(ch):
            widths = [prev] + [width] * (config.layers_per_block + 1)
            last = i == len(ch) - 1
            self.up_blocks.append(Level2D(widths, g, None if last else Upsample2D(width)))
            prev = width
        self.norm_out = nn.GroupNorm(g, ch[-1], eps=_EPS)
        self.conv_out = nn.Conv2d(ch[-1], config.in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(x)  # (N, ch[-1], h, w)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))  # (N, 3, 8h, 8w)

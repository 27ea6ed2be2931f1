"""Temporal stage: a 3D-conv ResNet (MAGVIT-v2 lineage) that folds 8 frames into one latent.

The encoder sees one group of ``2 ** (levels - 1)`` frames at a time and halves time at the end
of every level but the last; the decoder runs over the whole latent sequence and doubles time
with a nearest-upsampled res block, then with depth-to-space convs (SPEC: "MUG-V video VAE").
With ``TemporalConfig.linear_shortcut`` (CPU presets) a 1x1 linear map from each group's
stacked features to the latent mean, and back, is added to the conv stacks' outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mugv.vae.config import TemporalConfig


class CausalConv3d(nn.Conv3d):
    """A 3D conv padded in time by ``k - stride`` frames, split front/back as MUG-V does.

    The name is MAGVIT's; with MUG-V's split a 3-tap conv sees one frame either side, and a
    stride-2 conv pads one frame at the end, so ``T`` frames become ``T / stride``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, *, stride: int = 1, bias: bool
    ) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=(stride, 1, 1), bias=bias)
        time_pad = kernel - stride
        space_pad = kernel // 2
        self.padding_3d = (space_pad, space_pad, space_pad, space_pad)
        self.padding_3d += (time_pad // 2, time_pad - time_pad // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.padding_3d))


class ResBlock3D(nn.Module):
    """GroupNorm -> SiLU -> 3x3x3 conv, twice (no biases), 1x1x1 shortcut on a width change."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, bias=False)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, bias=False)
        self.shortcut = (
            CausalConv3d(in_channels, out_channels, 1, bias=False)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return x + h


class UpsampleResBlock3D(ResBlock3D):
    """Nearest 2x upsampling in time, then a res block (the decoder's first time doubling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.interpolate(x, scale_factor=(2.0, 1.0, 1.0), mode="nearest"))


def _res_stack(widths: list[int], groups: int) -> nn.ModuleList:
    return nn.ModuleList(
        ResBlock3D(widths[i], widths[i + 1], groups) for i in range(len(widths) - 1)
    )


class TemporalEncoder(nn.Module):
    """(G, C_in, 8, h, w), one frame group per row -> (G, 2 * latent, 1, h, w) moments."""

    def __init__(self, config: TemporalConfig) -> None:
        super().__init__()
        g, n = config.norm_groups, config.num_res_blocks
        widths = [config.filters * m for m in config.channel_multipliers]
        self.conv_in = CausalConv3d(config.in_channels, config.filters, 3, bias=False)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        prev = config.filters
        for i, width in enumerate(widths):
            self.levels.append(_res_stack([prev] + [width] * n, g))
            if i < len(widths) - 1:
                self.downsamples.append(CausalConv3d(width, width, 3, stride=2, bias=True))
            prev = width
        self.mid = _res_stack([prev] * (n + 1), g)
        self.norm_out = nn.GroupNorm(g, prev)
        self.conv_out = CausalConv3d(prev, 2 * config.latent_channels, 1, bias=True)
        self.shortcut = (
            nn.Conv3d(config.in_channels * config.downsample, config.latent_channels, 1)
            if config.linear_shortcut
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moments = self._convs(x)
        if self.shortcut is None:
            return moments
        mean = self.shortcut(rearrange(x, "G C g h w -> G (C g) 1 h w"))  # (G, latent, 1, h, w)
        return moments + torch.cat([mean, torch.zeros_like(mean)], dim=1)

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)  # (G, filters, 8, h, w)
        for i, level in enumerate(self.levels):
            for block in level:
                x = block(x)
            if i < len(self.downsamples):
                x = self.downsamples[i](x)  # time halves: 8 -> 4 -> 2 -> 1
        for block in self.mid:
            x = block(x)
        return self.conv_out(F.silu(self.norm_out(x)))  # (G, 2 * latent, 1, h, w)


class TemporalDecoder(nn.Module):
    """(B, latent, t, h, w) -> (B, C_in, 8t, h, w) over the whole latent sequence."""

    def __init__(self, config: TemporalConfig) -> None:
        super().__init__()
        g, n = config.norm_groups, config.num_res_blocks
        widths = [config.filters * m for m in config.channel_multipliers]
        top = widths[-1]
        self.conv_in = CausalConv3d(config.latent_channels, top, 3, bias=True)
        self.mid = _res_stack([top] * (n + 1), g)
        self.upsample_block = UpsampleResBlock3D(top, top, g)
        # levels[i] and upsamples[i] are indexed like the encoder's; run from the top level down.
        # Level i > 1 ends with a depth-to-space conv; level 1 does not (the nearest upsample
        # above already supplied that doubling).
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleDict()
        prev = top
        stacks: list[nn.ModuleList] = []
        for i in reversed(range(len(widths))):
            stacks.append(_res_stack([prev] + [widths[i]] * n, g))
            prev = widths[i]
            if i > 1:
                self.upsamples[str(i)] = CausalConv3d(prev, 2 * prev, 3, bias=True)
        self.levels.extend(reversed(stacks))
        self.norm_out = nn.GroupNorm(g, prev)
        self.conv_out = CausalConv3d(prev, config.in_channels, 3, bias=True)
        self.group = config.downsample
        self.shortcut = (
            nn.Conv3d(config.latent_channels, config.in_channels * config.downsample, 1)
            if config.linear_shortcut
            else None
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        feats = self._convs(z)
        if self.shortcut is None:
            return feats
        linear = rearrange(self.shortcut(z), "B (C g) t h w -> B C (t g) h w", g=self.group)
        return feats + linear

    def _convs(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)  # (B, top, t, h, w)
        for block in self.mid:
            x = block(x)
        x = self.upsample_block(x)  # (B, top, 2t, h, w)
        for i in reversed(range(len(self.levels))):
            for block in self.levels[i]:
                x = block(x)
            if str(i) in self.upsamples:
                x = self.upsamples[str(i)](x)  # (B, 2C, T, h, w): depth to space in time
                x = rearrange(x, "B (C ts) T h w -> B C (T ts) h w", ts=2)
        return self.conv_out(F.silu(self.norm_out(x)))  # (B, C_in, 8t, h, w)


class DiagonalGaussian:
    """The posterior N(mean, exp(logvar)) from moments split along channels."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + torch.exp(0.5 * self.logvar) * noise

    def kl(self) -> torch.Tensor:
        """KL to N(0, I), summed over all but the batch dim: (B,)."""
        kl = self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar
        return 0.5 * kl.flatten(1).sum(1)

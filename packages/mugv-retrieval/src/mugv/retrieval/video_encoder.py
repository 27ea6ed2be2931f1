"""Divided space-time ViT (TimeSformer, Bertasius et al. 2021) as TW-BERT's video encoder.

Each block runs temporal attention (every patch position attends over time), then spatial
attention (every frame attends over its own patches and its frame CLS), then an MLP, all
pre-LN. Every frame carries its own CLS token; the video CLS is the mean of the frame CLS
tokens (TW-BERT, Sec. 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mugv.retrieval.config import VideoEncoderConfig


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis of (N, S, C)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(
            self.qkv(x), "n s (three h d) -> three n h s d", three=3, h=self.num_heads
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (N, h, S, d)
        return self.proj(rearrange(out, "n h s d -> n s (h d)"))


class DividedBlock(nn.Module):
    """Temporal attention -> spatial attention -> MLP, each with a pre-LN residual."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_t = nn.LayerNorm(width)
        self.attn_t = Attention(width, num_heads)
        self.norm_s = nn.LayerNorm(width)
        self.attn_s = Attention(width, num_heads)
        self.norm_mlp = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, 1+N, C), token 0 of each frame is the frame CLS
        b = x.shape[0]
        xt = rearrange(x, "b t n c -> (b n) t c")
        xt = xt + self.attn_t(self.norm_t(xt))
        x = rearrange(xt, "(b n) t c -> b t n c", b=b)
        xs = rearrange(x, "b t n c -> (b t) n c")
        xs = xs + self.attn_s(self.norm_s(xs))
        xs = xs + self.mlp(self.norm_mlp(xs))
        return rearrange(xs, "(b t) n c -> b t n c", b=b)


@dataclass
class VideoFeatures:
    """Video encoder output: per-frame patches and CLS tokens plus the video CLS."""

    patches: torch.Tensor  # (B, T, N, C)
    frame_cls: torch.Tensor  # (B, T, C)

    @property
    def video_cls(self) -> torch.Tensor:
        return self.frame_cls.mean(dim=1)  # (B, C)


class VideoEncoder(nn.Module):
    """Frames (B, T, 3, H, W), normalised, -> `VideoFeatures`."""

    def __init__(self, config: VideoEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config.width
        self.patch_embed = nn.Conv2d(3, c, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(c))
        self.pos_embed = nn.Parameter(torch.randn(1 + config.num_patches, c) * 0.02)
        self.time_embed = nn.Parameter(torch.randn(config.num_frames, c) * 0.02)
        self.blocks = nn.ModuleList(
            DividedBlock(c, config.num_heads, config.mlp_ratio) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(c)

    def forward(self, frames: torch.Tensor) -> VideoFeatures:
        b, t = frames.shape[:2]
        if t > self.config.num_frames:
            raise ValueError(
                f"VideoEncoder got {t} frames; it was built for at most {self.config.num_frames}"
            )
        x = self.patch_embed(rearrange(frames, "b t c h w -> (b t) c h w"))  # (B*T, C, h, w)
        x = rearrange(x, "(b t) c h w -> b t (h w) c", b=b)  # (B, T, N, C)
        cls = self.cls_token.expand(b, t, 1, -1)
        x = torch.cat([cls, x], dim=2) + self.pos_embed  # (B, T, 1+N, C)
        x = x + self.time_embed[:t, None, :]
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return VideoFeatures(patches=x[:, :, 1:], frame_cls=x[:, :, 0])

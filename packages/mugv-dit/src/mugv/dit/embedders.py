"""Input embedders of MUGDiT: latent patches, timestep/FPS, captions (SPEC "MUG-V DiT").

Parameter names follow the authors' checkpoint (`x_embedder.proj`, `t_embedder.mlp`,
`y_embedder.y_proj.fc1`...) so that only the transformer blocks need converting.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) -> (B, dim) [cos | sin] embedding of a scalar per sample (DiT/ADM form)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) latents -> (B, T'*H'*W', d) tokens with a Conv3d, kernel = stride = patch."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, hidden_size, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, d, T', H', W')
        return x.flatten(2).transpose(1, 2)  # (B, T'H'W', d)


class TimestepEmbedder(nn.Module):
    """Scalar per sample -> (B, d): sinusoidal [cos | sin] of `freq_dim`, Linear, SiLU, Linear."""

    def __init__(self, hidden_size: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(
            nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(emb)


class CaptionMLP(nn.Module):
    """fc1 -> GELU(tanh) -> fc2."""

    def __init__(self, in_features: int, hidden_size: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_size)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CaptionEmbedder(nn.Module):
    """Text features (B, L, text_dim) -> (B, L', d): LayerNorm -> MLP -> LayerNorm (no affine).

    `y_embedding` (text_len, text_dim) is the learned null caption used for classifier-free
    guidance. A dropped sample sees all of its rows and nothing else, whatever the batch's
    padded length L: with `drop_text` given, a shorter batch is padded (masked) to L' =
    text_len, and in a longer one the rows after the null caption are masked. So the
    unconditional branch does not depend on the other texts in its batch.
    """

    def __init__(self, text_dim: int, hidden_size: int, text_len: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.y_proj = CaptionMLP(text_dim, hidden_size)
        self.y_embedding = nn.Parameter(torch.randn(text_len, text_dim) / text_dim**0.5)

    def forward(
        self, text: Tensor, text_mask: Tensor, drop_text: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if drop_text is not None:
            null_len = self.y_embedding.shape[0]
            if text.shape[1] < null_len:
                text = F.pad(text, (0, 0, 0, null_len - text.shape[1]))
                text_mask = F.pad(text_mask, (0, null_len - text_mask.shape[1]))
            length = text.shape[1]
            null = F.pad(self.y_embedding.to(text.dtype), (0, 0, 0, length - null_len))
            null_mask = torch.arange(length, device=text.device) < null_len
            drop = drop_text.view(-1, 1)
            text = torch.where(drop[..., None], null, text)
            text_mask = torch.where(drop, null_mask, text_mask)
        y = F.layer_norm(text, text.shape[-1:], eps=self.eps)
        y = self.y_proj(y)
        return F.layer_norm(y, y.shape[-1:], eps=self.eps), text_mask

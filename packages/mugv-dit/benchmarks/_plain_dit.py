"""A batched plain-PyTorch MUGDiT in the authors' layout (no Megatron), for bench_step.py.

Written separately from `mugv.dit` from SPEC: same maths, the usual single-GPU-DiT code shape
(nn.Linear everywhere, (B, N, d) activations, complex-number RoPE, SDPA with a text mask).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _sinusoid(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _Embed(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t):
        return self.mlp(_sinusoid(t))


class _RMS(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, x.shape[-1:], self.weight, 1e-6)


class _Mlp(nn.Module):
    def __init__(self, a, b, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(a, b), nn.Linear(b, c)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def _rope(x, cis):  # x (B, h, N, D), cis (B, 1, N, D/2) complex
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(z * cis).flatten(-2).type_as(x)


class _Attn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.q_norm, self.k_norm = _RMS(d // heads), _RMS(d // heads)

    def forward(self, x, cis):
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.h, d // self.h).permute(2, 0, 3, 1, 4)
        q, k = _rope(self.q_norm(q), cis), _rope(self.k_norm(k), cis)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class _Cross(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.h = heads
        self.q_linear, self.kv_linear, self.proj = (
            nn.Linear(d, d),
            nn.Linear(d, 2 * d),
            nn.Linear(d, d),
        )
        self.q_norm, self.k_norm = _RMS(d // heads), _RMS(d // heads)

    def forward(self, x, y, mask):  # mask (B, 1, 1, L) True = attend
        b, n, d = x.shape
        q = self.q_norm(self.q_linear(x).view(b, n, self.h, -1)).transpose(1, 2)
        k, v = self.kv_linear(y).view(b, y.shape[1], 2, self.h, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, self.k_norm(k), v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.attn, self.cross_attn = _Attn(d, heads), _Cross(d, heads)
        self.cross_attn_norm = nn.LayerNorm(d, eps=1e-6)
        self.mlp = _Mlp(d, 4 * d, d)
        self.scale_shift_table = nn.Parameter(torch.zeros(6, d))

    def forward(self, x, y, mask, mod, cis):  # mod (B, 6, d)
        sa, ca, ga, sm, cm, gm = (self.scale_shift_table[None] + mod).unsqueeze(2).unbind(1)
        x = x + ga * self.attn(self.norm(x) * (1 + ca) + sa, cis)
        x = x + self.cross_attn(self.cross_attn_norm(x), y, mask)
        return x + gm * self.mlp(self.norm(x) * (1 + cm) + sm)


class PlainDiT(nn.Module):
    def __init__(self, d, heads, depth, text_dim, text_len, channels=24):
        super().__init__()
        self.d, self.h, self.c = d, heads, channels
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(channels, d, (1, 2, 2), stride=(1, 2, 2))
        self.t_embedder, self.fps_embedder = _Embed(d), _Embed(d)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.y_embedder = nn.Module()
        self.y_embedder.y_proj = _Mlp(text_dim, d, d)
        self.y_embedder.y_embedding = nn.Parameter(torch.zeros(text_len, text_dim))
        self.start_token, self.end_token = (
            nn.Parameter(torch.zeros(d)),
            nn.Parameter(torch.zeros(d)),
        )
        self.blocks = nn.ModuleList(_Block(d, heads) for _ in range(depth))
        self.final_layer = nn.Module()
        self.final_layer.linear = nn.Linear(d, 4 * 2 * channels)
        self.final_layer.scale_shift_table = nn.Parameter(torch.zeros(2, d))

    def _cis(self, b, t, h, w):
        hd = self.d // self.h
        f = 10000.0 ** (-6 * torch.arange(hd // 6, dtype=torch.float64) / hd)
        tt, hh, ww = torch.meshgrid(
            torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"
        )
        pos = torch.stack([hh, ww, tt], -1).reshape(-1, 3)
        pos = torch.cat([torch.tensor([[0, 0, 0]]), pos, torch.tensor([[h - 1, w - 1, t - 1]])])
        ang = (pos[..., None].double() * f).flatten(1)  # (N, D/2)
        return (
            torch.polar(torch.ones_like(ang), ang)
            .to(torch.complex64)[None, None]
            .expand(b, 1, -1, -1)
        )

    def forward(self, x, timestep, text, text_mask, fps):
        b, c, t, hgt, wid = x.shape
        h, w = hgt // 2, wid // 2
        t_emb = self.t_embedder(timestep * 1000) + self.fps_embedder(fps)
        mod = self.t_block(t_emb).view(b, 6, self.d)
        y = F.layer_norm(text, text.shape[-1:], eps=1e-6)
        y = F.layer_norm(self.y_embedder.y_proj(y), (self.d,), eps=1e-6)
        mask = text_mask[:, None, None, :]
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2)
        seq = torch.cat(
            [self.start_token.expand(b, 1, -1), tokens, self.end_token.expand(b, 1, -1)], 1
        )
        cis = self._cis(b, t, h, w)
        for block in self.blocks:
            seq = block(seq, y, mask, mod, cis)
        shift, scale = (
            (self.final_layer.scale_shift_table[None] + t_emb[:, None]).unsqueeze(2).unbind(1)
        )
        out = self.final_layer.linear(F.layer_norm(seq, (self.d,), eps=1e-6) * (1 + scale) + shift)[
            :, 1:-1
        ]
        out = (
            out.view(b, t, h, w, 2, 2, 2 * c)
            .permute(0, 6, 1, 2, 4, 3, 5)
            .reshape(b, 2 * c, t, hgt, wid)
        )
        return out[:, :c]

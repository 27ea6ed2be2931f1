"""An independent plain-PyTorch MUGDiT in the authors' checkpoint layout, straight from SPEC.

No Megatron, no code shared with `mugv.dit`: attention is written out (softmax of scores),
3D RoPE uses complex numbers, text attention loops over samples and keeps only their valid
tokens, and the final layer predicts 2 x 24 channels of which the first 24 are kept.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t, dim=256, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Embedder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))

    def forward(self, t):
        return self.mlp(timestep_embedding(t).to(self.mlp[0].weight.dtype))


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Mlp(nn.Module):
    def __init__(self, a, b, c):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(a, b), nn.Linear(b, c)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def attention(q, k, v):  # (heads, n, D), (heads, m, D)
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    return scores.softmax(-1) @ v


def rope(x, freqs_cis):  # x (n, heads, D) real, freqs_cis (n, D/2) complex
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * freqs_cis[:, None]).flatten(-2)


class Attn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.q_norm, self.k_norm = RMSNorm(d // heads), RMSNorm(d // heads)
        self.proj = nn.Linear(d, d)

    def forward(self, x, freqs_cis):  # x (n, d) one sample
        n, d = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, d // self.heads).unbind(1)
        q, k = rope(self.q_norm(q), freqs_cis), rope(self.k_norm(k), freqs_cis)
        out = attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1))
        return self.proj(out.transpose(0, 1).reshape(n, d))


class CrossAttn(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_linear, self.kv_linear = nn.Linear(d, d), nn.Linear(d, 2 * d)
        self.q_norm, self.k_norm = RMSNorm(d // heads), RMSNorm(d // heads)
        self.proj = nn.Linear(d, d)

    def forward(self, x, y):  # x (n, d), y (m, d) valid tokens of this sample
        n, d = x.shape
        hd = d // self.heads
        q = self.q_norm(self.q_linear(x).view(n, self.heads, hd))
        k, v = self.kv_linear(y).view(y.shape[0], 2, self.heads, hd).unbind(1)
        out = attention(q.transpose(0, 1), self.k_norm(k).transpose(0, 1), v.transpose(0, 1))
        return self.proj(out.transpose(0, 1).reshape(n, d))


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.norm = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.attn = Attn(d, heads)
        self.cross_attn_norm = nn.LayerNorm(d, eps=1e-6)
        self.cross_attn = CrossAttn(d, heads)
        self.mlp = Mlp(d, 4 * d, d)
        self.scale_shift_table = nn.Parameter(torch.randn(6, d) / d**0.5)

    def forward(self, x, y, mod, freqs_cis):  # x (n, d), mod (n, 6d) per token
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + mod.view(-1, 6, x.shape[1])
        ).unbind(1)
        x = x + gate_msa * self.attn(self.norm(x) * (1 + scale_msa) + shift_msa, freqs_cis)
        x = x + self.cross_attn(self.cross_attn_norm(x), y)
        return x + gate_mlp * self.mlp(self.norm(x) * (1 + scale_mlp) + shift_mlp)


class RefMUGDiT(nn.Module):
    def __init__(self, d, heads, depth, text_dim, text_len, in_channels=24, patch=(1, 2, 2)):
        super().__init__()
        self.d, self.heads, self.c, self.patch = d, heads, in_channels, patch
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(in_channels, d, patch, stride=patch)
        self.t_embedder, self.fps_embedder = Embedder(d), Embedder(d)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.y_embedder = nn.Module()
        self.y_embedder.y_proj = Mlp(text_dim, d, d)
        self.y_embedder.y_embedding = nn.Parameter(torch.randn(text_len, text_dim))
        self.start_token = nn.Parameter(torch.randn(d))
        self.end_token = nn.Parameter(torch.randn(d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(depth))
        self.final_layer = nn.Module()
        self.final_layer.norm_final = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.final_layer.linear = nn.Linear(d, math.prod(patch) * 2 * in_channels)
        self.final_layer.scale_shift_table = nn.Parameter(torch.randn(2, d))

    def freqs_cis(self, fidx, h, w):  # SPEC: (h, w, t), D/6 frequencies each
        hd = self.d // self.heads
        f = 10000.0 ** (-(6 * torch.arange(hd // 6, dtype=torch.float64)) / hd)
        hw_table = torch.polar(
            torch.ones(64, hd // 6, dtype=torch.float64), torch.arange(64.0)[:, None].double() * f
        )
        t_table = torch.polar(
            torch.ones(480, hd // 6, dtype=torch.float64), torch.arange(480.0)[:, None].double() * f
        )
        fidx = fidx.clamp(max=479)
        rows = [torch.cat([hw_table[0], hw_table[0], t_table[fidx[0]]])]
        for t in fidx.tolist():
            for i in range(h):
                for j in range(w):
                    rows.append(torch.cat([hw_table[i], hw_table[j], t_table[t]]))
        rows.append(torch.cat([hw_table[h - 1], hw_table[w - 1], t_table[fidx[-1]]]))
        return torch.stack(rows)

    def forward(
        self, x, timestep, text, text_mask, fps, cond_mask=None, frame_index=None, drop_text=None
    ):
        t, y, mask = timestep, text, text_mask
        b, c, T, H, W = x.shape
        _, ph, pw = self.patch
        h, w = H // ph, W // pw
        if frame_index is None:
            frame_index = torch.arange(T).expand(b, T)
        fps_emb = self.fps_embedder(fps)
        t_emb = self.t_embedder(t * 1000) + fps_emb
        t0_emb = self.t_embedder(torch.zeros_like(t)) + fps_emb
        t_mod, t0_mod = self.t_block(t_emb), self.t_block(t0_emb)
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2)  # (B, N, d)
        outs = []
        for i in range(b):
            yi, mi = y[i], mask[i]
            if drop_text is not None and drop_text[i]:
                yi = self.y_embedder.y_embedding  # all of the null caption, whatever L
                mi = torch.ones(yi.shape[0], dtype=torch.bool)
            yi = F.layer_norm(yi, yi.shape[-1:], eps=1e-6)
            yi = F.layer_norm(self.y_embedder.y_proj(yi), (self.d,), eps=1e-6)[mi]
            seq = torch.cat([self.start_token[None], tokens[i], self.end_token[None]])
            cond = torch.zeros(seq.shape[0], dtype=torch.bool)
            if cond_mask is not None:
                cond[1:-1] = cond_mask[i].repeat_interleave(h * w)
            mod = torch.where(cond[:, None], t0_mod[i], t_mod[i])
            emb = torch.where(cond[:, None], t0_emb[i], t_emb[i])
            fc = self.freqs_cis(frame_index[i], h, w)
            for block in self.blocks:
                seq = block(seq, yi, mod, fc)
            fl = self.final_layer
            shift, scale = (fl.scale_shift_table[None] + emb[:, None]).unbind(1)
            out = fl.linear(fl.norm_final(seq) * (1 + scale) + shift)[1:-1]  # (N, pv*2C)
            out = out.view(T, h, w, ph, pw, 2 * c).permute(5, 0, 1, 3, 2, 4).reshape(2 * c, T, H, W)
            outs.append(out[:c])
        return torch.stack(outs)


def randomize(module: nn.Module, seed: int = 0, scale: float = 0.3) -> None:
    """Every parameter random (norm weights near 1, tables and zero-inits non-zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if name.endswith("norm.weight") or name.endswith("cross_attn_norm.weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                p.copy_(noise * scale / max(1.0, fan_in**0.5) * (3 if p.dim() > 1 else 1))

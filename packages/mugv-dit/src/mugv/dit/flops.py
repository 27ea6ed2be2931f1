"""Forward FLOPs of a MUGDiT sample, for the MFU meter (a multiply-add counts 2).

Counts every matrix product: patch embedding, t/fps embedders and `t_block`, caption MLP, and
per block self-attention (qkv, scores, values, proj), cross-attention (q, kv on the text,
scores, values, proj) and MLP, then the final layer. Elementwise work (norms, modulation,
RoPE, softmax) is left out, as is recomputation: activation checkpointing re-runs the forward
but does no extra *model* work, so MFU uses 3x this per training step (HFU 4x).
"""

from __future__ import annotations

from mugv.dit.config import DiTConfig


def dit_forward_flops(config: DiTConfig, T: int, H: int, W: int, L: int) -> float:
    """FLOPs of one forward pass on T x H x W latents (before patching) with L text tokens."""
    pt, ph, pw = config.patch_size
    d, f = config.hidden_size, config.mlp_hidden_size
    n = (T // pt) * (H // ph) * (W // pw)
    s = n + 2  # video tokens + start/end tokens
    patch_in = config.patch_volume * config.in_channels
    self_attn = 2 * s * d * 3 * d + 2 * 2 * s * s * d + 2 * s * d * d
    cross_attn = 2 * s * d * d + 2 * L * d * 2 * d + 2 * 2 * s * L * d + 2 * s * d * d
    mlp = 2 * 2 * s * d * f
    blocks = config.depth * (self_attn + cross_attn + mlp)
    embed = 2 * n * patch_in * d
    cond = 2 * 2 * (config.freq_dim * d + d * d) + 2 * d * 6 * d
    caption = 2 * L * (config.text_dim * d + d * d)
    final = 2 * s * d * patch_in
    return float(blocks + embed + cond + caption + final)

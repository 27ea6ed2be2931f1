"""adaLN-single modulation (PixArt-alpha): one shared timestep MLP, a learned table per layer.

Per layer, `table (n, d) + t_block(t_emb)` reshaped to (n, d) gives the shift/scale/gate
vectors; conditioning (image-to-video) tokens use the modulation of t = 0 instead, chosen per
token.
"""

from __future__ import annotations

import torch
from torch import Tensor


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """x * (1 + scale) + shift."""
    return x * (1 + scale) + shift


def token_modulation(
    table: Tensor, t_mod: Tensor, t0_mod: Tensor | None, cond: Tensor | None
) -> Tensor:
    """Per-token modulation (S, B, n, d) from a table (n, d) and projected embeddings (B, n*d).

    `cond` (S, B) bool marks tokens of conditioning frames, which take `t0_mod` (the t = 0
    embedding); without it the modulation is shared by all tokens, shape (1, B, n, d).
    """
    n, d = table.shape
    mod = table + t_mod.view(-1, n, d)  # (B, n, d)
    if cond is None:
        return mod[None]
    mod0 = table + t0_mod.view(-1, n, d)
    return torch.where(cond[..., None, None], mod0[None], mod[None])  # (S, B, n, d)

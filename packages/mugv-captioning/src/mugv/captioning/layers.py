"""Multi-head attention and the feed-forward block shared by the TSG encoder and decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with a boolean mask (True = may attend) and reusable keys/values.

    ``kv(memory)`` projects keys/values once (cross-attention memories, self-attention caches);
    ``attend(x, k, v, mask)`` runs the queries of ``x`` against them.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.num_heads
        k = rearrange(self.k_proj(memory), "b m (h e) -> b h m e", h=h)  # (B, H, M, D/H)
        v = rearrange(self.v_proj(memory), "b m (h e) -> b h m e", h=h)
        return k, v

    def attend(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """``x`` (B, L, D), ``k``/``v`` (B, H, M, D/H), ``mask`` broadcastable to (B, L, M)."""
        q = rearrange(self.q_proj(x), "b l (h e) -> b h l e", h=self.num_heads)
        mask = None if mask is None else mask.unsqueeze(1)  # (B, 1, L, M)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, L, D/H)
        return self.out_proj(rearrange(out, "b h l e -> b l (h e)"))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        return self.attend(x, *self.kv(memory), mask)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.relu(self.fc1(x))))

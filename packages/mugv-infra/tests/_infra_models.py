"""A tiny Megatron-Core transformer for CPU tests (TP-aware, gloo-safe).

Megatron's local `DotProductAttention` allocates its score buffer on CUDA, so the layer spec
swaps in `SDPACoreAttention`; everything else is Megatron's own (column/row-parallel linears,
`TransformerBlock`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_block import TransformerBlock


class SDPACoreAttention(MegatronModule):
    """Core attention of the local spec, over torch SDPA: (sq, b, np, hn) -> (sq, b, np*hn)."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type, **_):
        super().__init__(config=config)

    def forward(self, query, key, value, attention_mask, **_):
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # (b, np, s, hn)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, np, sq, hn)
        return out.permute(2, 0, 1, 3).flatten(2)  # (sq, b, np*hn)


def tiny_config(*, recompute: bool = False, **overrides) -> TransformerConfig:
    kwargs = dict(
        num_layers=2,
        hidden_size=32,
        num_attention_heads=4,
        use_cpu_initialization=True,
        params_dtype=torch.float32,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=parallel_state.get_tensor_model_parallel_world_size(),
        sequence_parallel=False,
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


class TinyRegressor(MegatronModule):
    """Linear in -> Megatron TransformerBlock -> linear out: (s, b, 8) -> (s, b, 8)."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config=config)
        spec = get_gpt_layer_local_spec()
        spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
        self.embed = torch.nn.Linear(8, config.hidden_size)
        self.block = TransformerBlock(config, spec)
        self.head = torch.nn.Linear(config.hidden_size, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)  # (s, b, d)
        h = self.block(h, attention_mask=None)  # (s, b, d)
        return self.head(h)


def regression_data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 6, 8) inputs and targets of a fixed random linear-ish map."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 8, generator=gen)
    y = torch.tanh(x.flip(1) * 0.7 + 0.1)
    return x, y


def regression_step(model, batch, noise: float = 0.01):
    """MSE of the model on a batch-first (x, y), with input noise from the default RNG."""
    x, y = batch
    x = x + noise * torch.randn_like(x)  # exercises the RNG state in resume tests
    pred = model(x.transpose(0, 1)).transpose(0, 1)  # (b, s, 8)
    return F.mse_loss(pred, y)

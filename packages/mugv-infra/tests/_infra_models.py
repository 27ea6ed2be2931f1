"""A tiny Megatron-Core transformer for CPU tests (TP-aware, gloo-safe).

Megatron's local `DotProductAttention` allocates its score buffer on CUDA, so the layer spec
swaps in `SDPACoreAttention`; everything else is Megatron's own (column/row-parallel linears,
`TransformerBlock`).
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_block import TransformerBlock

from mugv.infra import ShuffledBatches


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
        pipeline_model_parallel_size=parallel_state.get_pipeline_model_parallel_world_size(),
        pipeline_dtype=torch.float32,
        sequence_parallel=False,
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


class TinyRegressor(MegatronModule):
    """Linear in -> Megatron TransformerBlock -> linear out: (s, b, 8) -> (s, b, 8).

    Pipeline-aware like Megatron's GPTModel: the first stage owns `embed`, the last `head` (and
    the block's final LayerNorm); a later stage takes its input from `set_input_tensor`, and a
    stage that is not the last returns its hidden states (s, b, d).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__(config=config)
        spec = get_gpt_layer_local_spec()
        spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
        self.pre_process = parallel_state.is_pipeline_first_stage()
        self.post_process = parallel_state.is_pipeline_last_stage()
        if self.pre_process:
            self.embed = torch.nn.Linear(8, config.hidden_size)
        self.block = TransformerBlock(
            config, spec, pre_process=self.pre_process, post_process=self.post_process
        )
        if self.post_process:
            self.head = torch.nn.Linear(config.hidden_size, 8)

    def set_input_tensor(self, input_tensor) -> None:
        self.block.set_input_tensor(
            input_tensor[0] if isinstance(input_tensor, list) else input_tensor
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.pre_process else None  # (s, b, d); later stages: received
        h = self.block(h, attention_mask=None)  # (s, b, d)
        return self.head(h) if self.post_process else h


def regression_data(n: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 6, 8) inputs and targets of a fixed random linear-ish map."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 8, generator=gen)
    y = torch.tanh(x.flip(1) * 0.7 + 0.1)
    return x, y


def regression_batches(
    n: int, batch: int, info, *, dtype: torch.dtype = torch.float32
) -> ShuffledBatches:
    """`regression_data(n)` in batches of `batch` per data-parallel rank of `info` (a
    `DistInfo`): DP=2 at half the batch sees the same global batches as DP=1."""
    x, y = (t.to(dtype) for t in regression_data(n))
    return ShuffledBatches(
        n,
        batch,
        lambda idx: (x[idx], y[idx]),
        seed=3,
        data_rank=info.data_rank,
        data_size=info.data_size,
    )


def regression_step(model, batch, noise: float = 0.01):
    """MSE of the model on a batch-first (x, y), with input noise from the default RNG."""
    x, y = batch
    x = x + noise * torch.randn_like(x)  # exercises the RNG state in resume tests
    pred = model(x.transpose(0, 1)).transpose(0, 1)  # (b, s, 8)
    return F.mse_loss(pred, y)


def init_by_name(model: torch.nn.Module, names: dict[str, str]) -> None:
    """Weights drawn per whole-model parameter name, so every pipeline layout starts alike
    (a stage builds only its layers, so the default generator alone cannot line them up)."""
    with torch.no_grad():
        for local, p in model.named_parameters():
            name = names.get(local, local)
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def noisy_regression_step(model, batch):
    """MSE with noise on inputs and targets: the last stage's draws must match the first's."""
    x, y = batch
    x = x + 0.05 * torch.randn_like(x)
    y = y + 0.05 * torch.randn_like(y)
    pred = model(x.transpose(0, 1)).transpose(0, 1)  # (b, s, 8)
    return F.mse_loss(pred, y), {"target_mean": float(y.mean())}

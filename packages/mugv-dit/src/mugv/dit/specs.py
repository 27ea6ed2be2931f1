"""Which implementation builds each submodule of a MUGDiT block (Megatron-Core `ModuleSpec`s).

`local_spec()`: Megatron's ColumnParallelLinear/RowParallelLinear (as `ColumnLinear`/`RowLinear`,
which run a plain `F.linear` on a single TP rank) and our SDPA core attention;
runs on CPU and GPU. `te_spec()`: TransformerEngine's TE linears and fused attention, used when
`transformer_engine` imports and CUDA is present (`default_spec()` picks). Parameter names and
shapes are the same in both, so one state dict (minus TE's `_extra_state`) serves either.
"""

from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.utils import get_pg_size
from torch import Tensor

from mugv.dit.attention import AttentionSubmodules, SDPAttention
from mugv.dit.model import MUGDiTLayer, MUGDiTLayerSubmodules


def _single_rank(linear: ColumnParallelLinear | RowParallelLinear) -> bool:
    """True when Megatron's linear would only do `x @ W.T + b`: one TP rank, no sequence
    parallelism, no expert communication, no fused or deferred weight-gradient accumulation."""
    config = linear.config
    return (
        get_pg_size(linear.tp_group) == 1
        and not linear.sequence_parallel
        and not linear.explicit_expert_comm
        and not config.gradient_accumulation_fusion
        and not config.defer_embedding_wgrad_compute
    )


class ColumnLinear(ColumnParallelLinear):
    """Megatron's `ColumnParallelLinear` (same weights, state dict, TP behaviour) that runs one
    `F.linear` on a single TP rank.

    There Megatron's autograd function (`LinearWithGradAccumulationAndAsyncCommunication`) and
    its identity copy-to-TP-region function compute the same product with an unfused bias and
    Python-level backward: ~12% of the tiny model's CPU training step (docs/benchmarks.md).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.single_rank = _single_rank(self)

    def forward(
        self,
        input_: Tensor,
        weight: Tensor | None = None,
        runtime_gather_output: bool | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        if (
            not self.single_rank
            or weight is not None
            or self.config._cpu_offloading_context is not None
        ):
            return super().forward(input_, weight, runtime_gather_output)
        if self.skip_bias_add:
            return F.linear(input_, self.weight), self.bias
        return F.linear(input_, self.weight, self.bias), None


class RowLinear(RowParallelLinear):
    """Megatron's `RowParallelLinear` that runs one `F.linear` on a single TP rank (see
    `ColumnLinear`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.single_rank = _single_rank(self)

    def forward(self, input_: Tensor) -> tuple[Tensor, Tensor | None]:
        if not self.single_rank or self.config._cpu_offloading_context is not None:
            return super().forward(input_)
        if self.skip_bias_add:
            return F.linear(input_, self.weight), self.bias
        return F.linear(input_, self.weight, self.bias), None


def local_spec() -> ModuleSpec:
    """Megatron parallel linears (`ColumnLinear`, `RowLinear`) + `SDPAttention` (text masked)."""
    attn = dict(linear_in=ColumnLinear, core_attention=SDPAttention, linear_proj=RowLinear)
    return ModuleSpec(
        module=MUGDiTLayer,
        submodules=MUGDiTLayerSubmodules(
            self_attention=AttentionSubmodules(linear_kv=None, **attn),
            cross_attention=AttentionSubmodules(linear_kv=ColumnLinear, **attn),
            linear_fc1=ColumnLinear,
            linear_fc2=RowLinear,
        ),
    )


def te_available() -> bool:
    """True when TransformerEngine is installed and a CUDA device is visible."""
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def te_spec() -> ModuleSpec:
    """TransformerEngine linears and fused attention (GPU; text through TE's padding mask).

    TE's fused kernels read a padding mask as per-sample lengths, so a text mask must mark a
    prefix of valid tokens (as `mugv.dit.text_encoder` and tokenizers pad); `Attention` keeps
    the video keys in sequence order (padding last) and, under CP, hands TE the queries and
    keys as cross-attention with a (query, key) mask pair.
    """
    from megatron.core.extensions.transformer_engine import (
        TEColumnParallelLinear,
        TEDotProductAttention,
        TERowParallelLinear,
    )

    attn = dict(
        linear_in=TEColumnParallelLinear,
        core_attention=TEDotProductAttention,
        linear_proj=TERowParallelLinear,
    )
    return ModuleSpec(
        module=MUGDiTLayer,
        submodules=MUGDiTLayerSubmodules(
            self_attention=AttentionSubmodules(linear_kv=None, **attn),
            cross_attention=AttentionSubmodules(linear_kv=TEColumnParallelLinear, **attn),
            linear_fc1=TEColumnParallelLinear,
            linear_fc2=TERowParallelLinear,
        ),
    )


def default_spec() -> ModuleSpec:
    """`te_spec()` on a CUDA machine with TransformerEngine, else `local_spec()`."""
    return te_spec() if te_available() else local_spec()

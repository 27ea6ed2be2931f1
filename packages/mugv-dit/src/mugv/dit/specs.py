"""Which implementation builds each submodule of a MUGDiT block (Megatron-Core `ModuleSpec`s).

`local_spec()`: Megatron's ColumnParallelLinear/RowParallelLinear and our SDPA core attention;
runs on CPU and GPU. `te_spec()`: TransformerEngine's TE linears and fused attention, used when
`transformer_engine` imports and CUDA is present (`default_spec()` picks). Parameter names and
shapes are the same in both, so one state dict (minus TE's `_extra_state`) serves either.
"""

from __future__ import annotations

import importlib.util

import torch
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec

from mugv.dit.attention import AttentionSubmodules, SDPAttention
from mugv.dit.model import MUGDiTLayer, MUGDiTLayerSubmodules


def local_spec() -> ModuleSpec:
    """Megatron parallel linears + `SDPAttention` (text masked)."""
    attn = dict(
        linear_in=ColumnParallelLinear, core_attention=SDPAttention, linear_proj=RowParallelLinear
    )
    return ModuleSpec(
        module=MUGDiTLayer,
        submodules=MUGDiTLayerSubmodules(
            self_attention=AttentionSubmodules(linear_kv=None, **attn),
            cross_attention=AttentionSubmodules(linear_kv=ColumnParallelLinear, **attn),
            linear_fc1=ColumnParallelLinear,
            linear_fc2=RowParallelLinear,
        ),
    )


def te_available() -> bool:
    """True when TransformerEngine is installed and a CUDA device is visible."""
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def te_spec() -> ModuleSpec:
    """TransformerEngine linears and fused attention (GPU; text through TE's padding mask)."""
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

"""LoRA adapters on MUGDiT's attention and MLP linears, tensor-parallel and mergeable.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", section 4.1):
a frozen weight W gets a trainable low-rank update, y = W x + (alpha / r) B A dropout(x),
A (r, in) random, B (out, r) zero, so training starts at the base model. MUG-V fine-tunes
with LoRA for alignment and for its enhancement DiT (SPEC "MUG-V training", "inference and
enhancement").

Under tensor parallelism the factors follow the weight they adapt:
- column-parallel W (out/tp, in): A (r, in) replicated, B (out/tp, r) sharded on its output
  rows like W. The rank-r activation h = A x is replicated, so its gradient is all-reduced
  over TP (Megatron's `copy_to_tensor_model_parallel_region`), which makes A's gradient and
  x's adapter gradient whole on every rank.
- row-parallel W (out, in/tp): A (r, in/tp) sharded on its input columns like W, B (out, r)
  replicated. h = sum over TP of A_local x_local (`reduce_from_tensor_model_parallel_region`).
In both cases merging is local: W_local += (alpha / r) B_local A or B A_local, the exact
weights a TP = 1 merge would slice. Factors carry Megatron's `tensor_model_parallel` and
`partition_dim` attributes, so the Trainer's grad norm, checkpoints and resharding treat them
like the weights. Megatron linears, TransformerEngine linears (`TEColumnParallelLinear`,
`TERowParallelLinear`, which return `(out, bias)` the same way) and plain `nn.Linear` are wrapped.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    copy_to_tensor_model_parallel_region,
    reduce_from_tensor_model_parallel_region,
    set_tensor_model_parallel_attributes,
)
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mugv.dit.config import DiTError

__all__ = [
    "LoRAConfig",
    "LoRAError",
    "LoRALinear",
    "adapters_disabled",
    "apply_lora",
    "load_adapters",
    "lora_state_dict",
    "merge_lora",
    "save_adapters",
]

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
Kind = Literal["column", "row", "plain"]


def _tp() -> tuple[int, int]:
    """(TP size, TP rank); (1, 0) for plain models built without Megatron's parallel state."""
    if not parallel_state.model_parallel_is_initialized():
        return 1, 0
    return (
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_tensor_model_parallel_rank(),
    )


def _tp_group(base: nn.Module) -> Any:
    """The tensor-parallel group a Megatron (`tp_group`) or TE (`_tp_group`) linear uses."""
    group = getattr(base, "tp_group", None) or getattr(base, "_tp_group", None)
    return group or parallel_state.get_tensor_model_parallel_group()


class LoRAError(DiTError):
    """Bad LoRA configuration, target or adapter file; the message names the fix."""


@dataclass(frozen=True, kw_only=True)
class LoRAConfig:
    """Rank r, scale alpha / r, input dropout, and which linears (fnmatch globs on module names).

    The default targets are every attention projection (self: linear_qkv, linear_proj; cross:
    linear_q, linear_kv, linear_proj) and both MLP linears of every block.
    """

    rank: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("blocks.*.*attention.linear_*", "blocks.*.mlp.linear_fc*")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise LoRAError(f"LoRAConfig.rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise LoRAError(
                f"LoRAConfig.alpha must be > 0 (scale = alpha / rank), got {self.alpha}"
            )
        if not 0 <= self.dropout < 1:
            raise LoRAError(f"LoRAConfig.dropout must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str) or not self.targets:
            raise LoRAError(
                "LoRAConfig.targets must be a non-empty tuple of module-name globs, e.g. "
                "('blocks.*.mlp.linear_fc*',)"
            )
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAConfig:
        unknown = set(data) - {"rank", "alpha", "dropout", "targets"}
        if unknown:
            raise LoRAError(f"adapter config has unknown fields {sorted(unknown)}")
        return cls(**{**data, "targets": tuple(data.get("targets", cls().targets))})


def _kind(module: nn.Module, name: str) -> Kind:
    classes = {c.__name__ for c in type(module).__mro__}
    if "TELayerNormColumnParallelLinear" in classes:
        raise LoRAError(
            f"{name}: a LayerNorm-fused TE linear normalises its input inside the layer, so an "
            "adapter beside it would see the un-normalised input; target an unfused linear"
        )
    if isinstance(module, ColumnParallelLinear) or "TEColumnParallelLinear" in classes:
        if getattr(module, "gather_output", False):
            raise LoRAError(f"{name}: gather_output=True column-parallel linears are not supported")
        return "column"
    if isinstance(module, RowParallelLinear) or "TERowParallelLinear" in classes:
        if not getattr(module, "input_is_parallel", True):
            raise LoRAError(f"{name}: row-parallel linears need input_is_parallel=True")
        return "row"
    if isinstance(module, nn.Linear):
        return "plain"
    raise LoRAError(
        f"{name} is a {type(module).__name__}, not a linear layer LoRA can wrap (Megatron or TE "
        "column/row-parallel, or nn.Linear): narrow LoRAConfig.targets"
    )


class LoRALinear(nn.Module):
    """`base(x) + (alpha / r) B A dropout(x)`; `base` keeps its output form (tensor or tuple).

    `a_full` is the full (r, in) initial A; a row-parallel layer keeps this TP rank's columns.
    """

    def __init__(self, base: nn.Module, kind: Kind, config: LoRAConfig, a_full: Tensor) -> None:
        super().__init__()
        self.base, self.kind = base, kind
        self.rank, self.scale, self.dropout = config.rank, config.scale, config.dropout
        self.enabled = True
        out_local, in_local = base.weight.shape
        weight = base.weight
        tp, tp_rank = _tp()
        a = a_full
        if kind == "row" and tp > 1:
            a = a_full.chunk(tp, dim=1)[tp_rank]
        if a.shape != (config.rank, in_local):
            raise LoRAError(
                f"LoRA A has shape {tuple(a.shape)}, expected {(config.rank, in_local)}"
            )
        self.lora_A = nn.Parameter(a.to(weight.device, weight.dtype).clone())  # (r, in[/tp])
        self.lora_B = nn.Parameter(  # (out[/tp], r)
            torch.zeros(out_local, config.rank, dtype=weight.dtype, device=weight.device)
        )
        if kind != "plain":
            set_tensor_model_parallel_attributes(self.lora_A, kind == "row", 1, 1)
            set_tensor_model_parallel_attributes(self.lora_B, kind == "column", 0, 1)

    def delta(self, x: Tensor) -> Tensor:
        """The adapter's output (..., out[/tp]) for the base layer's input x (..., in[/tp])."""
        if self.dropout and self.training:
            row_tp = self.kind == "row" and _tp()[0] > 1
            fork = contextlib.nullcontext()
            if row_tp:  # sharded features: Megatron's per-TP-rank stream, like its dropouts
                from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

                fork = get_cuda_rng_tracker().fork()
            with fork:
                x = F.dropout(x, self.dropout, training=True)
        h = F.linear(x, self.lora_A.to(x.dtype))  # (..., r)
        if self.kind == "column":  # backward: the grad of h summed over TP
            h = copy_to_tensor_model_parallel_region(h, group=_tp_group(self.base))
        elif self.kind == "row":  # forward: partial sums over TP
            h = reduce_from_tensor_model_parallel_region(h, group=_tp_group(self.base))
        return F.linear(h, self.lora_B.to(x.dtype)) * self.scale

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Any:
        out = self.base(x, *args, **kwargs)
        if not self.enabled:
            return out
        if isinstance(out, tuple):
            return (out[0] + self.delta(x), *out[1:])
        return out + self.delta(x)

    @torch.no_grad()
    def merged_weight(self) -> Tensor:
        """W + (alpha / r) B A on this rank's shard."""
        w = self.base.weight
        return w + (self.lora_B.double() @ self.lora_A.double() * self.scale).to(w.dtype)


def _lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set_child(model: nn.Module, name: str, child: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, child)


def apply_lora(model: nn.Module, config: LoRAConfig, *, seed: int = 0) -> list[str]:
    """Wraps the target linears of `model` in `LoRALinear` (in place) and freezes the rest.

    Only adapter factors stay trainable. Initial A factors come from a generator seeded with
    `seed` (Kaiming-uniform, a = sqrt(5), as nn.Linear initialises weights), drawn full-size in
    module order so every TP layout starts from the same adapters. Returns the wrapped names.
    """
    if _lora_modules(model):
        raise LoRAError("the model already has LoRA adapters: merge_lora() it first")
    names = [
        name
        for name, module in model.named_modules()
        if name and any(fnmatch.fnmatchcase(name, pattern) for pattern in config.targets)
    ]
    if not names:
        raise LoRAError(
            f"LoRAConfig.targets {list(config.targets)} match no module of "
            f"{type(model).__name__}; module names look like "
            f"{[n for n, _ in model.named_modules() if n][:4]}"
        )
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    tp = _tp()[0]
    for name in names:
        base = model.get_submodule(name)
        kind = _kind(base, name)
        in_full = base.weight.shape[1] * (tp if kind == "row" else 1)
        bound = 1 / math.sqrt(in_full)  # kaiming_uniform_(a=sqrt(5)) on a (r, in) matrix
        a_full = (
            torch.rand(config.rank, in_full, generator=gen, dtype=torch.float64) * 2 - 1
        ) * bound
        _set_child(model, name, LoRALinear(base, kind, config, a_full))
    model._lora_config = config  # read by save_adapters
    return names


@contextlib.contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Runs `model` as its frozen base (every adapter off), e.g. as the DPO reference model."""
    modules = list(_lora_modules(model).values())
    if not modules:
        raise LoRAError("adapters_disabled: the model has no LoRA adapters (apply_lora first)")
    states = [m.enabled for m in modules]
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m, state in zip(modules, states):
            m.enabled = state


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Folds every adapter into its base weight and puts the base layer back (in place).

    The result has the original module names, so `save_pretrained` writes a plain checkpoint.
    Parameters keep `requires_grad=False` from `apply_lora`; call `model.requires_grad_(True)`
    to train all weights again.
    """
    modules = _lora_modules(model)
    if not modules:
        raise LoRAError("merge_lora: the model has no LoRA adapters")
    for name, module in modules.items():
        if module.enabled:
            module.base.weight.copy_(module.merged_weight())
        _set_child(model, name, module.base)
    if hasattr(model, "_lora_config"):
        del model._lora_config
    return model


def _global_name(model: nn.Module, name: str) -> str:
    offset = getattr(model, "layer_offset", 0)
    return _BLOCK.sub(lambda m: f"blocks.{int(m.group(1)) + offset}.", name)


def _on_this_stage(model: nn.Module, key: str) -> bool:
    """False for a block that another pipeline stage holds."""
    match = _BLOCK.match(key)
    if match is None or not hasattr(model, "blocks"):
        return True
    offset = getattr(model, "layer_offset", 0)
    return offset <= int(match.group(1)) < offset + len(model.blocks)


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter factors of the whole model (TP shards gathered; collective over TP),
    by global module name: `<module>.lora_A`, `<module>.lora_B`."""
    tp = _tp()[0]
    out = {}
    for name, module in _lora_modules(model).items():
        for key in ("lora_A", "lora_B"):
            value = getattr(module, key).detach()
            if tp > 1 and getattr(getattr(module, key), "tensor_model_parallel", False):
                parts = [torch.empty_like(value) for _ in range(tp)]
                group = parallel_state.get_tensor_model_parallel_group()
                dist.all_gather(parts, value.contiguous(), group=group)
                value = torch.cat(parts, dim=getattr(module, key).partition_dim)
            out[f"{_global_name(model, name)}.{key}"] = value.clone().contiguous()
    return out


def save_adapters(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Writes only the adapters: `adapter.safetensors` + `adapter_config.json` (rank 0 writes;
    every TP rank must call)."""
    config = getattr(model, "_lora_config", None)
    if config is None:
        raise LoRAError("save_adapters: the model has no LoRA adapters (apply_lora first)")
    state = lora_state_dict(model)
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    os.makedirs(path, exist_ok=True)
    save_file(state, os.path.join(path, ADAPTER_WEIGHTS))
    with open(os.path.join(path, ADAPTER_CONFIG), "w") as f:
        json.dump(config.to_dict(), f, indent=2)


@torch.no_grad()
def load_adapters(model: nn.Module, path: str | os.PathLike[str]) -> LoRAConfig:
    """Adds the saved adapters to `model` (`apply_lora` with the saved config, then this
    rank's shards of the saved factors); returns the config."""
    for fname in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not os.path.isfile(os.path.join(path, fname)):
            raise LoRAError(
                f"load_adapters({str(path)!r}): no {fname}; expected a folder written by "
                "save_adapters"
            )
    with open(os.path.join(path, ADAPTER_CONFIG)) as f:
        config = LoRAConfig.from_dict(json.load(f))
    state = load_file(os.path.join(path, ADAPTER_WEIGHTS))
    apply_lora(model, config)
    tp, rank = _tp()
    expected = set()
    for name, module in _lora_modules(model).items():
        for key in ("lora_A", "lora_B"):
            full_key = f"{_global_name(model, name)}.{key}"
            expected.add(full_key)
            if full_key not in state:
                raise LoRAError(
                    f"{path}: adapter file has no {full_key!r}; was it saved from another model?"
                )
            param = getattr(module, key)
            value = state[full_key]
            if tp > 1 and getattr(param, "tensor_model_parallel", False):
                value = value.chunk(tp, dim=param.partition_dim)[rank]
            if value.shape != param.shape:
                raise LoRAError(
                    f"{path}: {full_key!r} has shape {tuple(value.shape)}, the model expects "
                    f"{tuple(param.shape)}: check the DiTConfig"
                )
            param.copy_(value)
    extra = [k for k in set(state) - expected if _on_this_stage(model, k)]
    if extra:
        raise LoRAError(f"{path}: adapters {sorted(extra)[:3]} match no module of the model")
    return config

"""Data-parallel gradient sync, clipping and AdamW behind one small interface.

`TorchDataParallel` is the plain-PyTorch implementation used on CPU (gloo) and for models
that are not Megatron modules: after the last micro-batch the gradients are flattened into
one buffer, summed over the data-parallel group and divided by its size; with sequence
parallelism, the gradients of parameters Megatron marks `sequence_parallel` (LayerNorms) are
first summed over the tensor-parallel group, and with pipeline parallelism those of parameters
marked `pipeline_parallel` (conditioning embedders replicated on every stage) over the
pipeline group, as Megatron's `finalize_model_grads` does.

`make_data_parallel` picks it or `MegatronDataParallel` (Megatron-Core DDP + distributed
optimizer, CUDA only); both have the same methods, so the Trainer has one loop.
"""

from __future__ import annotations

import contextlib
import re
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from mugv.infra._errors import ConfigError
from mugv.infra.meter import fast_bf16
from mugv.infra.muon import DEFAULT_MUON_PARAMS, Muon


def _all_reduce_grads(grads: list[torch.Tensor], group: dist.ProcessGroup, scale: float) -> None:
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=group)
    if scale != 1.0:
        flat.mul_(scale)
    for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def _agreed_fast_bf16(device: torch.device) -> bool:
    """`fast_bf16(device)`, the same on every rank: a CPU measures its bf16 speed per process,
    and replicas that orthogonalised in different dtypes would drift apart. All ranks call it
    (a collective when there are several); bf16 only if every rank finds it fast."""
    fast = fast_bf16(device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        flag = torch.tensor([int(fast)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        fast = bool(flag.item())
    return fast


def muon_matrices(named_params: dict[str, torch.Tensor], pattern: str) -> list[str]:
    """Names of the parameters Muon takes: 2-D `*.weight` matrices matching `pattern`."""
    regex = re.compile(pattern)
    return [
        n
        for n, p in named_params.items()
        if p.dim() == 2 and n.endswith("weight") and regex.search(n)
    ]


class TorchDataParallel:
    """AdamW (decoupled weight decay on matrices only), or Muon on the hidden matrices and AdamW
    on the rest, with DP-averaged, clipped gradients."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        names: dict[str, str] | None = None,
        optimizer: Literal["adamw", "muon"] = "adamw",
        muon_params: str = DEFAULT_MUON_PARAMS,
        muon_ns_steps: int = 5,
    ) -> None:
        from megatron.core import parallel_state

        self.model = model
        names = names or {}
        self.named_params = {
            names.get(n, n): p for n, p in model.named_parameters() if p.requires_grad
        }
        self.params = list(self.named_params.values())
        muon_names = muon_matrices(self.named_params, muon_params) if optimizer == "muon" else []
        if optimizer == "muon" and not muon_names:
            raise ConfigError(
                f"TrainerConfig.muon_params={muon_params!r} matches no 2-D *.weight parameter of "
                f"{type(model).__name__}: give a regex for its hidden layers' names, e.g. "
                r"'(^|\.)layers\.'"
            )
        muon = [self.named_params[n] for n in muon_names]
        sharded = [
            n for n in muon_names if getattr(self.named_params[n], "tensor_model_parallel", False)
        ]
        if sharded and parallel_state.get_tensor_model_parallel_world_size() > 1:
            raise ConfigError(
                f"TrainerConfig.optimizer='muon' with tensor_parallel > 1: {sharded[0]} is a "
                "tensor-parallel shard and orthogonalising a shard is not the whole matrix's "
                "update; train with tensor_parallel=1 or optimizer='adamw'"
            )
        self._muon_ids = {id(p) for p in muon}
        rest = [p for p in self.params if id(p) not in self._muon_ids]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": [p for p in rest if p.dim() >= 2], "weight_decay": weight_decay},
                {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
            ],
            lr=lr,
            betas=betas,
            eps=eps,
            foreach=True,
        )
        # every rank asks, with or without Muon matrices of its own (a pipeline stage may have
        # none): the agreement is a collective
        bf16 = _agreed_fast_bf16(self.params[0].device) if optimizer == "muon" else None
        self.muon = (
            Muon(muon, lr=lr, ns_steps=muon_ns_steps, weight_decay=weight_decay, bf16=bf16)
            if muon
            else None
        )
        self.optimizers: list[torch.optim.Optimizer] = [self.optimizer]
        if self.muon is not None:
            self.optimizers.append(self.muon)
        self.dp_group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        self.dp_size = dist.get_world_size(self.dp_group)
        self.tp_group = parallel_state.get_tensor_model_parallel_group()
        self.tp_size = dist.get_world_size(self.tp_group)
        self.tp_rank = dist.get_rank(self.tp_group)
        self.sp_params = [p for p in self.params if getattr(p, "sequence_parallel", False)]
        self.pp_group = parallel_state.get_pipeline_model_parallel_group()
        self.pp_size = dist.get_world_size(self.pp_group)
        self.pp_rank = dist.get_rank(self.pp_group)
        self.pp_params = [p for p in self.params if getattr(p, "pipeline_parallel", False)]

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def no_sync(self) -> contextlib.AbstractContextManager:
        """Backward passes inside do not reduce (here nothing reduces before `step`)."""
        return contextlib.nullcontext()

    def sync_params(self) -> None:
        """The weights are always current here (Megatron's path gathers them lazily)."""

    def finish_grad_sync(self) -> None:
        """Sums SP LayerNorm grads over TP and stage-replicated grads over PP, then averages
        every grad over DP."""
        for p in self.params:
            if p.grad is None:  # unused this step: a zero grad keeps ranks' buffers aligned
                p.grad = torch.zeros_like(p)
        if self.sp_params and self.tp_size > 1:
            _all_reduce_grads([p.grad for p in self.sp_params], self.tp_group, 1.0)
        if self.pp_params and self.pp_size > 1:
            _all_reduce_grads([p.grad for p in self.pp_params], self.pp_group, 1.0)
        if self.dp_size > 1:
            _all_reduce_grads([p.grad for p in self.params], self.dp_group, 1.0 / self.dp_size)

    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm over the whole model: TP shards and pipeline stages summed, TP
        duplicates and stage-replicated parameters counted once."""
        mine = [
            p.grad
            for p in self.params
            if (getattr(p, "tensor_model_parallel", False) or self.tp_rank == 0)
            and (not getattr(p, "pipeline_parallel", False) or self.pp_rank == 0)
        ]
        norms = torch._foreach_norm(mine) if mine else []
        sq = torch.stack(norms).square().sum() if norms else torch.zeros(())
        sq = sq.to(torch.float32)
        if self.tp_size > 1:
            dist.all_reduce(sq, group=self.tp_group)
        if self.pp_size > 1:
            dist.all_reduce(sq, group=self.pp_group)
        return sq.sqrt()

    def step(self, lr: float, max_norm: float | None) -> torch.Tensor:
        """Syncs, clips to `max_norm` (if set), steps the optimizers at `lr`; returns the
        pre-clip norm."""
        self.finish_grad_sync()
        norm = self.grad_norm()
        if max_norm is not None:
            coeff = (max_norm / (norm + 1e-6)).clamp(max=1.0)
            torch._foreach_mul_([p.grad for p in self.params], coeff)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        return norm

    def optimizer_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Optimizer state by `<param name>.<key>` and the parameter each is laid out like
        (AdamW: step, exp_avg, exp_avg_sq; Muon: momentum_buffer).

        Missing state (before the first step) is created as zeros so a load has targets.
        """
        tensors, like = {}, {}
        for name, p in self.named_params.items():
            if id(p) in self._muon_ids:
                state = self.muon.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
            else:
                state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key, value in state.items():
                tensors[f"{name}.{key}"] = value
                like[f"{name}.{key}"] = p
        return tensors, like

    def load_optimizer_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Nothing to do: `optimizer_tensors` hands out the live state, loaded in place."""


def make_data_parallel(
    model: nn.Module,
    kind: Literal["auto", "torch", "megatron"],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    grad_clip: float | None,
    names: dict[str, str] | None = None,
    optimizer: Literal["adamw", "muon"] = "adamw",
    muon_params: str = DEFAULT_MUON_PARAMS,
    muon_ns_steps: int = 5,
):
    """`MegatronDataParallel` for `kind="megatron"`, or for `"auto"` on CUDA with a Megatron-Core
    model and AdamW; `TorchDataParallel` otherwise (Muon always runs there). Forcing
    "megatron" without CUDA (or without a Megatron model, or with Muon) raises `ConfigError`
    saying why."""
    from mugv.infra.megatron_data_parallel import MegatronDataParallel, megatron_available

    if kind not in ("auto", "torch", "megatron"):
        raise ValueError(f"data_parallel kind {kind!r}: use 'auto', 'torch' or 'megatron'")
    if kind == "megatron" and optimizer == "muon":
        raise ConfigError(
            "optimizer='muon' runs on the plain-PyTorch data-parallel path: use "
            "data_parallel='torch' or 'auto'"
        )
    common = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, names=names)
    if kind == "megatron" or (
        kind == "auto" and optimizer == "adamw" and megatron_available(model)
    ):
        return MegatronDataParallel(model, grad_clip=grad_clip, **common)
    return TorchDataParallel(
        model,
        optimizer=optimizer,
        muon_params=muon_params,
        muon_ns_steps=muon_ns_steps,
        **common,
    )

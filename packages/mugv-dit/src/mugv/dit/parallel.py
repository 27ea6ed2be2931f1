"""Sequence sharding for tensor/sequence and context parallelism, on any device.

Megatron-Core's own sequence-parallel collectives allocate their buffers on CUDA, so MUGDiT
does its sequence communication here, with autograd functions that run over gloo as over
NCCL. Token layout across ranks: the padded sequence of S tokens is cut into 2*CP chunks and
CP rank r holds chunks r and 2*CP-1-r (Megatron's load-balanced order, the layout
TransformerEngine's context-parallel attention expects); within a CP rank, sequence
parallelism cuts its tokens into TP contiguous slices.

Gradient convention: every TP rank ends with the full gradient of every parameter; a CP rank
holds CP x its share, so that averaging over the data-parallel x context-parallel group (as
`mugv.infra.TorchDataParallel` and Megatron's DDP do) gives the exact gradient.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import copy_to_tensor_model_parallel_region
from torch import Tensor


def _all_gather(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    size = dist.get_world_size(group)
    out = torch.empty((size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.all_gather_into_tensor(out, x.contiguous(), group=group)
    return out


def _reduce_scatter(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    size = dist.get_world_size(group)
    out = torch.empty((x.shape[0] // size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.reduce_scatter_tensor(out, x.contiguous(), group=group)
    return out


def _local_slice(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    chunk = x.shape[0] // dist.get_world_size(group)
    rank = dist.get_rank(group)
    return x[rank * chunk : (rank + 1) * chunk]


class _Gather(torch.autograd.Function):
    """All-gather along dim 0; backward reduce-scatters (`reduce=True`) or slices x `scale`."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup, reduce: bool, scale: float) -> Tensor:
        ctx.group, ctx.reduce, ctx.scale = group, reduce, scale
        return _all_gather(x, group)

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.reduce:
            return _reduce_scatter(grad, ctx.group), None, None, None
        return _local_slice(grad, ctx.group) * ctx.scale, None, None, None


class _Split(torch.autograd.Function):
    """This rank's slice along dim 0 of a tensor replicated over `group`; backward all-gathers."""

    @staticmethod
    def forward(ctx, x: Tensor, group: dist.ProcessGroup) -> Tensor:
        ctx.group = group
        return _local_slice(x, group).clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _all_gather(grad, ctx.group), None


@dataclasses.dataclass(frozen=True)
class SequenceSharding:
    """Where this rank's tokens sit: TP/SP and CP sizes, ranks and groups."""

    tp_size: int = 1
    sequence_parallel: bool = False
    cp_size: int = 1
    cp_rank: int = 0
    tp_group: dist.ProcessGroup | None = None
    cp_group: dist.ProcessGroup | None = None

    @classmethod
    def from_parallel_state(cls, sequence_parallel: bool) -> SequenceSharding:
        tp = parallel_state.get_tensor_model_parallel_world_size()
        cp = parallel_state.get_context_parallel_world_size()
        return cls(
            tp_size=tp,
            sequence_parallel=sequence_parallel and tp > 1,
            cp_size=cp,
            cp_rank=parallel_state.get_context_parallel_rank(),
            tp_group=parallel_state.get_tensor_model_parallel_group() if tp > 1 else None,
            cp_group=parallel_state.get_context_parallel_group() if cp > 1 else None,
        )

    @property
    def pad_multiple(self) -> int:
        """The padded sequence length must be a multiple of this."""
        return (2 * self.cp_size if self.cp_size > 1 else 1) * (
            self.tp_size if self.sequence_parallel else 1
        )

    def cp_indices(self, length: int, rank: int | None = None) -> Tensor:
        """Token indices (into the padded sequence) held by CP `rank` (default: this rank)."""
        rank = self.cp_rank if rank is None else rank
        if self.cp_size == 1:
            return torch.arange(length)
        chunk = length // (2 * self.cp_size)
        first = torch.arange(rank * chunk, (rank + 1) * chunk)
        second = torch.arange(
            (2 * self.cp_size - 1 - rank) * chunk, (2 * self.cp_size - rank) * chunk
        )
        return torch.cat([first, second])

    def cp_gathered_order(self, length: int) -> Tensor:
        """Padded-sequence indices in the order a CP all-gather returns the tokens."""
        return torch.cat([self.cp_indices(length, r) for r in range(self.cp_size)])

    # -- activations (S, B, ...) ---------------------------------------------------------------
    def shard(self, x: Tensor) -> Tensor:
        """Full padded sequence (S, ...) -> this rank's tokens (CP slice, then SP slice)."""
        if self.cp_size > 1:
            x = x[self.cp_indices(x.shape[0]).to(x.device)]
        if self.sequence_parallel:
            x = _Split.apply(x, self.tp_group)
        return x

    def shard_constant(self, x: Tensor) -> Tensor:
        """`shard` for tensors that need no gradient (masks): plain indexing."""
        if self.cp_size > 1:
            x = x[self.cp_indices(x.shape[0]).to(x.device)]
        if self.sequence_parallel:
            chunk = x.shape[0] // self.tp_size
            rank = dist.get_rank(self.tp_group)
            x = x[rank * chunk : (rank + 1) * chunk]
        return x

    def unshard(self, x: Tensor) -> Tensor:
        """This rank's tokens -> the full padded sequence, in order, on every rank."""
        if self.sequence_parallel:
            x = _Gather.apply(x, self.tp_group, False, 1.0)
        if self.cp_size > 1:
            x = _Gather.apply(x, self.cp_group, False, float(self.cp_size))
            inverse = torch.argsort(self.cp_gathered_order(x.shape[0])).to(x.device)
            x = x[inverse]
        return x

    def sp_gather(self, x: Tensor) -> Tensor:
        """SP-local tokens -> this CP rank's tokens, before a column-parallel linear (which
        all-reduces its input gradient itself)."""
        return _Gather.apply(x, self.tp_group, False, 1.0) if self.sequence_parallel else x

    def sp_split(self, x: Tensor) -> Tensor:
        """Output of a row-parallel linear (replicated over TP) -> this rank's SP slice."""
        return _Split.apply(x, self.tp_group) if self.sequence_parallel else x

    def cp_gather_kv(self, x: Tensor) -> Tensor:
        """Keys/values of this CP rank -> of all CP ranks (backward sums over CP)."""
        return _Gather.apply(x, self.cp_group, True, 1.0) if self.cp_size > 1 else x

    def tp_shared(self, param: Tensor, *, sharded_input: bool) -> Tensor:
        """A replicated parameter used on TP-sharded data: its gradient is summed over TP.

        `sharded_input=True` for parameters that act on head-sharded data (always sharded
        when TP > 1); False for those acting on sequence-sharded activations (only under SP).
        """
        if self.tp_size > 1 and (sharded_input or self.sequence_parallel):
            return copy_to_tensor_model_parallel_region(param, group=self.tp_group)
        return param

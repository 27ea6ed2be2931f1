"""Process groups and Megatron-Core parallel state, from `torchrun`/Slurm env vars or in-process.

The layout follows Megatron-Core: world = tensor x context x pipeline x data ranks, with
tensor-parallel ranks adjacent (order "tp-cp-ep-dp-pp"). Everything is validated before a
single process group is created, so a bad layout fails in one line on every rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from mugv.infra._errors import ConfigError, DistributedError
from mugv.infra._rng import manual_seed

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """Parallel sizes (Megatron-Core names in brackets).

    tensor: tensor-parallel ranks [TP]; sequence_parallel: shard LayerNorm/dropout activations
    along the sequence over the TP ranks [SP]; context: context-parallel ranks splitting the
    sequence in attention [CP]; pipeline: pipeline stages [PP]; data: data-parallel replicas
    [DP], `None` = whatever the world size leaves.
    """

    tensor: int = 1
    sequence_parallel: bool = False
    context: int = 1
    pipeline: int = 1
    data: int | None = None

    def __post_init__(self) -> None:
        for name in ("tensor", "context", "pipeline", "data"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(
                    f"ParallelConfig.{name}={value!r} is invalid: use a positive integer"
                )
        if self.sequence_parallel and self.tensor == 1:
            raise ConfigError(
                "ParallelConfig.sequence_parallel=True needs tensor > 1: "
                "set tensor >= 2 or sequence_parallel=False"
            )

    @property
    def model_size(self) -> int:
        """Ranks holding one model replica: tensor x context x pipeline."""
        return self.tensor * self.context * self.pipeline

    def data_size(self, world_size: int) -> int:
        """Data-parallel size for `world_size` processes (validates the layout)."""
        self.validate(world_size)
        return world_size // self.model_size

    def validate(
        self,
        world_size: int,
        *,
        num_heads: int | None = None,
        num_query_groups: int | None = None,
        num_layers: int | None = None,
        seq_length: int | None = None,
    ) -> None:
        """Checks the layout against the world size and, when given, the model's shape."""
        model = self.model_size
        if world_size % model:
            raise ConfigError(
                f"ParallelConfig: world size {world_size} is not a multiple of "
                f"tensor*context*pipeline={model}: change tensor/context/pipeline or launch "
                f"a multiple of {model} processes"
            )
        if self.data is not None and self.data * model != world_size:
            raise ConfigError(
                f"ParallelConfig.data={self.data} but world size {world_size} / "
                f"(tensor*context*pipeline={model}) = {world_size // model}: "
                f"set data={world_size // model} or data=None"
            )
        if num_heads is not None and num_heads % self.tensor:
            raise ConfigError(
                f"ParallelConfig.tensor={self.tensor} does not divide num_heads={num_heads}: "
                f"choose tensor from {_divisors(num_heads)}"
            )
        if num_query_groups is not None and num_query_groups % self.tensor:
            raise ConfigError(
                f"ParallelConfig.tensor={self.tensor} does not divide "
                f"num_query_groups={num_query_groups}: choose tensor from "
                f"{_divisors(num_query_groups)}"
            )
        if num_layers is not None and num_layers % self.pipeline:
            raise ConfigError(
                f"ParallelConfig.pipeline={self.pipeline} does not divide num_layers={num_layers}: "
                f"choose pipeline from {_divisors(num_layers)}"
            )
        if seq_length is not None and self.sequence_parallel and seq_length % self.tensor:
            raise ConfigError(
                f"ParallelConfig.sequence_parallel=True needs seq_length={seq_length} divisible "
                f"by tensor={self.tensor}: pad the sequence or change tensor"
            )
        if seq_length is not None and self.context > 1 and seq_length % (2 * self.context):
            raise ConfigError(
                f"ParallelConfig.context={self.context} needs seq_length={seq_length} divisible "
                f"by 2*context={2 * self.context} (load-balanced chunks): pad the sequence or "
                "change context"
            )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, local rank, world size, its device and DP/TP ranks."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    data_rank: int
    data_size: int
    tensor_rank: int
    tensor_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun (RANK...) or Slurm (SLURM_PROCID...) vars.

    Without either, this is a single process: (0, 0, 1).
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        local = int(env.get("SLURM_LOCALID", 0))
    else:
        return 0, 0, 1
    if world > 1 and "MASTER_ADDR" not in env:
        raise DistributedError(
            f"rank {rank} of {world}: MASTER_ADDR is not set; launch with torchrun or export "
            "MASTER_ADDR (the first node's address) and MASTER_PORT in the Slurm script"
        )
    return rank, local, world


def init_distributed(parallel: ParallelConfig, backend: str | None = None) -> DistInfo:
    """Creates the default process group and Megatron-Core's parallel groups.

    Reads the launcher's env vars (see `launch_env`); `backend` defaults to NCCL when CUDA is
    available and gloo otherwise. A process group that already exists (e.g. from
    `run_ranks`' launcher) is reused. Call `destroy_distributed()` to tear down.
    """
    rank, local_rank, world_size = launch_env()
    local_store = world_size == 1 and "MASTER_ADDR" not in os.environ
    return _init(parallel, backend, rank, local_rank, world_size, local_store=local_store)


def _init(
    parallel: ParallelConfig,
    backend: str | None,
    rank: int,
    local_rank: int,
    world_size: int,
    *,
    local_store: bool,
) -> DistInfo:
    from megatron.core import parallel_state

    parallel.validate(world_size)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if parallel_state.model_parallel_is_initialized():
        raise DistributedError(
            "Megatron-Core parallel state is already initialised: call "
            "mugv.infra.destroy_distributed() before initialising again"
        )
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=30)
        if local_store:
            store = dist.HashStore()
            dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
        else:
            dist.init_process_group(
                backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout
            )
    elif dist.get_world_size() != world_size:
        raise DistributedError(
            f"the existing process group has {dist.get_world_size()} ranks but the launcher "
            f"says {world_size}: destroy it or fix WORLD_SIZE/SLURM_NTASKS"
        )
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel.tensor,
        pipeline_model_parallel_size=parallel.pipeline,
        context_parallel_size=parallel.context,
    )
    info = dist_info(local_rank=local_rank, device=device)
    logger.info("initialised %s: %s, %s", backend, parallel, info)
    return info


def dist_info(*, local_rank: int | None = None, device: torch.device | None = None) -> DistInfo:
    """`DistInfo` of this process from the live process groups (after `init_distributed`).

    Handy inside `run_ranks` functions, which get the groups but not the return value.
    """
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        raise DistributedError("no parallel state: call init_distributed() or single_process()")
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    if device is None:
        cuda = dist.get_backend() == "nccl"
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    return DistInfo(
        rank=dist.get_rank(),
        local_rank=local_rank,
        world_size=dist.get_world_size(),
        device=device,
        data_rank=parallel_state.get_data_parallel_rank(),
        data_size=parallel_state.get_data_parallel_world_size(),
        tensor_rank=parallel_state.get_tensor_model_parallel_rank(),
        tensor_size=parallel_state.get_tensor_model_parallel_world_size(),
    )


def destroy_distributed() -> None:
    """Tears down Megatron-Core's parallel state and the default process group (idempotent)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def single_process(parallel: ParallelConfig | None = None, *, seed: int = 0) -> Iterator[DistInfo]:
    """World size 1 over gloo with Megatron-Core parallel state at TP=PP=CP=1, seeded.

    Lets a Megatron-Core model be built and run in a plain (pytest) process:

        with single_process(seed=0):
            block = TransformerBlock(TransformerConfig(..., use_cpu_initialization=True), spec)
    """
    info = _init(parallel or ParallelConfig(), "gloo", 0, 0, 1, local_store=True)
    try:
        manual_seed(seed)
        yield info
    finally:
        destroy_distributed()

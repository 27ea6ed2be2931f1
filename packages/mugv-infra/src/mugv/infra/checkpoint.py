"""Sharded, atomic, resumable checkpoints on `torch.distributed.checkpoint` (DCP).

Layout of one checkpoint, `<dir>/step_00001000/`:
    .metadata, __*_*.distcp   model, optimizer and EMA tensors (DCP, one file per writer rank)
    rank_00000.pt ...         per-rank state: RNG states and the data position
    meta.json                 step, layout, user metadata; written last

Tensor-parallel shards are saved as DTensors over a (replica, tp) device mesh built from the
parameters' Megatron attributes (`tensor_model_parallel`, `partition_dim`), so the files hold
global tensors and a checkpoint saved at TP=2 loads at TP=1 (or any TP that divides the
shapes). Data-parallel replicas are written once.

Atomicity: everything is written into `step_N.partial/`; after every rank has finished, rank 0
writes `meta.json` and renames the folder to `step_N`. Only folders named `step_N` holding a
`meta.json` count as complete, so a crash at any point leaves the previous checkpoint as the
latest one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard

from mugv.infra._errors import CheckpointError

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def complete_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / "meta.json").is_file():
            found.append((int(match[1]), path))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def _tp_layout(tensor: torch.Tensor, like: torch.Tensor | None) -> int | None:
    """The dim `like` is split along over TP ranks (Megatron attributes), or None."""
    if like is None or tensor.dim() == 0 or not getattr(like, "tensor_model_parallel", False):
        return None
    if getattr(like, "partition_stride", 1) != 1:
        raise CheckpointError(
            "a parameter with partition_stride != 1 (strided TP shards) cannot be saved "
            "reshardably: use contiguous TP partitions"
        )
    return like.partition_dim


class Resharder:
    """Wraps local TP shards as DTensors over a (replica, tp) mesh matching Megatron's rank order.

    Megatron's default order places tensor-parallel ranks adjacent, so the world reshaped as
    (world // tp, tp) has the TP groups as rows.
    """

    def __init__(self, tensor_size: int, device: torch.device) -> None:
        world = dist.get_world_size()
        ranks = torch.arange(world).reshape(world // tensor_size, tensor_size)
        self.tensor_size = tensor_size
        self.mesh = DeviceMesh(device.type, ranks, mesh_dim_names=("replica", "tp"))

    def wrap(
        self, tensors: dict[str, torch.Tensor], like: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """`tensors[name]` laid out like the parameter `like[name]`: TP-split ones as DTensors."""
        out: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            dim = _tp_layout(tensor, like.get(name))
            if dim is None:
                out[name] = tensor
                continue
            shape = list(tensor.shape)
            shape[dim] *= self.tensor_size
            stride = [math.prod(shape[i + 1 :]) for i in range(len(shape))]
            out[name] = DTensor.from_local(
                tensor,
                self.mesh,
                [Replicate(), Shard(dim)],
                run_check=False,
                shape=torch.Size(shape),
                stride=tuple(stride),
            )
        return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointManager:
    """Saves and loads checkpoints under `root`, keeping the newest `keep_last`.

    Collective: every rank calls `save`/`load` with its own shard of the state. With
    `async_save=True` the tensors are copied to CPU memory and written in a background thread
    while training continues; the checkpoint becomes complete (renamed) once the write is done,
    which `poll()` (each step) or `wait()` observe.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        tensor_size: int = 1,
        device: torch.device | None = None,
        keep_last: int = 3,
        async_save: bool = False,
    ) -> None:
        if keep_last < 1:
            raise CheckpointError(f"keep_last={keep_last} must be >= 1: keep at least one")
        self.root = Path(root)
        self.keep_last = keep_last
        self.async_save = async_save
        self.rank = dist.get_rank()
        self.resharder = Resharder(tensor_size, device or torch.device("cpu"))
        # Checkpoint I/O gets its own gloo group: async writes run collectives in a thread.
        self.group = dist.new_group(backend="gloo")
        # Alone, DCP runs without its collectives (`no_dist`): after a save that ran them, a
        # multi-threaded CPU process computed about half as fast for the rest of its life
        # (the VAE's spatial stage at 2 threads went from 0.11 to 0.19 s a step at its first
        # checkpoint; docs/benchmarks.md), and one process has nobody to plan with anyway.
        self._alone = dist.get_world_size(self.group) == 1
        self._pending: tuple[Future, int, Path, dict[str, Any]] | None = None

    def _dcp(self, call: Any, state: dict[str, Any], path: Path) -> Any:
        """``call`` (``dcp.save``, ``async_save`` or ``load``) on our group; alone, without DCP's
        collectives and without its warning that ``no_dist`` assumes one process."""
        with warnings.catch_warnings():
            if self._alone:
                warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            return call(state, checkpoint_id=path, process_group=self.group, no_dist=self._alone)

    # -- save ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        tensors: dict[str, dict[str, torch.Tensor]],
        like: dict[str, dict[str, torch.Tensor]],
        rank_state: dict[str, Any],
        meta: dict[str, Any],
    ) -> None:
        """Writes `tensors` (groups of name -> local shard laid out like `like[group][name]`), this
        rank's `rank_state` (weights-only picklable) and rank 0's `meta` as checkpoint `step`."""
        self.wait()
        final = step_dir(self.root, step)
        partial = final.with_name(final.name + ".partial")
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob("step_*.partial"):
                shutil.rmtree(stale, ignore_errors=True)
            partial.mkdir()
        dist.barrier(group=self.group)
        state = {group: self.resharder.wrap(items, like[group]) for group, items in tensors.items()}
        torch.save(rank_state, partial / f"rank_{self.rank:05d}.pt")
        if self.async_save:
            future = self._dcp(dcp.async_save, state, partial)
            future = getattr(future, "upload_completion", future)
            self._pending = (future, step, partial, meta)
            logger.info("checkpoint %d: writing in the background", step)
        else:
            self._dcp(dcp.save, state, partial)
            self._commit(step, partial, meta)

    def poll(self) -> None:
        """Completes a background save whose write has finished (cheap; call every step)."""
        if self._pending is not None and self._pending[0].done():
            self.wait()

    def wait(self) -> None:
        """Blocks until a background save, if any, is written and committed."""
        if self._pending is None:
            return
        future, step, partial, meta = self._pending
        self._pending = None
        future.result()
        self._commit(step, partial, meta)

    def _commit(self, step: int, partial: Path, meta: dict[str, Any]) -> None:
        dist.barrier(group=self.group)  # every rank's files are on disk
        if self.rank == 0:
            final = step_dir(self.root, step)
            (partial / "meta.json").write_text(json.dumps({"step": step, **meta}, indent=1))
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            _fsync_dir(self.root)
            for _, old in complete_checkpoints(self.root)[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint %d saved to %s", step, final)
        dist.barrier(group=self.group)

    # -- load ---------------------------------------------------------------------------------

    def load(
        self,
        path: str | os.PathLike,
        tensors: dict[str, dict[str, torch.Tensor]],
        like: dict[str, dict[str, torch.Tensor]],
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Loads checkpoint `path` in place into `tensors` (same structure as `save`).

        Returns (meta, rank_state); rank_state is None when the checkpoint was written by a
        different world size (RNG and data positions are per rank and then do not carry over).
        """
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise CheckpointError(
                f"{path} is not a complete checkpoint (no meta.json): pass a step_N folder "
                "written by CheckpointManager.save, or use latest_checkpoint(root)"
            )
        meta = json.loads((path / "meta.json").read_text())
        state = {group: self.resharder.wrap(items, like[group]) for group, items in tensors.items()}
        try:
            self._dcp(dcp.load, state, path)
        except (Exception, CheckpointException) as err:  # DCP's is a BaseException
            reason = str(err).strip().splitlines()[-1]  # the failing rank's last line
            raise CheckpointError(
                f"could not load {path} into this model: {reason} "
                "(does the model config match the one in meta.json?)"
            ) from err
        rank_file = path / f"rank_{self.rank:05d}.pt"
        same_world = meta.get("world_size") == dist.get_world_size()
        rank_state = torch.load(rank_file, weights_only=True) if same_world else None
        return meta, rank_state


def gather_full(
    tensors: dict[str, torch.Tensor], like: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Full (TP-unsplit) copies of `tensors`, gathered over the tensor-parallel group."""
    from megatron.core import parallel_state

    tp_size = parallel_state.get_tensor_model_parallel_world_size()
    group = parallel_state.get_tensor_model_parallel_group()
    out = {}
    for name, tensor in tensors.items():
        dim = _tp_layout(tensor, like.get(name))
        tensor = tensor.detach().contiguous()
        if dim is not None and tp_size > 1:
            parts = [torch.empty_like(tensor) for _ in range(tp_size)]
            dist.all_gather(parts, tensor, group=group)
            tensor = torch.cat(parts, dim=dim)
        out[name] = tensor.cpu().clone()
    return out


def export_safetensors(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    like: dict[str, torch.Tensor],
    config: dict[str, Any],
) -> Path | None:
    """Writes full weights to `<path>/model.safetensors` and `config` to `<path>/config.json`.

    Collective (every rank calls it with its stage's tensors under whole-model names): TP
    shards are gathered, then the pipeline stages' weights are gathered to rank 0, which
    writes. Returns the weights file on rank 0, None elsewhere. Load with
    `safetensors.torch.load_file`.
    """
    from megatron.core import parallel_state
    from safetensors.torch import save_file

    full = gather_full(tensors, like)
    if dist.is_initialized() and parallel_state.get_pipeline_model_parallel_world_size() > 1:
        on_first_replica = (
            parallel_state.get_tensor_model_parallel_rank() == 0
            and parallel_state.get_data_parallel_rank(with_context_parallel=True) == 0
        )
        if on_first_replica:  # the stages of the replica that holds rank 0
            group = parallel_state.get_pipeline_model_parallel_group()
            stages = [None] * group.size() if dist.get_rank() == 0 else None
            dst = dist.get_global_rank(group, 0)
            dist.gather_object(full, stages, dst=dst, group=group)
            if stages is not None:
                full = {k: v for stage in stages for k, v in stage.items()}
    if dist.is_initialized() and dist.get_rank() != 0:
        return None
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(full, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    return path / "model.safetensors"

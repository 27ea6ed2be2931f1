"""Seeding and RNG state capture, Megatron-Core's tensor-parallel RNG tracker included.

Megatron-Core draws tensor-parallel randomness (weight init without
`use_cpu_initialization`, dropout inside TP regions) under `get_cuda_rng_tracker().fork()`,
whose stock tracker stores CUDA generator states and fails without CUDA. On CPU we install a
tracker with the same names and seeds that forks the CPU generator instead, so Megatron
layers run unchanged. On CPU build Megatron models with
`TransformerConfig(use_cpu_initialization=True)`: each TP rank then draws the full weight from
the (identically seeded) default generator and keeps its slice, so TP=2 starts from exactly the
weights of TP=1.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from megatron.core.tensor_parallel import random as mcore_random

# Megatron-Core's offsets (model_parallel_cuda_manual_seed), so CPU and GPU seed alike.
_TP_OFFSET = 2718
_EXPERT_OFFSET = 1024


class CpuRNGStatesTracker(mcore_random.CudaRNGStatesTracker):
    """Megatron's named RNG states, held as CPU generator states."""

    def add(self, name: str, seed: int) -> None:
        if name in self.states_:
            raise ValueError(f"RNG state {name!r} is already tracked: reset() the tracker first")
        self._is_initialized = True
        self.seeds_.add(seed)
        self.states_[name] = torch.Generator().manual_seed(seed).get_state()

    @contextlib.contextmanager
    def fork(self, name: str = mcore_random._MODEL_PARALLEL_RNG_TRACKER_NAME) -> Iterator[None]:
        if name not in self.states_:
            raise ValueError(f"RNG state {name!r} is not tracked: call mugv.infra.manual_seed()")
        outer = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer)


def _parallel_ranks() -> tuple[int, int, int]:
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 0, 0, 0
    return (
        ps.get_tensor_model_parallel_rank(),
        ps.get_expert_model_parallel_rank(),
        ps.get_expert_tensor_parallel_rank(),
    )


def manual_seed(seed: int) -> None:
    """Seeds Python, NumPy, torch and Megatron-Core's tracker (CPU or CUDA), like Megatron.

    The default generators get `seed` on every rank; the tracker's tensor-parallel state gets
    `seed + 2718 + tp_rank`. Call after `init_distributed` and before building the model.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        mcore_random.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)
        return
    tp_rank, ep_rank, etp_rank = _parallel_ranks()
    tracker = CpuRNGStatesTracker()
    tracker.add(mcore_random._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(mcore_random._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + _TP_OFFSET + tp_rank)
    tracker.add(
        mcore_random._EXPERT_PARALLEL_RNG_TRACKER_NAME,
        seed + _EXPERT_OFFSET + 100 * ep_rank + etp_rank,
    )
    mcore_random._CUDA_RNG_STATE_TRACKER = tracker
    mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True


def fork_data_parallel_rng(data_rank: int) -> None:
    """Reseeds the default generators (torch CPU and CUDA, Python's `random`, NumPy's global
    one) apart per data-parallel replica.

    `manual_seed` gives every rank the same default stream, which model building needs (each
    replica draws the same initial weights, each tensor-parallel rank the same full weight).
    Training draws (diffusion t and noise, dropout) must instead differ between replicas, or
    DP ranks repeat each other's noise on their different samples; and they must agree within
    a replica, since its tensor-, context- and pipeline-parallel ranks compute one sample
    together. So one value is drawn from the shared stream and the replica's seed is that
    value plus its data-parallel rank: equal on the ranks of a replica, apart across replicas.
    The Trainer calls this once the model is built; checkpoints keep the forked states.
    """
    base = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    torch.manual_seed(base + data_rank)
    random.seed(base + data_rank)
    np.random.seed((base + data_rank) % 2**32)


def get_rng_state() -> dict[str, Any]:
    """Every generator's state on this rank, as tensors and ints (`weights_only` loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED:
        tracker = mcore_random.get_cuda_rng_tracker()
        state["tracker"] = {k: v.clone() for k, v in tracker.get_states().items()}
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what `get_rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if "tracker" in state and mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED:
        tracker = mcore_random.get_cuda_rng_tracker()
        tracker.set_states({k: v.clone() for k, v in state["tracker"].items()})

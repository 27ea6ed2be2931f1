"""CPU ranks from Python: `run_ranks` spawns gloo ranks the way `torchrun` would.

Multi-rank tests use it, and so do apps that spread a small job over a machine's cores
(`mugv demo` trains its DiT data-parallel, one rank per core):

    def _check(scale):                      # top level of a module
        return torch.distributed.get_rank() * scale

    def test_ranks():
        assert run_ranks(_check, world_size=2, scale=3) == [0, 3]

Each rank is a fresh spawned interpreter with the torchrun env vars set (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT on a free port), `threads` intra-op threads (default
one), and, unless
`parallel=None`, `init_distributed(parallel)` and `manual_seed(seed)` done before `fn` runs.
The function is shipped by file and name, so test modules imported by pytest's
`--import-mode=importlib` work too. Arguments and results must be picklable.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import multiprocessing as mp
import os
import pickle
import queue
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from mugv.infra._errors import RankError
from mugv.infra.parallel import ParallelConfig

__all__ = ["free_port", "run_ranks"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _load_function(module_name: str, path: str, qualname: str) -> Callable[..., Any]:
    if module_name == "__main__":
        # a script's function: the script as `__mp_main__`, which multiprocessing's spawn has
        # already imported here, so its `if __name__ == "__main__":` block does not run again
        module_name = "__mp_main__"
    loaded = sys.modules.get(module_name)
    loaded_file = getattr(loaded, "__file__", None)
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if loaded_file and os.path.samefile(loaded_file, path):
        module = loaded
    elif spec is not None and spec.origin and os.path.samefile(spec.origin, path):
        module = importlib.import_module(module_name)
    else:  # not importable by name, or another file of that name (pytest's importlib mode)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rank_main(
    rank: int,
    world_size: int,
    port: int,
    target: tuple[str, str, str],
    payload: bytes,
    parallel: ParallelConfig | None,
    seed: int,
    threads: int,
    results: mp.Queue,
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    try:
        import torch

        torch.set_num_threads(threads)
        from mugv.infra._rng import manual_seed
        from mugv.infra.parallel import destroy_distributed, init_distributed

        fn = _load_function(*target)
        kwargs = pickle.loads(payload)
        if parallel is not None:
            init_distributed(parallel, backend="gloo")
            manual_seed(seed)
        try:
            result = fn(**kwargs)
        finally:
            destroy_distributed()
        results.put((rank, True, pickle.dumps(result)))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))


def run_ranks(
    fn: Callable[..., Any],
    world_size: int = 2,
    *,
    parallel: ParallelConfig | None = ParallelConfig(),  # noqa: B008 (frozen)
    seed: int = 0,
    timeout: float | None = 300.0,
    threads: int = 1,
    **kwargs: Any,
) -> list[Any]:
    """Runs `fn(**kwargs)` on `world_size` CPU ranks over gloo; returns results by rank.

    `fn` must be a top-level function. If any rank raises, exits or exceeds `timeout`
    seconds (None: no limit), the other ranks are killed and `RankError` carries the first
    failure's traceback.
    """
    if "<locals>" in fn.__qualname__ or fn.__name__ == "<lambda>":
        raise TypeError(
            f"run_ranks(fn={fn.__qualname__}): fn must be a top-level function of a module"
        )
    if threads < 1:
        raise ValueError(f"run_ranks(threads={threads}): use at least one thread per rank")
    target = (fn.__module__, inspect.getfile(fn), fn.__qualname__)
    payload = pickle.dumps(kwargs)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(rank, world_size, port, target, payload, parallel, seed, threads, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        for proc in procs:
            proc.start()
    finally:
        if env_threads is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    outputs: dict[int, Any] = {}
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    try:
        while len(outputs) < world_size:
            try:
                rank, ok, data = results.get(timeout=0.2)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    rank = procs.index(dead[0])
                    raise RankError(
                        f"rank {rank} of {world_size} died with exit code {dead[0].exitcode} "
                        f"running {fn.__qualname__} (killed, or crashed in native code)"
                    ) from None
                if time.monotonic() > deadline:
                    raise RankError(
                        f"{fn.__qualname__} on {world_size} ranks did not finish within "
                        f"{timeout:.0f} s (ranks done: {sorted(outputs)}); a collective may be "
                        "waiting on a rank that skipped it"
                    ) from None
                continue
            if not ok:
                raise RankError(f"rank {rank} of {world_size} raised in {fn.__qualname__}:\n{data}")
            outputs[rank] = pickle.loads(data)
    finally:
        failed = len(outputs) < world_size  # survivors may wait in a collective forever
        for proc in procs:
            proc.join(timeout=0.0 if failed else 10.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
    return [outputs[rank] for rank in range(world_size)]

import os

import pytest
import torch
import torch.distributed as dist
from _infra_models import TinyRegressor, tiny_config
from megatron.core import parallel_state
from megatron.core.tensor_parallel import get_cuda_rng_tracker

from mugv.infra import (
    ConfigError,
    DistributedError,
    ParallelConfig,
    RankError,
    dist_info,
    launch_env,
    manual_seed,
    single_process,
)
from mugv.infra.spawn import run_ranks


# One test per bad-config rule: each error is one line and names the field.
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tensor": 0}, "ParallelConfig.tensor"),
        ({"context": -1}, "ParallelConfig.context"),
        ({"pipeline": 1.5}, "ParallelConfig.pipeline"),
        ({"data": 0}, "ParallelConfig.data"),
        ({"sequence_parallel": True}, "ParallelConfig.sequence_parallel"),
    ],
)
def test_bad_field_rejected_on_construction(kwargs, field):
    with pytest.raises(ConfigError, match=field) as err:
        ParallelConfig(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("config", "args", "field"),
    [
        (ParallelConfig(tensor=4), {"world_size": 6}, "world size 6 is not a multiple"),
        (ParallelConfig(tensor=2, data=3), {"world_size": 4}, "ParallelConfig.data=3"),
        (ParallelConfig(tensor=3), {"world_size": 3, "num_heads": 4}, "ParallelConfig.tensor=3"),
        (
            ParallelConfig(tensor=4),
            {"world_size": 4, "num_heads": 8, "num_query_groups": 2},
            "num_query_groups=2",
        ),
        (
            ParallelConfig(pipeline=3),
            {"world_size": 3, "num_layers": 56},
            "ParallelConfig.pipeline",
        ),
        (
            ParallelConfig(tensor=4, sequence_parallel=True),
            {"world_size": 4, "seq_length": 50402},
            "ParallelConfig.sequence_parallel",
        ),
        (ParallelConfig(context=2), {"world_size": 2, "seq_length": 6}, "ParallelConfig.context"),
    ],
)
def test_bad_layout_rejected_by_validate(config, args, field):
    with pytest.raises(ConfigError, match=field) as err:
        config.validate(**args)
    assert "\n" not in str(err.value)


def test_good_layout_gives_data_size():
    config = ParallelConfig(tensor=4, sequence_parallel=True, pipeline=2)
    config.validate(16, num_heads=48, num_layers=56, seq_length=50400)
    assert config.data_size(16) == 2


def test_launch_env_reads_torchrun_and_slurm(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    assert launch_env() == (0, 0, 1)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    with pytest.raises(DistributedError, match="MASTER_ADDR"):
        launch_env()
    monkeypatch.setenv("MASTER_ADDR", "node0")
    assert launch_env() == (5, 1, 8)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert launch_env() == (3, 3, 4)


def test_single_process_builds_and_runs_a_megatron_model():
    with single_process(seed=0) as info:
        assert (info.world_size, info.tensor_size, info.data_size) == (1, 1, 1)
        assert dist_info() == info
        assert dist.get_backend() == "gloo"
        model = TinyRegressor(tiny_config())
        out = model(torch.randn(6, 2, 8))  # (s, b, 8)
        out.square().mean().backward()
        assert out.shape == (6, 2, 8)
        assert all(p.grad is not None for p in model.parameters())
        first = [p.detach().clone() for p in model.parameters()]
    assert not dist.is_initialized()
    assert not parallel_state.model_parallel_is_initialized()
    with single_process(seed=0):  # re-entrant after exit, same seed -> same weights
        again = list(TinyRegressor(tiny_config()).parameters())
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_cpu_rng_tracker_forks_the_cpu_generator():
    with single_process(seed=3):
        tracker = get_cuda_rng_tracker()
        before = torch.get_rng_state()
        with tracker.fork():
            a = torch.rand(4)
        assert torch.equal(torch.get_rng_state(), before)  # default stream untouched
        with tracker.fork():
            b = torch.rand(4)
        assert not torch.equal(a, b)  # the tracked stream advanced
        manual_seed(3)
        with get_cuda_rng_tracker().fork():
            assert torch.equal(torch.rand(4), a)


def _rank_report(scale):
    tensor = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(tensor)
    assert dist_info().tensor_size == 2
    return {
        "rank": dist.get_rank(),
        "sum": tensor.item() * scale,
        "tp": parallel_state.get_tensor_model_parallel_rank(),
        "dp": parallel_state.get_data_parallel_rank(),
    }


def _rank_fails():
    if dist.get_rank() == 1:
        raise ValueError("boom on rank one")
    dist.barrier()


@pytest.mark.distributed
def test_run_ranks_returns_results_per_rank():
    out = run_ranks(_rank_report, world_size=2, parallel=ParallelConfig(tensor=2), scale=2.0)
    assert [o["rank"] for o in out] == [0, 1]
    assert [o["sum"] for o in out] == [6.0, 6.0]
    assert [(o["tp"], o["dp"]) for o in out] == [(0, 0), (1, 0)]


@pytest.mark.distributed
def test_run_ranks_propagates_a_rank_exception():
    with pytest.raises(RankError, match=r"(?s)rank 1 of 2 raised.*boom on rank one"):
        run_ranks(_rank_fails, world_size=2, timeout=60)


def _rank_threads():
    return torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]


@pytest.mark.distributed
def test_run_ranks_sets_the_threads_of_each_rank_and_waits_without_a_timeout():
    out = run_ranks(_rank_threads, world_size=2, parallel=None, threads=2, timeout=None)
    assert out == [(2, "2"), (2, "2")]


SCRIPT = """
from mugv.infra.spawn import run_ranks

def rank_id(offset):
    import os
    return int(os.environ["RANK"]) + offset

if __name__ == "__main__":
    print("ranks", run_ranks(rank_id, world_size=2, parallel=None, timeout=120, offset=10))
"""


@pytest.mark.distributed
def test_run_ranks_runs_a_function_of_a_script_without_its_main_block(tmp_path):
    """A benchmark script's own function: the ranks load the script without rerunning its
    `if __name__ == "__main__":` block (which would spawn ranks from the ranks)."""
    import subprocess
    import sys

    script = tmp_path / "bench_script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ranks [10, 11]" in done.stdout


def test_run_ranks_rejects_zero_threads():
    with pytest.raises(ValueError, match="at least one thread"):
        run_ranks(_rank_threads, threads=0)


def test_run_ranks_rejects_local_functions():
    def local():
        return 1

    with pytest.raises(TypeError, match="top-level"):
        run_ranks(local)

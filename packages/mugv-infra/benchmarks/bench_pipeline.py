"""Pipeline-parallel training cost on CPU: PP=2 (2 gloo ranks) against PP=1 (1 process).

    python bench_pipeline.py --out result.json

The same Megatron-Core transformer (embedding, `TransformerBlock`, head), data and optimizer,
trained by `Trainer.fit` at pipeline size 1 and 2 with `--micro-batches` micro-batches per step
(Megatron's 1F1B schedule at PP=2). Reported per step, after a warm-up:

- CPU time summed over the ranks (process time: what the machine spends, independent of how
  many cores other jobs leave free) and its ratio PP=2 / PP=1: the cost of the schedule, the
  point-to-point transfers and the per-step RNG/loss broadcasts;
- wall time and steps/s, with the ideal 1F1B bubble fraction (p - 1) / (m + p - 1) next to it
  (on a shared 2-core machine the wall times say little about what a GPU node would see).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from mugv.infra import ParallelConfig, ShuffledBatches, Trainer, TrainerConfig, single_process
from mugv.infra.parallel import DistInfo, dist_info
from mugv.infra.spawn import run_ranks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _infra_models import TinyRegressor, regression_step, tiny_config


def _run(info: DistInfo, *, steps: int, warmup: int, micro_batches: int, width: int) -> dict:
    model = TinyRegressor(tiny_config(num_layers=4, hidden_size=width, num_attention_heads=4))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 32, 8, generator=gen)
    y = torch.tanh(x.flip(1))
    data = ShuffledBatches(512, 8, lambda idx: (x[idx], y[idx]), seed=0)
    config = TrainerConfig(steps=warmup + steps, micro_batches=micro_batches, lr=1e-3)
    trainer = Trainer(model, regression_step, data, config, info=info)
    marks = {}

    def on_step(out):
        if out.step == warmup:
            marks["cpu"], marks["wall"] = time.process_time(), time.perf_counter()

    trainer.fit(on_step)
    return {
        "cpu_s": (time.process_time() - marks["cpu"]) / steps,
        "wall_s": (time.perf_counter() - marks["wall"]) / steps,
    }


def _rank_run(**kwargs) -> dict:
    return _run(dist_info(), **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--micro-batches", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    kwargs = dict(
        steps=args.steps, warmup=args.warmup, micro_batches=args.micro_batches, width=args.width
    )
    with single_process(seed=0) as info:
        pp1 = _run(info, **kwargs)
    ranks = run_ranks(_rank_run, world_size=2, parallel=ParallelConfig(pipeline=2), **kwargs)
    pp2 = {
        "cpu_s": sum(r["cpu_s"] for r in ranks),
        "wall_s": max(r["wall_s"] for r in ranks),
    }
    m, p = args.micro_batches, 2
    result = {
        "config": vars(args) | {"out": str(args.out)},
        "pp1": pp1,
        "pp2": pp2,
        "cpu_ratio": pp2["cpu_s"] / pp1["cpu_s"],
        "bubble_fraction_1f1b": (p - 1) / (m + p - 1),
    }
    print(f"{'layout':<8} {'CPU ms/step (all ranks)':>24} {'wall ms/step':>13} {'steps/s':>8}")
    for name, row in (("PP=1", pp1), ("PP=2", pp2)):
        print(
            f"{name:<8} {row['cpu_s'] * 1e3:>24.2f} {row['wall_s'] * 1e3:>13.2f}"
            f" {1 / row['wall_s']:>8.2f}"
        )
    print(f"CPU ratio PP=2 / PP=1: {result['cpu_ratio']:.3f}")
    print(f"ideal 1F1B bubble (p-1)/(m+p-1): {result['bubble_fraction_1f1b']:.3f}")
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

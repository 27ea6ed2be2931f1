"""The demo's DiT stage on two cores: one process of two threads against two data-parallel ranks.

    python bench_cpu_layout.py --out result.json [--steps 30 --rounds 3]

`mugv demo` trains its tiny MUGDiT (width 192, depth 4, 24-channel latents, patch 1x2x2) on
17-frame 64x64 clips (3 x 8 x 8 latents, 48 tokens), 32 clips a step, on the machine's two
cores. Two ways to spend them:

- ``one process``: one rank (`mugv.infra.single_process`) of two torch threads, the whole
  batch of 32 a step;
- ``two ranks``: two spawned gloo ranks of one thread, 16 clips each, the gradients averaged
  with an all-reduce after every backward (`TorchDataParallel`).

Both train the same model on the same kind of batch through `mugv.dit.train.train_dit` (the
Trainer with AdamW, clipping, EMA). Each variant runs in fresh processes, alternating round
by round; a round reports the seconds per step after a warm-up and the whole run's wall time
(start-up, model, data, warm-up, steps: what a demo stage pays). Ratios are one process over
two ranks, median over the rounds; below 1 the single process is faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

BATCH, LATENT, TEXT_LEN, TEXT_DIM = 32, (24, 3, 8, 8), 32, 384


def _train(steps: int, warmup: int) -> dict[str, float]:
    from mugv.dit import MUGDiT, dit_config
    from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
    from mugv.dit.train import LatentTextDataset, train_dit
    from mugv.infra import TrainerConfig
    from mugv.infra.parallel import dist_info

    info = dist_info()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, TEXT_LEN + 1, (512,), generator=g)
    dataset = LatentTextDataset(
        torch.randn(512, *LATENT, generator=g),
        [torch.randn(int(n), TEXT_DIM, generator=g) for n in lengths],
        8.0,
        height=64,
        width=64,
    )
    config = dit_config(
        "tiny", text_dim=TEXT_DIM, in_channels=LATENT[0], hidden_size=192, num_heads=4, depth=4
    )
    trainer = train_dit(
        MUGDiT(config),
        dataset,
        TrainerConfig(steps=steps + warmup, lr=1e-3, warmup_steps=5, ema_decay=0.995),
        info=info,
        batch_size=BATCH // info.data_size,
        flow=RectifiedFlow(FlowConfig(base_pixels=64 * 64)),
    )
    for _ in range(warmup):
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return {"step_s": (time.perf_counter() - start) / steps}


def _variant(name: str, steps: int, warmup: int) -> dict[str, float]:
    from mugv.infra.spawn import run_ranks

    ranks, threads = (1, 2) if name == "one process" else (2, 1)
    start = time.perf_counter()
    results = run_ranks(
        _train, world_size=ranks, threads=threads, timeout=None, steps=steps, warmup=warmup
    )
    return {
        "step_s": max(r["step_s"] for r in results),
        "run_s": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    names = ("one process", "two ranks")
    rounds = []
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        rounds.append({name: _variant(name, args.steps, args.warmup) for name in order})
    table = {}
    for name in names:
        table[name] = {
            k: statistics.median(rnd[name][k] for rnd in rounds) for k in ("step_s", "run_s")
        }
    ratios = {
        k: statistics.median(rnd["one process"][k] / rnd["two ranks"][k] for rnd in rounds)
        for k in ("step_s", "run_s")
    }
    print(f"\n{'layout':<14}{'s/step':>10}{'clips/s':>10}{'run s':>10}")
    for name, row in table.items():
        print(
            f"{name:<14}{row['step_s']:>10.3f}{BATCH / row['step_s']:>10.1f}{row['run_s']:>10.1f}"
        )
    print(
        f"one process / two ranks: step {ratios['step_s']:.2f}, whole run {ratios['run_s']:.2f}"
        f" (median of {args.rounds} rounds; target <= 1.0)"
    )
    result = {
        "benchmark": "dit_cpu_layout",
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
        "batch": BATCH,
        "latent": LATENT,
        "steps": args.steps,
        "table": table,
        "ratios_one_process_over_two_ranks": ratios,
        "rounds": rounds,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

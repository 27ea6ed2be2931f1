"""Trainer overhead vs a bare PyTorch loop, and checkpoint save/load throughput.

    python bench_trainer.py --out result.json

1. The same tiny transformer, data, AdamW and clipping, trained by a hand-written loop and by
   `Trainer.fit` (no checkpoints), one thread; rounds alternate, and the step time is the
   process CPU time (wall time swings with other jobs on a shared machine); the ratio of
   the medians is reported (target <= 1.05).
2. `Trainer.save` / `Trainer.resume` of a larger model (weights + AdamW state) in MB/s, next to
   `torch.save` / `torch.load` of the same tensors as the reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mugv.infra import ShuffledBatches, Trainer, TrainerConfig, single_process


def tiny_model(width: int, layers: int) -> nn.Module:
    layer = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True)
    return nn.Sequential(
        nn.Linear(8, width), nn.TransformerEncoder(layer, layers), nn.Linear(width, 8)
    )


def step_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def make_data(n: int = 256, batch: int = 16) -> ShuffledBatches:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, 8, generator=gen)
    y = torch.tanh(x.flip(1))
    return ShuffledBatches(n, batch, lambda idx: (x[idx], y[idx]), seed=0)


def bare_loop(model: nn.Module, data: ShuffledBatches, steps: int) -> float:
    """CPU seconds per step of the plain PyTorch loop."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-3,
        foreach=True,
    )
    it = iter(data)
    start = time.process_time()
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(data)
            batch = next(it)
        opt.zero_grad(set_to_none=True)
        step_fn(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
    return (time.process_time() - start) / steps


def trainer_loop(model: nn.Module, data: ShuffledBatches, steps: int, info) -> float:
    config = TrainerConfig(
        steps=steps, lr=1e-3, weight_decay=0.01, schedule="constant", log_every=steps
    )
    trainer = Trainer(model, step_fn, data, config, info=info)
    start = time.process_time()
    trainer.fit()
    return (time.process_time() - start) / steps


def bench_overhead(info, *, width: int, layers: int, steps: int, rounds: int) -> dict:
    bare, ours = [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        bare.append(bare_loop(tiny_model(width, layers), make_data(), steps))
        torch.manual_seed(0)
        ours.append(trainer_loop(tiny_model(width, layers), make_data(), steps, info))
    bare_ms, ours_ms = statistics.median(bare) * 1e3, statistics.median(ours) * 1e3
    return {
        "model": f"{layers}-layer transformer, width {width}, batch 16 x 32 tokens",
        "bare_cpu_ms_per_step": bare_ms,
        "trainer_cpu_ms_per_step": ours_ms,
        "ratio": ours_ms / bare_ms,
        "target_ratio": 1.05,
    }


def bench_checkpoint(info, *, width: int, layers: int) -> dict:
    torch.manual_seed(0)
    model = tiny_model(width, layers)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainerConfig(steps=1, lr=1e-3, checkpoint_dir=f"{tmp}/ckpt")
        trainer = Trainer(model, step_fn, make_data(64, 16), config, info=info)
        trainer.train_step()
        tensors, _ = trainer._state()
        flat = {f"{g}/{k}": v for g, group in tensors.items() for k, v in group.items()}
        megabytes = sum(v.numel() * v.element_size() for v in flat.values()) / 2**20
        start = time.perf_counter()
        trainer.save()
        save_s = time.perf_counter() - start
        reload = Trainer(tiny_model(width, layers), step_fn, make_data(64, 16), config, info=info)
        start = time.perf_counter()
        reload.resume()
        load_s = time.perf_counter() - start
        ref_path = Path(tmp) / "reference.pt"
        start = time.perf_counter()
        torch.save(flat, ref_path)
        ref_save_s = time.perf_counter() - start
        start = time.perf_counter()
        torch.load(ref_path, weights_only=True)
        ref_load_s = time.perf_counter() - start
    return {
        "megabytes": megabytes,
        "save_mb_per_s": megabytes / save_s,
        "load_mb_per_s": megabytes / load_s,
        "torch_save_mb_per_s": megabytes / ref_save_s,
        "torch_load_mb_per_s": megabytes / ref_load_s,
        "save_ratio_vs_torch_save": ref_save_s / save_s,
        "load_ratio_vs_torch_load": ref_load_s / load_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with single_process(seed=0) as info:
        overhead = bench_overhead(info, width=64, layers=2, steps=args.steps, rounds=args.rounds)
        checkpoint = bench_checkpoint(info, width=384, layers=6)
    result = {"device": "cpu", "threads": torch.get_num_threads(), "overhead": overhead}
    result["checkpoint"] = checkpoint
    print(f"{'train loop':<28}{'CPU ms/step':>12}")
    print(f"{'bare PyTorch':<28}{overhead['bare_cpu_ms_per_step']:>12.2f}")
    print(f"{'mugv.infra Trainer':<28}{overhead['trainer_cpu_ms_per_step']:>12.2f}")
    print(f"{'ratio (target <= 1.05)':<28}{overhead['ratio']:>12.3f}")
    print(f"\ncheckpoint of {checkpoint['megabytes']:.0f} MB  {'save MB/s':>10}{'load MB/s':>10}")
    print(
        f"{'Trainer.save/resume (DCP)':<28}"
        f"{checkpoint['save_mb_per_s']:>10.0f}{checkpoint['load_mb_per_s']:>10.0f}"
    )
    print(
        f"{'torch.save/load (reference)':<28}"
        f"{checkpoint['torch_save_mb_per_s']:>10.0f}{checkpoint['torch_load_mb_per_s']:>10.0f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""VAE training speed after a checkpoint, in one process at two threads (`mugv demo`'s VAE stage).

    python bench_train_after_checkpoint.py --out result.json

The `narrow` VAE's spatial stage (16 random 32x32 frame crops a step, MSE, `mugv.infra.Trainer`)
trains `--steps` steps, saves a checkpoint and trains `--steps` more; the wall time per step
after the save over the time before is the ratio (target <= 1.1). Each variant runs in a fresh
process, because what a save does to the process lasts:

- ``Trainer.save``: what `train_vae` does every `checkpoint_every` steps. In a single process
  `mugv.infra.CheckpointManager` runs DCP without its collectives (``no_dist``).
- ``collective DCP save`` (the reference, the checkpoint code before 2026-12-02): the same
  tensors through ``torch.distributed.checkpoint.save`` with its planning collectives on the
  one-rank gloo group. With torch 2.13 on these Xeons that left the process's two compute
  threads sleeping and waking around its kernels (tens of thousands of voluntary context
  switches in some 60 steps, against a handful without the save), about half as fast for the
  rest of the run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

VARIANTS = ("trainer_save", "collective_dcp_save")


def _run(variant: str, steps: int, threads: int) -> dict:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    from mugv.infra import Trainer, TrainerConfig, single_process
    from mugv.vae import CONFIGS, LossConfig, VideoVAE
    from mugv.vae.train import VAETrainModule, make_step_fn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    crops = torch.rand(256, 3, 32, 32) * 2 - 1
    gen = torch.Generator().manual_seed(0)

    def batches():
        while True:
            yield {"image": crops[torch.randint(len(crops), (16,), generator=gen)]}

    vae = VideoVAE(CONFIGS["narrow"])
    for name, param in vae.named_parameters():
        param.requires_grad_(name.startswith("spatial_"))
    step_fn = make_step_fn(LossConfig(l1_weight=0, mse_weight=1, ssim_weight=0), stage="spatial")
    with tempfile.TemporaryDirectory() as tmp, single_process(seed=0) as info:
        config = TrainerConfig(steps=10**6, lr=1e-3, checkpoint_dir=f"{tmp}/ckpt")
        trainer = Trainer(VAETrainModule(vae), step_fn, batches(), config, info=info)

        def wall_s_per_step() -> float:
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                trainer.train_step()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        wall_s_per_step()  # warm-up
        before = wall_s_per_step()
        if variant == "trainer_save":
            trainer.save()
        else:
            tensors, _ = trainer._state()
            dcp.save(tensors, checkpoint_id=f"{tmp}/collective", process_group=dist.group.WORLD)
        after = wall_s_per_step()
    return {"before_ms": before * 1e3, "after_ms": after * 1e3, "ratio": after / before}


def measure(variant: str, steps: int, threads: int) -> dict:
    """`_run` in a fresh process: a save's effect on a process does not wear off."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_run, variant, steps, threads).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = {
        "device": "cpu",
        "threads": args.threads,
        "model": "narrow VAE, spatial stage, 16 x 32x32 crops a step",
        "target_ratio": 1.1,
    }
    print(f"{'after a checkpoint':<28}{'ms/step before':>16}{'after':>10}{'ratio':>8}")
    for variant in VARIANTS:
        row = measure(variant, args.steps, args.threads)
        result[variant] = row
        label = variant.replace("_", " ")
        print(f"{label:<28}{row['before_ms']:>16.1f}{row['after_ms']:>10.1f}{row['ratio']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

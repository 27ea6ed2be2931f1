"""Train a small VAE on the synthetic world on this CPU, then measure what it reconstructs.

    python bench_train_world.py --out result.json [--minutes 13] [--checkpoint runs/vae-world]

Trains `CONFIGS[--config]` with `mugv.infra.Trainer` (L1 + SSIM + KL) on 16 x 64 x 64 world
clips (random --crop crops) for at most --minutes of wall time, saves the checkpoint with its
latent statistics, then encodes/decodes held-out test clips and reports PSNR and the oracle's
attribute (colour, shape, size) and motion accuracy on the reconstructions, next to the same
oracle on the original clips (the reference, ratio = recon / original).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch

from mugv.data.oracle import Oracle
from mugv.data.world import SceneSpec, SyntheticWorld, WorldConfig
from mugv.infra import single_process
from mugv.infra.trainer import Trainer, TrainerConfig
from mugv.vae import (
    CONFIGS,
    LossConfig,
    VAETrainModule,
    VideoVAE,
    clips_to_batch,
    compute_latent_stats,
    make_step_fn,
    psnr,
    tensor_to_frames,
)


class WorldBatches:
    """Endless (B, 3, T, crop, crop) batches of train clips, random crops, seeded."""

    def __init__(self, world: SyntheticWorld, batch: int, crop: int, seed: int) -> None:
        self.world, self.batch, self.crop = world, batch, crop
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        n = self.world.size("train")
        while True:
            clips = [
                self.world.sample("train", int(i)).clip
                for i in self.rng.integers(n, size=self.batch)
            ]
            video = clips_to_batch(clips)
            H, W = video.shape[-2:]
            y, x = (int(v) for v in self.rng.integers(0, [H - self.crop + 1, W - self.crop + 1]))
            yield {"video": video[..., y : y + self.crop, x : x + self.crop].contiguous()}


def evaluate(vae: VideoVAE, world: SyntheticWorld, clips: int) -> dict[str, float]:
    oracle = Oracle()
    psnrs, rec_scores, ref_scores = [], [], []
    for i in range(clips):
        sample = world.sample("test", i)
        spec = SceneSpec.from_dict(sample.clip.metadata["spec"])
        video = clips_to_batch([sample.clip])
        recon = vae.decode(vae.encode(video), num_frames=video.shape[2])
        psnrs.append(psnr(recon, video))
        rec_scores.append(oracle.score(tensor_to_frames(recon[0]), spec))
        ref_scores.append(oracle.score(sample.clip, spec))

    def summarise(scores):
        mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        mean["attributes"] = float(np.mean([mean[k] for k in ("colour", "shape", "size")]))
        return mean

    rec, ref = summarise(rec_scores), summarise(ref_scores)
    # PSNR over the whole test set (mean squared error pooled), plus the per-clip mean.
    mse = np.mean([10 ** (-p / 10) for p in psnrs])
    return {
        "psnr_db": float(-10 * np.log10(mse)),
        "psnr_db_mean_of_clips": float(np.mean(psnrs)),
        "attribute_accuracy": rec["attributes"],
        "motion_accuracy": rec["motion"],
        "oracle_recon": rec,
        "oracle_original": ref,
        "attribute_ratio": rec["attributes"] / max(ref["attributes"], 1e-9),
        "motion_ratio": rec["motion"] / max(ref["motion"], 1e-9),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="small", choices=sorted(CONFIGS))
    p.add_argument("--minutes", type=float, default=13.0, help="training wall-time budget")
    p.add_argument("--steps", type=int, default=1500, help="LR schedule length (cosine)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--test-clips", type=int, default=50)
    p.add_argument("--checkpoint", default="bench-out/vae-world")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (1 avoids OpenMP thrashing on a shared, oversubscribed CPU)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    world = SyntheticWorld(WorldConfig(num_frames=16, height=64, width=64, fps=8, seed=0))
    with single_process(seed=args.seed) as info:
        torch.manual_seed(args.seed)
        vae = VideoVAE(CONFIGS[args.config])
        module = VAETrainModule(vae)
        loss = LossConfig(l1_weight=1.0, ssim_weight=0.2, kl_weight=1e-6)
        trainer = Trainer(
            module,
            make_step_fn(loss),
            WorldBatches(world, args.batch, args.crop, args.seed),
            TrainerConfig(
                steps=args.steps,
                lr=args.lr,
                min_lr=args.lr / 20,
                warmup_steps=50,
                schedule="cosine",
                grad_clip=1.0,
                log_every=25,
            ),
            info=info,
        )
        start = time.perf_counter()
        deadline = start + 60 * args.minutes
        while trainer.step < args.steps and time.perf_counter() < deadline:
            out = trainer.train_step()
            if out.step % 25 == 0:
                logging.info(
                    "step %d loss %.4f %s",
                    out.step,
                    out.loss.item(),
                    {k: round(v, 4) for k, v in out.metrics.items()},
                )
        train_s = time.perf_counter() - start
        vae.eval()
        stats_clips = [clips_to_batch([world.sample("val", i).clip]) for i in range(32)]
        compute_latent_stats(vae, stats_clips)
        vae.save_pretrained(args.checkpoint)
        result = {
            "config": args.config,
            "parameters": sum(p.numel() for p in vae.parameters()),
            "steps": trainer.step,
            "train_seconds": train_s,
            "clip": "16x64x64",
            "checkpoint": args.checkpoint,
        }
        result |= evaluate(vae, world, args.test_clips)
    print(f"{'metric':<28}{'recon':>10}{'original':>10}{'ratio':>8}")
    print(f"{'PSNR (dB)':<28}{result['psnr_db']:>10.2f}")
    for name, key in (("attribute accuracy", "attributes"), ("motion accuracy", "motion")):
        rec, ref = result["oracle_recon"][key], result["oracle_original"][key]
        print(f"{name:<28}{rec:>10.3f}{ref:>10.3f}{rec / max(ref, 1e-9):>8.3f}")
    print(
        f"trained {result['steps']} steps in {train_s / 60:.1f} min; checkpoint {args.checkpoint}"
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

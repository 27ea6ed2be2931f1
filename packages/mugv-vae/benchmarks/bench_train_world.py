"""Train the small VAE on the synthetic world on this CPU in two stages, then measure it.

    python bench_train_world.py --out result.json [--checkpoint runs/vae-world]

MUG-V's VAE is two-stage (SPEC, "MUG-V video VAE"); we train it that way with
`mugv.vae.train_vae`: stage ``spatial`` fits the 2D autoencoder on random --crop x --crop crops
of single frames; `fit_linear_shortcut` then starts the temporal stage (configs with
``linear_shortcut``, the CPU presets) as the PCA codec of the spatial features of --pca-clips
clips, and stage ``temporal`` freezes the spatial stage and fits the temporal one on
--temporal-crop crops of 16 x 64 x 64 clips, scored on the spatial features (and on pixels
through the frozen decoder with --pixel-weight).
The clips come from a pool of --pool train clips rendered once. Then it saves the checkpoint
with its latent statistics, encodes/decodes held-out test clips and reports PSNR and the
oracle's attribute (colour, shape, size) and motion accuracy on the reconstructions, next to
the same oracle on the original clips (the reference, ratio = recon / original).

Training time is reported as wall time and as this process's CPU time: with one thread the
CPU time is the wall time the run takes on an idle core, whatever else shares the machine.
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
from mugv.infra.trainer import TrainerConfig
from mugv.vae import (
    CONFIGS,
    LossConfig,
    VAETrainConfig,
    VideoVAE,
    clips_to_batch,
    compute_latent_stats,
    fit_linear_shortcut,
    fit_scaling_factor,
    psnr,
    tensor_to_frames,
    train_vae,
)


class PoolBatches:
    """Endless seeded batches from a pool of (N, 3, T, H, W) clips, random square crops.

    ``frames=True``: ``{"image": (batch, 3, crop, crop)}``, one random frame of a random clip
    per row; otherwise ``{"video": (batch, 3, T, crop, crop)}``.
    """

    def __init__(self, pool: torch.Tensor, batch: int, crop: int, *, frames: bool, seed: int):
        self.pool, self.batch, self.crop, self.frames = pool, batch, crop, frames
        self.rng = np.random.default_rng(seed)

    def __iter__(self):
        N, _, T, H, W = self.pool.shape
        while True:
            clips = self.rng.integers(N, size=self.batch)
            y, x = (int(v) for v in self.rng.integers(0, [H - self.crop + 1, W - self.crop + 1]))
            window = (..., slice(y, y + self.crop), slice(x, x + self.crop))
            if self.frames:
                t = self.rng.integers(T, size=self.batch)
                yield {"image": self.pool[clips, :, t][window].contiguous()}
            else:
                yield {"video": self.pool[clips][window].contiguous()}


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


def run_stage(vae, data, stage: VAETrainConfig, steps: int, lr: float, info) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    curve: list[tuple[int, dict[str, float]]] = []

    def on_step(out) -> None:
        if out.step % 50 == 0 or out.step == steps:
            curve.append((out.step, {k: round(v, 5) for k, v in out.metrics.items()}))
            logging.info("%s step %d %s", stage.stage, out.step, curve[-1][1])

    config = TrainerConfig(
        steps=steps,
        lr=lr,
        min_lr=lr / 20,
        warmup_steps=min(50, steps),
        schedule="cosine",
        betas=(0.9, 0.99),
        grad_clip=1.0,
        log_every=10**9,
    )
    train_vae(vae, data, config, info=info, config=stage, on_step=on_step)
    return {
        "steps": steps,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "curve": curve,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="narrow", choices=sorted(CONFIGS))
    p.add_argument("--spatial-steps", type=int, default=2000)
    p.add_argument("--spatial-batch", type=int, default=16, help="frames per spatial step")
    p.add_argument("--temporal-steps", type=int, default=200)
    p.add_argument("--temporal-batch", type=int, default=4, help="clips per temporal step")
    p.add_argument("--spatial-crop", type=int, default=32)
    p.add_argument("--temporal-crop", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pixel-weight", type=float, default=0.0, help="temporal stage pixel MSE")
    p.add_argument("--feature-weight", type=float, default=1.0)
    p.add_argument("--pool", type=int, default=512, help="train clips rendered once")
    p.add_argument(
        "--pca-clips",
        type=int,
        default=256,
        help="clips fit_linear_shortcut reads (configs with a linear shortcut; 0: random start)",
    )
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
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    pool = clips_to_batch([world.sample("train", i).clip for i in range(args.pool)])
    pool_s = time.process_time() - start_cpu
    with single_process(seed=args.seed) as info:
        torch.manual_seed(args.seed)
        vae = VideoVAE(CONFIGS[args.config])
        stages = {}
        stages["spatial"] = run_stage(
            vae,
            PoolBatches(pool, args.spatial_batch, args.spatial_crop, frames=True, seed=args.seed),
            VAETrainConfig(
                stage="spatial", loss=LossConfig(l1_weight=0.0, mse_weight=1.0, ssim_weight=0.0)
            ),
            args.spatial_steps,
            args.lr,
            info,
        )
        # unit-variance features for the temporal stage (SD's scaling factor, fitted)
        vae = fit_scaling_factor(vae, pool[:32].split(8))
        if vae.config.temporal.linear_shortcut and args.pca_clips:
            # the temporal stage starts as the PCA codec of the features (see the docstring)
            t0 = time.process_time()
            fit_linear_shortcut(vae, pool[: args.pca_clips].split(16))
            stages["pca"] = {"clips": args.pca_clips, "cpu_s": time.process_time() - t0}
        temporal_loss = LossConfig(
            l1_weight=0.0,
            ssim_weight=0.0,
            mse_weight=args.pixel_weight,
            feature_weight=args.feature_weight,
            kl_weight=1e-6,
        )
        stages["temporal"] = run_stage(
            vae,
            PoolBatches(
                pool, args.temporal_batch, args.temporal_crop, frames=False, seed=args.seed + 1
            ),
            VAETrainConfig(stage="temporal", loss=temporal_loss),
            args.temporal_steps,
            args.lr,
            info,
        )
        train_wall = time.perf_counter() - start_wall
        train_cpu = time.process_time() - start_cpu
        vae.eval()
        stats_clips = [clips_to_batch([world.sample("val", i).clip]) for i in range(32)]
        compute_latent_stats(vae, stats_clips)
        vae.save_pretrained(args.checkpoint)
        result = {
            "config": args.config,
            "parameters": sum(p.numel() for p in vae.parameters()),
            "clip": "16x64x64",
            "args": vars(args),
            "pool_render_cpu_s": pool_s,
            "stages": stages,
            "scaling_factor": vae.config.spatial.scaling_factor,
            "train_wall_s": train_wall,
            "train_cpu_s": train_cpu,
            "checkpoint": args.checkpoint,
        }
        result |= evaluate(vae, world, args.test_clips)
    print(f"{'metric':<28}{'recon':>10}{'original':>10}{'ratio':>8}")
    print(f"{'PSNR (dB)':<28}{result['psnr_db']:>10.2f}")
    for name, key in (("attribute accuracy", "attributes"), ("motion accuracy", "motion")):
        rec, ref = result["oracle_recon"][key], result["oracle_original"][key]
        print(f"{name:<28}{rec:>10.3f}{ref:>10.3f}{rec / max(ref, 1e-9):>8.3f}")
    for name, s in stages.items():
        if "steps" not in s:
            print(f"stage {name}: {s['cpu_s']:.0f} s CPU")
            continue
        print(
            f"stage {name}: {s['steps']} steps, {s['cpu_s']:.0f} s CPU "
            f"({s['cpu_s'] / s['steps']:.3f} s/step), {s['wall_s']:.0f} s wall"
        )
    print(
        f"training in all: {train_cpu / 60:.1f} min CPU (one thread: the idle-machine wall "
        f"time), {train_wall / 60:.1f} min wall; checkpoint {args.checkpoint}"
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

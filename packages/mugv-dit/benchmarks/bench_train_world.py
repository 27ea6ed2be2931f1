"""Does a tiny MUGDiT learn the synthetic world on a CPU? The issue-6 "done when" figure.

    python bench_train_world.py --out result.json [--vae PATH] [--train-minutes 6]

1. Clips of one coloured shape (`mugv.data.world`, 17 frames, 64x64, 8 fps) are encoded to
   latents by a `mugv.vae.VideoVAE` (loaded from `--vae`, e.g. the checkpoint mugv-vae's
   world benchmark saves, or the "small" config trained here for at most `--vae-minutes`),
   every caption paraphrase by the pretrained MiniLM-L6.
2. A tiny MUGDiT trains with the joint-task rectified flow on `mugv.infra`'s Trainer for at
   most `--train-minutes`; the eval loss on a fixed batch with fixed noise is reported before
   and after (EMA weights), and the model's one-step x0 error at several t over that of the
   best linear (per-channel Gaussian) denoiser: below 1 only once it knows the world.
3. Test prompts (half of them held-out colour-shape / shape-motion compositions) are
   generated (Euler, CFG with the learned null text), decoded and scored by the `mugv.data`
   oracle. In the same run the oracle also scores the real test clips and their VAE
   reconstructions: the ratio generated / reconstructed says how much of the reachable score
   the DiT reaches. Targets: colour+shape >= 0.80, motion >= 0.70.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time

import numpy as np
import torch
from _bench_common import clip_tensor, encode_world, fit_within

from mugv.data.oracle import Oracle
from mugv.data.world import SceneSpec, SyntheticWorld, WorldConfig
from mugv.dit.config import dit_config
from mugv.dit.model import MUGDiT
from mugv.dit.pipeline import GenerationConfig, Pipeline
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
from mugv.dit.text_encoder import HFTextEncoder
from mugv.dit.train import DiTStep, LatentTextDataset, collate_latents, train_dit
from mugv.infra.parallel import single_process
from mugv.infra.trainer import TrainerConfig
from mugv.vae import CONFIGS as VAE_CONFIGS
from mugv.vae import VideoVAE
from mugv.vae.stats import compute_latent_stats
from mugv.vae.train import train_vae

log = logging.getLogger("bench_train_world")
FRAMES, SIZE, FPS = 17, 64, 8.0


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3)."""
    return ((video.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()


def get_vae(args, world: SyntheticWorld, info) -> VideoVAE:
    """The `--vae` checkpoint or a freshly trained VAE, its latent normalisation (re)fitted
    on the first 128 train clips with `--latent-weight-power`."""
    vae = VideoVAE.from_pretrained(args.vae) if args.vae else train_world_vae(args, world, info)
    vae.eval()
    n = world.size("train")
    with torch.no_grad():
        vids = [
            torch.stack(
                [
                    clip_tensor(world.sample("train", i).clip.frames)
                    for i in range(s, min(s + 16, n))
                ]
            )
            for s in range(0, min(128, n), 16)
        ]
        compute_latent_stats(vae, vids, weight_power=args.latent_weight_power)
    return vae


def train_world_vae(args, world: SyntheticWorld, info) -> VideoVAE:
    vae = VideoVAE(VAE_CONFIGS[args.vae_config])
    n = world.size("train")

    def batches():  # random 32x32 crops, as mugv-vae's own world benchmark trains
        gen = torch.Generator().manual_seed(1)
        while True:
            idx = torch.randint(0, n, (args.vae_batch,), generator=gen).tolist()
            video = torch.stack([clip_tensor(world.sample("train", i).clip.frames) for i in idx])
            y, x = torch.randint(0, SIZE - 32 + 1, (2,), generator=gen).tolist()
            yield {"video": video[..., y : y + 32, x : x + 32].contiguous()}

    class Data:
        def __iter__(self):
            return batches()

    cfg = TrainerConfig(
        steps=args.vae_steps, lr=2e-3, warmup_steps=min(20, args.vae_steps), log_every=50
    )
    fit_within(
        lambda on_step: train_vae(vae, Data(), cfg, info=info, on_step=on_step), args.vae_minutes
    )
    return vae


@torch.no_grad()
def denoising_vs_linear(
    model: MUGDiT, batch: dict, train_latents: torch.Tensor, ts=(0.15, 0.3, 0.5, 0.7, 0.9)
) -> dict[str, float]:
    """One-step x0 error of the model over that of the best *linear* denoiser, per noise level.

    The model's x0 estimate at t is x_t + t v. The baseline treats each latent channel as
    Gaussian with the training latents' mean m and variance s2 and returns the posterior mean,
    m + k (x_t - (1 - t) m) with k = (1 - t) s2 / ((1 - t)^2 s2 + t^2): what a model that has
    learnt nothing about objects, layout or text achieves. A ratio near 1 says the model is no
    better than that; a model that knows the world drives it well below 1, most at mid t.
    Fixed noise, so runs compare.
    """
    x0 = batch["latents"]
    mean = train_latents.mean(dim=(0, 2, 3, 4)).view(1, -1, 1, 1, 1)
    var = train_latents.var(dim=(0, 2, 3, 4)).view(1, -1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4321))
    out = {}
    for t in ts:
        xt = (1 - t) * x0 + t * eps
        timestep = torch.full((len(x0),), t)
        v = model(xt, timestep, batch["text"], batch["text_mask"], batch["fps"])
        model_err = ((xt + t * v - x0) ** 2).mean()
        gain = (1 - t) * var / ((1 - t) ** 2 * var + t * t)
        linear_err = ((mean + gain * (xt - (1 - t) * mean) - x0) ** 2).mean()
        out[f"{t:g}"] = float(model_err / linear_err)
    return out


def score(oracle: Oracle, frames: np.ndarray, spec: SceneSpec) -> dict[str, float]:
    out = oracle.score(frames, spec)
    return {"colour_shape": float(out["colour_shape"]), "motion": float(out["motion"])}


def summarise(rows: list[dict[str, float]], held: list[bool]) -> dict[str, dict[str, float]]:
    out = {}
    for name, sel in (
        ("all", [True] * len(rows)),
        ("seen", [not h for h in held]),
        ("held_out", held),
    ):
        picked = [r for r, s in zip(rows, sel) if s]
        out[name] = {
            k: float(np.mean([r[k] for r in picked])) if picked else math.nan
            for k in ("colour_shape", "motion")
        } | {"n": len(picked)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_train_world.json")
    p.add_argument("--vae", default=None, help="a VideoVAE.save_pretrained folder (else train one)")
    p.add_argument("--vae-config", default="small", help="mugv.vae config to train without --vae")
    p.add_argument("--vae-steps", type=int, default=300)
    p.add_argument("--vae-batch", type=int, default=2)
    p.add_argument("--vae-minutes", type=float, default=4.0, help="wall-time cap of VAE training")
    p.add_argument("--train-minutes", type=float, default=6.0, help="wall-time cap of DiT training")
    p.add_argument("--train-clips", type=int, default=300)
    p.add_argument("--test-clips", type=int, default=48)
    p.add_argument("--config", default="tiny")
    p.add_argument("--hidden", type=int, default=None, help="override the config's hidden size")
    p.add_argument("--heads", type=int, default=None, help="override the config's head count")
    p.add_argument("--depth", type=int, default=None, help="override the config's depth")
    p.add_argument(
        "--shift-base",
        type=int,
        default=64 * 64,
        help="pixels at which the t schedule is unshifted (SPEC: 512*512, tuned for 512px+; at "
        "64x64 it would put almost no training at t > 0.8, where layout and colour are decided)",
    )
    p.add_argument(
        "--latent-weight-power",
        type=float,
        default=0.25,
        help="latent channels scaled by the VAE decoder's sensitivity to them ** this power "
        "(mugv.vae.weight_latent_channels); 0 = plain per-channel standardisation",
    )
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sample-steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    timings = {}

    world = SyntheticWorld(
        WorldConfig(
            num_frames=FRAMES,
            height=SIZE,
            width=SIZE,
            fps=FPS,
            seed=args.seed,
            max_objects=1,
            train_size=args.train_clips,
            val_size=16,
            test_size=args.test_clips,
        )
    )
    encoder = HFTextEncoder(max_length=32)
    with single_process(seed=args.seed) as info:
        t0 = time.perf_counter()
        vae = get_vae(args, world, info)
        timings["vae_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        latents, rows, feats, _ = encode_world(world, vae, encoder, "train", args.train_clips)
        dataset = LatentTextDataset(latents[rows], feats, FPS, height=SIZE, width=SIZE)
        timings["encode_s"] = time.perf_counter() - t0
        log.info(
            "%d clips -> %d (latent, caption) pairs, latents %s",
            len(latents),
            len(dataset),
            tuple(latents.shape[1:]),
        )

        sizes = (("hidden_size", args.hidden), ("num_heads", args.heads), ("depth", args.depth))
        overrides = {k: v for k, v in sizes if v}
        cfg = dit_config(
            args.config, text_dim=encoder.dim, in_channels=vae.latent_channels, **overrides
        )
        model = MUGDiT(cfg)
        params = sum(p.numel() for p in model.parameters())
        flow = RectifiedFlow(FlowConfig(base_pixels=args.shift_base))
        eval_batch = collate_latents(
            [dataset[i] for i in range(0, len(dataset), max(1, len(dataset) // 64))]
        )
        step = DiTStep(flow)

        def eval_loss() -> float:
            state = torch.get_rng_state()
            torch.manual_seed(1234)
            with torch.no_grad():
                value = step(model, eval_batch)[0].item()
            torch.set_rng_state(state)
            return value

        initial = eval_loss()
        t0 = time.perf_counter()
        trainer_cfg = TrainerConfig(
            steps=args.steps,
            lr=args.lr,
            warmup_steps=min(100, args.steps),
            min_lr=args.lr / 10,
            ema_decay=0.999,
            log_every=100,
        )
        trainer = train_dit(
            model, dataset, trainer_cfg, info=info, batch_size=args.batch, flow=flow, seed=args.seed
        )
        fit_within(trainer.fit, args.train_minutes)
        steps_done = trainer.step
        timings["train_s"] = time.perf_counter() - t0
        final_live = eval_loss()
        trainer.ema.copy_to(model)
        final = eval_loss()
        log.info("eval loss %.4f -> %.4f (EMA; live weights %.4f)", initial, final, final_live)
        model.eval()
        denoise = denoising_vs_linear(model, eval_batch, latents)

        t0 = time.perf_counter()
        pipe = Pipeline(
            model,
            vae,
            encoder,
            latent_channels=cfg.in_channels,
            patch_size=cfg.patch_size,
            max_latent_frames=cfg.max_frames,
            flow=flow,
        )
        gen_cfg = GenerationConfig(
            num_frames=FRAMES,
            height=SIZE,
            width=SIZE,
            fps=FPS,
            num_steps=args.sample_steps,
            guidance_scale=args.guidance,
            seed=args.seed,
        )
        oracle = Oracle()
        tests = [world.sample("test", i) for i in range(args.test_clips)]
        held = [bool(t.clip.metadata.get("held_out")) for t in tests]
        results = {"real": [], "reconstructed": [], "generated": []}
        for start in range(0, len(tests), 8):
            chunk = tests[start : start + 8]
            specs = [SceneSpec.from_dict(t.clip.metadata["spec"]) for t in chunk]
            real = torch.stack([clip_tensor(t.clip.frames) for t in chunk])
            recon = vae.decode(vae.encode(real), FRAMES)
            video = pipe([t.captions[0] for t in chunk], config=gen_cfg)
            for i, spec in enumerate(specs):
                results["real"].append(score(oracle, chunk[i].clip.frames, spec))
                results["reconstructed"].append(score(oracle, to_uint8(recon[i]), spec))
                results["generated"].append(score(oracle, to_uint8(video[i]), spec))
        timings["generate_s"] = time.perf_counter() - t0

    table = {name: summarise(r, held) for name, r in results.items()}
    gen, rec = table["generated"], table["reconstructed"]
    print(
        f"\ntiny MUGDiT ({params / 1e6:.2f} M params), {steps_done}/{args.steps} steps x batch {args.batch}, "
        f"{len(latents)} train clips, {args.test_clips} test prompts ({sum(held)} held-out)"
    )
    print(f"eval loss: initial {initial:.4f} -> final {final:.4f} (ratio {final / initial:.3f})")
    print(
        "one-step x0 error / best linear denoiser's, by t: "
        + ", ".join(f"{t}: {r:.3f}" for t, r in denoise.items())
    )
    print(f"{'videos':<14}{'subset':<10}{'n':>4}{'colour+shape':>14}{'motion':>10}")
    for name, sub in table.items():
        for part, vals in sub.items():
            print(
                f"{name:<14}{part:<10}{vals['n']:>4}{vals['colour_shape']:>14.3f}{vals['motion']:>10.3f}"
            )
    ratios = {
        part: {
            k: gen[part][k] / rec[part][k] if rec[part][k] else math.nan
            for k in ("colour_shape", "motion")
        }
        for part in gen
    }
    print(f"generated / reconstructed: {json.dumps(ratios)}")
    targets = {
        "colour_shape>=0.80": gen["all"]["colour_shape"] >= 0.80,
        "motion>=0.70": gen["all"]["motion"] >= 0.70,
        "held_out colour_shape>=0.80": gen["held_out"]["colour_shape"] >= 0.80,
        "held_out motion>=0.70": gen["held_out"]["motion"] >= 0.70,
    }
    print(f"targets: {targets}")
    timings["total_s"] = time.perf_counter() - t_start
    print(f"timings: { {k: round(v, 1) for k, v in timings.items()} }")
    out = {
        "args": vars(args),
        "params": params,
        "steps_done": steps_done,
        "loss": {"initial": initial, "final_ema": final, "final_live": final_live},
        "denoising_vs_linear": denoise,
        "scores": table,
        "generated_over_reconstructed": ratios,
        "targets": targets,
        "timings_s": timings,
        "device": "cpu",
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()

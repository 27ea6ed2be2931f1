"""Does the one-step enhancer raise PSNR on degraded clips? The issue-11 enhancer figure.

    python bench_enhance.py --out result.json [--vae PATH] [--train-minutes 8]

1. Clips of the synthetic world (`mugv.data.world`, 9 frames, 32x32 by default) are degraded
   per clip by one of blur (Gaussian sigma 0.8-1.6 px), noise (std 0.04-0.12 on [-1, 1]) or
   H.264 compression (CRF 36-44), strength drawn at random.
2. Clean and degraded clips are encoded by the codec: by default a lossless space-to-depth
   codec (4x4 pixels x 3 colours -> 48 channels, `SpaceToDepth` below), because no VAE yet
   reconstructs the world better than the degraded inputs (its ~15 dB would cap every output
   below them); `--vae DIR` uses a `mugv.vae.VideoVAE` instead.
3. A small MUGDiT learns the one-step restoration (`mugv.dit.enhance.EnhanceStep`, t around
   sigma = 0.3, 10% text dropout) on `mugv.infra`'s Trainer for at most `--train-minutes`.
4. Held-out test clips are degraded at a fixed mid strength per kind and enhanced
   (`Enhancer`: noise to sigma, one step, CFG 2.0 with the clip's caption, seed fixed) at
   each of `--eval-sigmas` (0.1, 0.2 and the SPEC's 0.3; training draws t over that range).
   Reported: PSNR of degraded vs clean ("before") and enhanced vs clean ("after"), per kind
   and sigma, and of codec reconstructions of the clean clips (the ceiling). The first frame is not held
   here: these clips have no clean reference frame to hold (the i2v case the SPEC's
   "first frame held" is for).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import einops
import torch
from _bench_common import clip_tensor, fit_within, tiny_config

from mugv.data.world import SyntheticWorld, WorldConfig
from mugv.dit.enhance import (
    EnhanceConfig,
    EnhancePairs,
    Enhancer,
    EnhanceStep,
    degrade,
    psnr,
    train_enhancer,
)
from mugv.dit.model import MUGDiT
from mugv.dit.text_encoder import HFTextEncoder
from mugv.infra.parallel import single_process
from mugv.infra.trainer import TrainerConfig

log = logging.getLogger("bench_enhance")
TEST_STRENGTH = {"blur": 1.2, "noise": 0.08, "compression": 40}


class SpaceToDepth:
    """A lossless codec: (B, 3, T, H, W) <-> (B, 3 s^2, T, H/s, W/s), one latent frame per frame."""

    def __init__(self, stride: int = 4) -> None:
        self.stride = stride
        self.latent_channels = 3 * stride * stride

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        s = self.stride
        return einops.rearrange(video, "b c t (h p) (w q) -> b (c p q) t h w", p=s, q=s)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        s = self.stride
        return einops.rearrange(latents, "b (c p q) t h w -> b c t (h p) (w q)", p=s, q=s)


def random_degradation(video: torch.Tensor, gen: torch.Generator, fps: float) -> torch.Tensor:
    """One clip (1, 3, T, H, W) degraded by a random kind at a random strength."""
    kind = ("blur", "noise", "compression")[int(torch.randint(0, 3, (), generator=gen))]
    u = float(torch.rand((), generator=gen))
    strength = {"blur": 0.8 + 0.8 * u, "noise": 0.04 + 0.08 * u, "compression": round(36 + 8 * u)}
    return degrade(video, kind, strength[kind], generator=gen, fps=fps)


@torch.no_grad()
def encode_all(codec, videos: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([codec.encode(videos[i : i + batch]) for i in range(0, len(videos), batch)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_enhance.json")
    p.add_argument("--vae", default=None, help="a VideoVAE folder (default: lossless codec)")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--train-clips", type=int, default=400)
    p.add_argument("--test-clips", type=int, default=48)
    p.add_argument(
        "--hidden",
        type=int,
        default=192,
        help="width; at least the 192 values of a token (2x2 latents x 48) so the step can "
        "remove the noise it adds in every direction",
    )
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--train-minutes", type=float, default=8.0)
    p.add_argument(
        "--eval-sigmas",
        type=float,
        nargs="+",
        default=[0.1, 0.2, 0.3],
        help="sigmas evaluated (SPEC: 0.3); training draws t uniformly over their range",
    )
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    fps = 8.0
    world = SyntheticWorld(
        WorldConfig(
            num_frames=args.frames,
            height=args.size,
            width=args.size,
            fps=fps,
            seed=args.seed,
            max_objects=2,
            train_size=args.train_clips,
            val_size=8,
            test_size=args.test_clips,
        )
    )
    if args.vae:
        from mugv.vae import VideoVAE

        codec = VideoVAE.from_pretrained(args.vae).eval()
    else:
        codec = SpaceToDepth(4)
    encoder = HFTextEncoder(max_length=32)

    gen = torch.Generator().manual_seed(args.seed)
    train = [world.sample("train", i) for i in range(args.train_clips)]
    clean = torch.stack([clip_tensor(s.clip.frames) for s in train])  # (N, 3, T, H, W)
    degraded = torch.cat([random_degradation(v[None], gen, fps) for v in clean])
    log.info("train: %d clips, degraded PSNR %.2f dB", len(clean), psnr(degraded, clean).mean())
    tokens, mask = encoder.encode([s.captions[0] for s in train])
    texts = [tokens[i, mask[i]] for i in range(len(train))]
    data = EnhancePairs(
        encode_all(codec, degraded),
        encode_all(codec, clean),
        texts,
        fps,
        height=args.size,
        width=args.size,
    )

    lo, hi = min(args.eval_sigmas), max(args.eval_sigmas)
    with single_process(seed=args.seed) as info:
        cfg = tiny_config(args, encoder.dim, codec.latent_channels)
        model = MUGDiT(cfg)
        params = sum(p.numel() for p in model.parameters())
        trainer = train_enhancer(
            model,
            data,
            TrainerConfig(
                steps=args.steps,
                lr=args.lr,
                warmup_steps=min(100, args.steps),
                min_lr=args.lr / 10,
                ema_decay=0.995,
                log_every=100,
            ),
            info=info,
            batch_size=args.batch,
            step=EnhanceStep(
                (lo + hi) / 2, spread=max((hi - lo) / 2, 0.05), hold_first_frame=False
            ),
            seed=args.seed,
        )
        t0 = time.perf_counter()
        fit_within(trainer.fit, args.train_minutes)
        train_s = time.perf_counter() - t0
        steps_done = trainer.step
        trainer.ema.copy_to(model)

        tests = [world.sample("test", i) for i in range(args.test_clips)]
        test_clean = torch.stack([clip_tensor(s.clip.frames) for s in tests])
        prompts = [s.captions[0] for s in tests]
        enhancer = Enhancer(model, codec, encoder)
        rows = {}
        with torch.no_grad():
            recon = torch.cat(
                [
                    codec.decode(codec.encode(test_clean[i : i + 16]))
                    for i in range(0, len(tests), 16)
                ]
            )[:, :, : args.frames]
            ceiling = float(psnr(recon, test_clean).mean())
            t0 = time.perf_counter()
            for kind, strength in TEST_STRENGTH.items():
                g = torch.Generator().manual_seed(args.seed + 1)
                bad = degrade(test_clean, kind, strength, generator=g, fps=fps)
                before = psnr(bad, test_clean)
                rows[kind] = {"strength": strength, "before_db": float(before.mean())}
                for sigma in args.eval_sigmas:
                    config = EnhanceConfig(
                        sigma=sigma,
                        guidance_scale=args.guidance,
                        hold_first_frame=False,
                        fps=fps,
                        seed=args.seed,
                    )
                    out = torch.cat(
                        [
                            enhancer(bad[i : i + 8], prompts[i : i + 8], config)
                            for i in range(0, len(tests), 8)
                        ]
                    )
                    after = psnr(out, test_clean)
                    rows[kind][f"after_db@{sigma}"] = float(after.mean())
                    rows[kind][f"improved@{sigma}"] = float((after > before).float().mean())
            enhance_s = (time.perf_counter() - t0) / (3 * len(tests) * len(args.eval_sigmas))

    codec_name = f"VideoVAE {args.vae}" if args.vae else "lossless space-to-depth (s=4)"
    print(
        f"\nenhancer: MUGDiT {args.hidden}/{args.heads}/{args.depth} ({params / 1e6:.2f} M params), "
        f"{steps_done} steps x batch {args.batch} in {train_s:.0f} s "
        f"({steps_done / train_s:.1f} steps/s), codec: {codec_name}"
    )
    print(
        f"test clips: {args.test_clips} x {args.frames} frames at {args.size}x{args.size}; "
        f"one step, CFG {args.guidance} with the caption; PSNR in dB (gain over the input)"
    )
    print(f"codec reconstruction of clean clips: {ceiling:.2f} dB (ceiling)")
    header = "".join(f"{f'after s={s}':>18}" for s in args.eval_sigmas)
    print(f"{'degradation':<13}{'strength':>9}{'before':>9}{header}")
    for kind, r in rows.items():
        cells = "".join(
            f"{r[f'after_db@{s}']:>10.2f} ({r[f'after_db@{s}'] - r['before_db']:+.2f})"
            for s in args.eval_sigmas
        )
        print(f"{kind:<13}{r['strength']:>9}{r['before_db']:>9.2f}{cells}")
    result = {
        "args": vars(args),
        "codec": codec_name,
        "params": params,
        "steps_done": steps_done,
        "train_s": train_s,
        "enhance_s_per_clip": enhance_s,
        "codec_ceiling_db": ceiling,
        "psnr": rows,
        "total_s": time.perf_counter() - t_start,
        "device": "cpu",
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

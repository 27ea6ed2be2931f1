"""Does preference optimisation from oracle labels raise a world DiT's oracle accuracy?

    python bench_posttrain.py --out result.json [--vae PATH] [--sft-minutes 8] [--seeds 0 1 2]

The issue-11 quality experiment, on the synthetic world, on a CPU:
1. SFT: a small MUGDiT learns world clips (one shape, 9 frames, 32x32) with the joint-task
   rectified flow for at most `--sft-minutes`. The codec is a lossless space-to-depth codec
   (`bench_enhance.SpaceToDepth`) unless `--vae DIR` names a `mugv.vae.VideoVAE`: the world VAE
   available so far reconstructs clips the oracle scores 0, which would hide any DiT change.
2. Before: the SFT model generates the held-out test prompts (Euler, CFG 4.0); the `mugv.data`
   oracle scores colour+shape, motion and all attributes.
3. Per seed: the SFT model generates two videos (two noise seeds) for each of `--pair-prompts`
   train prompts; `mugv.data.preference.oracle_labels` labels the pairs by the oracle's mean
   attribute accuracy (colour, shape, size, motion; `GradedOracle`; ties dropped), and each
   video whose attributes are all right / all wrong becomes a correct / incorrect sample
   (absolute labels). DPO (`mugv.dit.preference`) then trains, from the SFT weights, (a) LoRA
   adapters (reference = adapters off) and (b) all weights (reference = a frozen SFT copy).
4. After: each tuned model (EMA weights, LoRA merged) generates the same test prompts with the
   same noise; the oracle scores them. Printed: before/after per seed and variant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from _bench_common import clip_tensor, fit_within
from bench_enhance import SpaceToDepth

from mugv.data.oracle import Oracle
from mugv.data.preference import oracle_labels
from mugv.data.world import SyntheticWorld, WorldConfig, parse_prompt
from mugv.dit.config import dit_config
from mugv.dit.lora import LoRAConfig, apply_lora, merge_lora
from mugv.dit.model import MUGDiT
from mugv.dit.pipeline import GenerationConfig, Pipeline, video_to_clips
from mugv.dit.preference import PreferenceConfig, PreferenceLatents, train_preference
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
from mugv.dit.text_encoder import HFTextEncoder
from mugv.dit.train import LatentTextDataset, train_dit
from mugv.infra.parallel import single_process
from mugv.infra.trainer import TrainerConfig

log = logging.getLogger("bench_posttrain")
FPS = 8.0


class GradedOracle:
    """The oracle with "all" replaced by the mean of the prompt's attributes (colour, shape,
    size, motion): a weak SFT model scores "all" = 0 on nearly every video, so labelling by it
    would make almost every pair a tie."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def score(self, frames: np.ndarray, spec) -> dict[str, float]:
        out = dict(self.oracle.score(frames, spec))
        out["exact"] = out["all"]
        out["all"] = float(np.mean([out[k] for k in ("colour", "shape", "size", "motion")]))
        return out


def copy_model(model: MUGDiT) -> MUGDiT:
    other = MUGDiT(model.dit)
    other.load_state_dict(model.state_dict())
    return other


@torch.no_grad()
def generate(pipe: Pipeline, prompts: list[str], cfg: GenerationConfig, batch: int = 16):
    """Latents and uint8 clips of `prompts`, sample i seeded cfg.seed + i whatever the batch."""
    latents, clips = [], []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        z = pipe.sample_latents(chunk, GenerationConfig(**{**vars(cfg), "seed": cfg.seed + start}))
        latents.append(z)
        clips += video_to_clips(pipe.codec.decode(z)[:, :, : cfg.num_frames], cfg.fps)
    return torch.cat(latents), clips


def oracle_scores(oracle: Oracle, clips, prompts: list[str]) -> dict[str, float]:
    rows = [oracle.score(c.frames, parse_prompt(p)) for c, p in zip(clips, prompts)]
    return {k: float(np.mean([r[k] for r in rows])) for k in ("colour_shape", "motion", "all")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_posttrain.json")
    p.add_argument("--vae", default=None, help="a VideoVAE folder (default: lossless codec)")
    p.add_argument("--train-clips", type=int, default=400)
    p.add_argument("--test-clips", type=int, default=48)
    p.add_argument(
        "--hidden",
        type=int,
        default=192,
        help="width; at least a token's 192 values (2x2 latents x 48), else the sampler "
        "cannot remove the starting noise in every direction",
    )
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--sft-dir", default=None, help="load the SFT model here if saved, else save it")
    p.add_argument("--sft-steps", type=int, default=4000)
    p.add_argument("--sft-minutes", type=float, default=8.0)
    p.add_argument("--sft-lr", type=float, default=1e-3)
    p.add_argument("--pair-prompts", type=int, default=96)
    p.add_argument("--dpo-steps", type=int, default=300)
    p.add_argument("--dpo-minutes", type=float, default=2.0)
    p.add_argument("--beta", type=float, default=500.0)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-lr", type=float, default=1e-3)
    p.add_argument("--full-lr", type=float, default=1e-4)
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    size, frames = 32, 9
    world = SyntheticWorld(
        WorldConfig(
            num_frames=frames,
            height=size,
            width=size,
            fps=FPS,
            seed=0,
            max_objects=1,
            train_size=args.train_clips,
            val_size=8,
            test_size=args.test_clips,
        )
    )
    if args.vae:
        from mugv.vae import VideoVAE

        codec, strides = VideoVAE.from_pretrained(args.vae).eval(), (8, 8)
    else:
        codec, strides = SpaceToDepth(4), (4, 1)
    encoder = HFTextEncoder(max_length=32)
    oracle = Oracle()
    flow = RectifiedFlow(FlowConfig(base_pixels=size * size))

    train = [world.sample("train", i) for i in range(args.train_clips)]
    with torch.no_grad():
        video = torch.stack([clip_tensor(s.clip.frames) for s in train])
        latents = torch.cat([codec.encode(video[i : i + 16]) for i in range(0, len(video), 16)])
    rows, feats = [], []
    for i, sample in enumerate(train):
        tokens, mask = encoder.encode(sample.captions)
        for k in range(len(sample.captions)):
            rows.append(i)
            feats.append(tokens[k, mask[k]])
    dataset = LatentTextDataset(latents[rows], feats, FPS, height=size, width=size)
    tests = [world.sample("test", i) for i in range(args.test_clips)]
    test_prompts = [s.captions[0] for s in tests]
    pair_prompts = [train[i % len(train)].captions[1] for i in range(args.pair_prompts)]
    results: dict[str, object] = {"args": vars(args)}

    with single_process(seed=0) as info:
        cfg = dit_config(
            "tiny",
            text_dim=encoder.dim,
            in_channels=codec.latent_channels,
            hidden_size=args.hidden,
            num_heads=args.heads,
            depth=args.depth,
        )
        if args.sft_dir and Path(args.sft_dir, "model.safetensors").is_file():
            sft = MUGDiT.from_pretrained(args.sft_dir)
            results["sft"] = {"loaded": args.sft_dir}
        else:
            sft = MUGDiT(cfg)
            trainer = train_dit(
                sft,
                dataset,
                TrainerConfig(
                    steps=args.sft_steps,
                    lr=args.sft_lr,
                    warmup_steps=min(100, args.sft_steps),
                    min_lr=args.sft_lr / 10,
                    ema_decay=0.999,
                    log_every=200,
                ),
                info=info,
                batch_size=16,
                flow=flow,
            )
            t0 = time.perf_counter()
            fit_within(trainer.fit, args.sft_minutes)
            trainer.ema.copy_to(sft)
            results["sft"] = {"steps": trainer.step, "seconds": time.perf_counter() - t0}
            if args.sft_dir:
                sft.save_pretrained(args.sft_dir)

        def pipeline(model):
            return Pipeline(
                model,
                codec,
                encoder,
                latent_channels=cfg.in_channels,
                spatial_stride=strides[0],
                temporal_stride=strides[1],
                patch_size=cfg.patch_size,
                max_latent_frames=cfg.max_frames,
                flow=flow,
            )

        def evaluate(model, seed: int) -> dict[str, float]:
            gen = GenerationConfig(
                num_frames=frames,
                height=size,
                width=size,
                fps=FPS,
                num_steps=args.sample_steps,
                guidance_scale=args.guidance,
                seed=1000 * seed,
            )
            _, clips = generate(pipeline(model), test_prompts, gen)
            return oracle_scores(oracle, clips, test_prompts)

        per_seed = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            row: dict[str, object] = {"seed": seed, "before": evaluate(sft, seed)}
            log.info("seed %d: SFT %s", seed, row["before"])
            gen = GenerationConfig(
                num_frames=frames,
                height=size,
                width=size,
                fps=FPS,
                num_steps=args.sample_steps,
                guidance_scale=args.guidance,
                seed=10_000 * (seed + 1),
            )
            z_a, clips_a = generate(pipeline(sft), pair_prompts, gen)
            gen_b = GenerationConfig(**{**vars(gen), "seed": gen.seed + len(pair_prompts)})
            z_b, clips_b = generate(pipeline(sft), pair_prompts, gen_b)
            labels = oracle_labels(pair_prompts, clips_a, clips_b, GradedOracle(oracle))
            keep = [(i, lab.choice) for i, lab in enumerate(labels) if lab.choice != "tie"]
            score = [lab.metadata["score_a"] for lab in labels] + [
                lab.metadata["score_b"] for lab in labels
            ]
            z_all = torch.cat([z_a, z_b])
            tokens, mask = encoder.encode(pair_prompts)
            text = [tokens[i, mask[i]] for i in range(len(pair_prompts))]
            absolute = [i for i, s in enumerate(score) if s in (0.0, 1.0)]  # all or nothing
            win = [i if c == "a" else i + len(pair_prompts) for i, c in keep]
            lose = [i + len(pair_prompts) if c == "a" else i for i, c in keep]
            data = PreferenceLatents(
                height=size,
                width=size,
                fps=FPS,
                latents_w=z_all[win],
                latents_l=z_all[lose],
                pair_texts=[text[i] for i, _ in keep],
                latents=z_all[absolute],
                texts=[text[i % len(pair_prompts)] for i in absolute],
                correct=[score[i] == 1.0 for i in absolute],
            )
            row["labels"] = {
                "pairs": len(keep),
                "ties": len(labels) - len(keep),
                "correct": sum(score[i] == 1.0 for i in absolute),
                "incorrect": sum(score[i] == 0.0 for i in absolute),
                "sft_pair_score": float(np.mean(score)),
            }
            log.info("seed %d: labels %s", seed, row["labels"])
            for variant in ("lora", "full"):
                model = copy_model(sft)
                reference = None
                if variant == "lora":
                    apply_lora(model, LoRAConfig(rank=args.lora_rank, alpha=args.lora_rank))
                else:
                    reference = copy_model(sft)
                lr = args.lora_lr if variant == "lora" else args.full_lr
                tuner = train_preference(
                    model,
                    data,
                    TrainerConfig(
                        steps=args.dpo_steps,
                        lr=lr,
                        warmup_steps=min(20, args.dpo_steps),
                        ema_decay=0.99,
                        log_every=50,
                    ),
                    info=info,
                    reference=reference,
                    preference=PreferenceConfig(beta=args.beta),
                    flow=flow,
                    pair_batch=min(8, len(keep)),
                    single_batch=min(8, len(absolute)),
                    seed=seed,
                )
                t0 = time.perf_counter()
                fit_within(tuner.fit, args.dpo_minutes)
                tuner.ema.copy_to(model)
                if variant == "lora":
                    merge_lora(model)
                row[variant] = evaluate(model, seed) | {
                    "steps": tuner.step,
                    "seconds": time.perf_counter() - t0,
                }
                log.info("seed %d: %s %s", seed, variant, row[variant])
            per_seed.append(row)
            results["per_seed"] = per_seed
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)

    print(
        f"\nSFT MUGDiT {args.hidden}/{args.heads}/{args.depth}: {results['sft']['steps']} steps; "
        f"{len(test_prompts)} held-out test prompts; oracle scores (colour+shape / motion / all)"
    )
    print(f"{'seed':<6}{'model':<8}{'colour+shape':>14}{'motion':>9}{'all':>7}{'dpo steps':>11}")
    for row in per_seed:
        for name in ("before", "lora", "full"):
            r = row[name]
            print(
                f"{row['seed']:<6}{name:<8}{r['colour_shape']:>14.3f}{r['motion']:>9.3f}"
                f"{r['all']:>7.3f}{r.get('steps', ''):>11}"
            )
    for name in ("before", "lora", "full"):
        mean = {k: np.mean([row[name][k] for row in per_seed]) for k in ("colour_shape", "all")}
        print(f"mean {name:<8} colour+shape {mean['colour_shape']:.3f}  all {mean['all']:.3f}")
    results["total_s"] = time.perf_counter() - t_start
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

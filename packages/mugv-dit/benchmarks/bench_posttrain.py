"""Does preference optimisation from oracle labels raise a world DiT's oracle accuracy?

    python bench_posttrain.py --out result.json [--vae PATH] [--sft-minutes 8] [--seeds 0 1 2]

The issue-11 quality experiment, on the synthetic world, on a CPU:
1. SFT: a small MUGDiT learns world clips (one shape, 9 frames, 32x32) with the joint-task
   rectified flow for at most `--sft-minutes`. The codec is a lossless space-to-depth codec
   (`bench_enhance.SpaceToDepth`) unless `--vae DIR` names a `mugv.vae.VideoVAE` (e.g. the
   world VAE of `mugv-vae`'s `bench_train_world.py`, whose reconstructions the oracle reads).
2. Before: the SFT model generates the held-out test prompts (Euler, CFG 4.0); the `mugv.data`
   oracle scores each attribute, colour+shape, and all attributes at once.
3. Per seed: the SFT model generates `--samples-per-prompt` videos (K noise seeds) for each of
   `--pair-prompts` train prompts; the oracle's mean attribute accuracy (colour, shape, size,
   motion; `GradedOracle`) ranks them, and the best and the worst of each prompt form a pair
   (`mugv.data.preference.best_worst_labels`; prompts whose K videos all tie give none), or
   with `--pairing all` every two videos of a prompt whose scores differ. `--pair-cache DIR`
   keeps the videos and scores per seed for the next run of the same model and sampler.
   Each video whose attributes are all right / all wrong becomes a correct / incorrect sample
   (absolute labels). DPO (`mugv.dit.preference`) then trains, from the SFT weights, (a) LoRA
   adapters (reference = adapters off) and (b) all weights (reference = a frozen SFT copy).
4. After: each tuned model (EMA weights, LoRA merged) generates the same test prompts with the
   same noise (`--eval-repeats` noise draws per prompt); the oracle scores them. Printed:
   before/after per seed and variant, led by the mean attribute accuracy the pairs rank by,
   with its paired gains (attribute accuracy, colour+shape) over the same videos and their
   standard errors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from _bench_common import encode_world, fit_within, tiny_config
from bench_enhance import SpaceToDepth

from mugv.data.oracle import Oracle
from mugv.data.preference import best_worst_labels
from mugv.data.world import SyntheticWorld, WorldConfig, parse_prompt
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
ATTRIBUTES = ("colour", "shape", "size", "motion")


class GradedOracle:
    """The oracle with "all" replaced by the mean of the prompt's attributes (colour, shape,
    size, motion): a weak SFT model scores "all" = 0 on nearly every video, so labelling by it
    would make almost every pair a tie."""

    def __init__(self, oracle: Oracle) -> None:
        self.oracle = oracle

    def score(self, frames: np.ndarray, spec) -> dict[str, float]:
        out = dict(self.oracle.score(frames, spec))
        out["exact"] = out["all"]
        out["all"] = float(np.mean([out[k] for k in ATTRIBUTES]))
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
    """Mean oracle scores; "attributes" is the mean attribute accuracy (what the pairs rank by),
    "all" the share of videos with every attribute right, "per_video" / "per_video_cs" each
    video's attribute accuracy / colour+shape (for paired before/after differences)."""
    rows = [oracle.score(c.frames, parse_prompt(p)) for c, p in zip(clips, prompts)]
    out = {k: float(np.mean([r[k] for r in rows])) for k in (*ATTRIBUTES, "colour_shape", "all")}
    per_video = [float(np.mean([r[k] for k in ATTRIBUTES])) for r in rows]
    per_video_cs = [float(r["colour_shape"]) for r in rows]
    return out | {
        "attributes": float(np.mean(per_video)),
        "per_video": per_video,
        "per_video_cs": per_video_cs,
    }


def paired_gain(before: dict, after: dict) -> dict[str, float]:
    """Mean gain over the same videos' noise and its standard error, of the attribute accuracy
    ("gain", "gain_se") and of colour+shape ("cs_gain", "cs_gain_se")."""
    out = {}
    for key, name in (("per_video", "gain"), ("per_video_cs", "cs_gain")):
        diff = np.asarray(after[key]) - np.asarray(before[key])
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        out |= {name: float(diff.mean()), f"{name}_se": float(se)}
    return out


def brief(scores: dict) -> dict:
    """`scores` without the per-video lists, for the log."""
    return {k: v for k, v in scores.items() if not k.startswith("per_video")}


def fingerprint(model: torch.nn.Module, gen: GenerationConfig) -> str:
    """A digest of the weights and the sampler settings: what the pair videos depend on."""
    h = hashlib.sha256(repr(sorted(vars(gen).items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):  # Megatron's empty extra states
            continue
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def pair_videos(pipe, graded, prompts, k, gen, cache, seed):
    """Latents and graded oracle scores of K videos per prompt (video j of prompt i is number
    j * len(prompts) + i), generated by `pipe`, or read back from `cache` when it holds this
    seed's videos of the same prompts, model and sampler settings."""
    path = Path(cache, f"pairs-seed{seed}.pt") if cache else None
    key = fingerprint(pipe.model, gen) if cache else ""
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=True)
        if saved["prompts"] == list(prompts) and saved["k"] == k and saved.get("key") == key:
            log.info("seed %d: pair videos read from %s", seed, path)
            return saved["latents"], saved["scores"]
        log.info("seed %d: %s holds other videos; generating anew", seed, path)
    n = len(prompts)
    z_all, clips = generate(pipe, list(prompts) * k, gen)
    groups = [[clips[j * n + i] for j in range(k)] for i in range(n)]
    labels = best_worst_labels(prompts, groups, graded)
    scores = [labels[j % n].metadata["scores"][j // n] for j in range(len(clips))]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        saved = {"prompts": list(prompts), "k": k, "key": key, "latents": z_all, "scores": scores}
        torch.save(saved, path)
    return z_all, scores


def preference_pairs(score, n_prompts: int, k: int, pairing: str):
    """(winner, loser) video numbers: per prompt its best against its worst (first of equals;
    nothing when all K tie), or with `pairing="all"` every two videos whose scores differ."""
    best, worst = [], []
    for i in range(n_prompts):
        idx = [j * n_prompts + i for j in range(k)]
        s = [score[j] for j in idx]
        if pairing == "best-worst":
            b, w = int(np.argmax(s)), int(np.argmin(s))
            chosen = [(b, w)] if s[b] > s[w] else []
        else:
            pairs = [(a, b) for a in range(k) for b in range(a + 1, k) if s[a] != s[b]]
            chosen = [(a, b) if s[a] > s[b] else (b, a) for a, b in pairs]
        best += [idx[a] for a, _ in chosen]
        worst += [idx[b] for _, b in chosen]
    return best, worst


def sft_dataset(world, codec, encoder, height: int, width: int) -> LatentTextDataset:
    """Every training clip of `world`, encoded, once per caption."""
    latents, rows, feats, _ = encode_world(world, codec, encoder, "train", world.size("train"))
    return LatentTextDataset(latents[rows], feats, world.config.fps, height=height, width=width)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench_posttrain.json")
    p.add_argument("--vae", default=None, help="a VideoVAE folder (default: lossless codec)")
    p.add_argument(
        "--demo",
        default=None,
        help="a `mugv demo` output folder: tune its final DiT in its world, with its VAE, "
        "sampler settings and test prompts (overrides --vae, --sft-dir, sizes)",
    )
    p.add_argument("--train-clips", type=int, default=400)
    p.add_argument(
        "--test-clips",
        type=int,
        default=None,
        help="held-out test prompts (default 48; with --demo, the demo's own count). A world's "
        "test scenes depend only on (seed, index), so a larger count keeps the smaller set's "
        "prompts and adds more, never touching training",
    )
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
    p.add_argument("--pair-prompts", type=int, default=192)
    p.add_argument(
        "--samples-per-prompt",
        type=int,
        default=4,
        help="videos generated per pair prompt; its best and worst make the pair",
    )
    p.add_argument(
        "--pair-caption",
        type=int,
        default=1,
        help="which of each train clip's captions prompts its pair videos: 0 the canonical "
        "form the test prompts use, 1 (default) a paraphrase",
    )
    p.add_argument(
        "--pairing",
        choices=("best-worst", "all"),
        default="best-worst",
        help="best-worst: one pair per prompt, its best video against its worst; all: every "
        "two videos of a prompt whose scores differ (up to K(K-1)/2 pairs per prompt)",
    )
    p.add_argument(
        "--pair-cache",
        default=None,
        help="a folder: save each seed's generated pair videos (latents and oracle scores) "
        "there, and reuse them when present, so variants of a run share the same labels",
    )
    p.add_argument("--eval-repeats", type=int, default=2, help="noise draws per test prompt")
    p.add_argument("--dpo-steps", type=int, default=600)
    p.add_argument("--dpo-minutes", type=float, default=3.0)
    p.add_argument("--beta", type=float, default=500.0)
    p.add_argument(
        "--dpo-draws",
        type=int,
        default=1,
        help="(t, eps) draws averaged per sample before the DPO sigmoid (PreferenceConfig.draws)",
    )
    p.add_argument(
        "--sft-weight",
        type=float,
        default=1.0,
        help="weight of the flow loss on correct videos (PreferenceConfig.sft_weight)",
    )
    p.add_argument(
        "--unlikelihood-weight",
        type=float,
        default=1.0,
        help="weight of the bounded unlikelihood of incorrect videos; 0 with --sft-weight 0 "
        "is pairs-only DPO",
    )
    p.add_argument(
        "--dpo-guidance",
        type=float,
        default=1.0,
        help="CFG scale of the velocity the preference terms score "
        "(PreferenceConfig.guidance_scale); 1: the conditional branch; the sampler's "
        "--guidance: the guided policy that made the videos",
    )
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
    if args.demo:  # the demo's world, VAE and final DiT stage (`mugv demo` output folder)
        from mugv.vae import VideoVAE

        plan = json.loads(Path(args.demo, "plan.json").read_text())
        height, width, fps = plan["height"], plan["width"], float(plan["fps"])
        frames = plan["curriculum"][-1][1]
        world_cfg = dict(
            seed=plan["seed"],
            max_objects=plan["max_objects"],
            train_size=plan["train_clips"],
            val_size=max(8, plan["test_prompts"]),  # as `mugv demo` draws its world
            test_size=args.test_clips or plan["test_prompts"],
        )
        args.sample_steps, args.guidance = plan["sample_steps"], plan["guidance"]
        codec, strides = VideoVAE.from_pretrained(Path(args.demo, "vae")).eval(), (8, 8)
        args.sft_dir = str(sorted(Path(args.demo, "dit").glob("stage-*"))[-1])
    else:
        height = width = 32
        frames, fps = 9, FPS
        world_cfg = dict(
            seed=0,
            max_objects=1,
            train_size=args.train_clips,
            val_size=8,
            test_size=args.test_clips or 48,
        )
        if args.vae:
            from mugv.vae import VideoVAE

            codec, strides = VideoVAE.from_pretrained(args.vae).eval(), (8, 8)
        else:
            codec, strides = SpaceToDepth(4), (4, 1)
    world = SyntheticWorld(
        WorldConfig(num_frames=frames, height=height, width=width, fps=fps, **world_cfg)
    )
    if not 0 <= args.pair_caption < world.config.captions_per_clip:
        p.error(f"--pair-caption must be in [0, {world.config.captions_per_clip})")
    encoder = HFTextEncoder(max_length=32)
    oracle = Oracle()
    flow = RectifiedFlow(FlowConfig(base_pixels=height * width))
    n_train = world.size("train")
    pair_prompts = [
        world.sample("train", i % n_train).captions[args.pair_caption]
        for i in range(args.pair_prompts)
    ]
    tests = [world.sample("test", i) for i in range(world.size("test"))]
    test_prompts = [s.captions[0] for s in tests]
    results: dict[str, object] = {"args": vars(args)}

    with single_process(seed=0) as info:
        if args.sft_dir and Path(args.sft_dir, "model.safetensors").is_file():
            sft = MUGDiT.from_pretrained(args.sft_dir)
            results["sft"] = {"loaded": args.sft_dir}
        else:
            sft = MUGDiT(tiny_config(args, encoder.dim, codec.latent_channels))
            trainer = train_dit(
                sft,
                sft_dataset(world, codec, encoder, height, width),
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
        cfg = sft.dit

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
                height=height,
                width=width,
                fps=fps,
                num_steps=args.sample_steps,
                guidance_scale=args.guidance,
                seed=1000 * seed,
            )
            prompts = test_prompts * args.eval_repeats  # repeat r gets other noise
            _, clips = generate(pipeline(model), prompts, gen)
            return oracle_scores(oracle, clips, prompts)

        graded = GradedOracle(oracle)
        n_prompts, k = len(pair_prompts), args.samples_per_prompt
        tokens, mask = encoder.encode(pair_prompts)
        text = [tokens[i, mask[i]] for i in range(n_prompts)]
        per_seed = []
        for seed in args.seeds:
            torch.manual_seed(seed)
            row: dict[str, object] = {"seed": seed, "before": evaluate(sft, seed)}
            log.info("seed %d: SFT %s", seed, brief(row["before"]))
            gen = GenerationConfig(
                num_frames=frames,
                height=height,
                width=width,
                fps=fps,
                num_steps=args.sample_steps,
                guidance_scale=args.guidance,
                seed=10_000 * (seed + 1),
            )
            # Video j of prompt i is number j * n_prompts + i; each has its own noise.
            z_all, score = pair_videos(
                pipeline(sft), graded, pair_prompts, k, gen, args.pair_cache, seed
            )
            best, worst = preference_pairs(score, n_prompts, k, args.pairing)
            absolute = [j for j, s in enumerate(score) if s in (0.0, 1.0)]  # all or nothing
            data = PreferenceLatents(
                height=height,
                width=width,
                fps=fps,
                latents_w=z_all[best],
                latents_l=z_all[worst],
                pair_texts=[text[j % n_prompts] for j in best],
                latents=z_all[absolute],
                texts=[text[j % n_prompts] for j in absolute],
                correct=[score[j] == 1.0 for j in absolute],
            )
            row["labels"] = {
                "pairs": len(best),
                "prompts_without_pair": n_prompts - len({j % n_prompts for j in best}),
                "correct": sum(score[j] == 1.0 for j in absolute),
                "incorrect": sum(score[j] == 0.0 for j in absolute),
                "sft_pair_score": float(np.mean(score)),
                "pair_margin": float(
                    np.mean([score[b] - score[w] for b, w in zip(best, worst)]) if best else 0.0
                ),
            }
            log.info("seed %d: labels %s", seed, row["labels"])
            absolute_terms = args.sft_weight > 0 or args.unlikelihood_weight > 0
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
                    preference=PreferenceConfig(
                        beta=args.beta,
                        sft_weight=args.sft_weight,
                        unlikelihood_weight=args.unlikelihood_weight,
                        draws=args.dpo_draws,
                        guidance_scale=args.dpo_guidance,
                    ),
                    flow=flow,
                    pair_batch=min(8, len(best)),
                    single_batch=min(8, len(absolute)) if absolute_terms else 0,
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
                row[variant] |= paired_gain(row["before"], row[variant])
                log.info("seed %d: %s %s", seed, variant, brief(row[variant]))
            per_seed.append(row)
            results["per_seed"] = per_seed
            with open(args.out, "w") as f:
                json.dump(results, f, indent=2)

    sft_note = results["sft"].get("loaded") or f"{results['sft']['steps']} steps"
    print(
        f"\nSFT MUGDiT {cfg.hidden_size}/{cfg.num_heads}/{cfg.depth} ({sft_note}); "
        f"{len(test_prompts)} held-out test prompts x {args.eval_repeats} noise draws; oracle "
        "scores (mean attribute accuracy, colour+shape, motion, all attributes right)"
    )
    cols = ("attributes", "colour_shape", "motion", "all")
    print(
        f"{'seed':<6}{'model':<8}"
        + "".join(f"{c:>14}" for c in cols)
        + f"{'gain +- se':>16}{'c+s gain +- se':>18}{'dpo steps':>11}"
    )
    for row in per_seed:
        for name in ("before", "lora", "full"):
            r = row[name]
            gain = f"{r['gain']:+.3f} +- {r['gain_se']:.3f}" if "gain" in r else ""
            cs_gain = f"{r['cs_gain']:+.3f} +- {r['cs_gain_se']:.3f}" if "cs_gain" in r else ""
            print(
                f"{row['seed']:<6}{name:<8}"
                + "".join(f"{r[c]:>14.3f}" for c in cols)
                + f"{gain:>16}{cs_gain:>18}{r.get('steps', ''):>11}"
            )
    for name in ("before", "lora", "full"):
        mean = [np.mean([row[name][c] for row in per_seed]) for c in cols]
        print(f"{'mean':<6}{name:<8}" + "".join(f"{m:>14.3f}" for m in mean))
    results["total_s"] = time.perf_counter() - t_start
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

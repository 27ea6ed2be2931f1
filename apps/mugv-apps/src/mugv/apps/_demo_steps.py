"""The demo's stages: thin calls into mugv.data, mugv.vae, mugv.dit and mugv.infra.

Each `*_stage` function returns a JSON-able dict (curves, scores) that `mugv demo` stores, and
writes its models under the output folder so a rerun can load instead of train.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mugv.apps._latent_data import LatentClips, stage_dataset, world_latents
from mugv.apps._report import GeneratedVideo
from mugv.apps._stats import wilson_interval
from mugv.apps._training import checkpoint_step, setup_logging
from mugv.apps.demo import DemoPlan
from mugv.apps.generate import checkpoint_pipeline
from mugv.data.oracle import Oracle
from mugv.data.video import write_video
from mugv.data.world import MOTIONS, SHAPES, SPEEDS, SceneSpec, SyntheticWorld, WorldConfig
from mugv.dit import MUGDiT, dit_config
from mugv.dit.pipeline import GenerationConfig, video_to_clips
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
from mugv.dit.text_encoder import HFTextEncoder
from mugv.dit.train import LatentTextDataset, train_dit
from mugv.infra import ShuffledBatches, TrainerConfig, fast_bf16
from mugv.infra.parallel import dist_info
from mugv.infra.spawn import run_ranks
from mugv.vae import (
    CONFIGS,
    LossConfig,
    VAETrainConfig,
    VideoVAE,
    clips_to_batch,
    compute_latent_stats,
    fit_temporal_start,
    train_vae,
)

CURVE_POINTS = 60
ORACLE_KEYS = ("colour_shape", "motion", "colour", "shape", "size", "all")
INTERVAL_KEYS = ("colour_shape", "motion")  # the done-when's two rates get a 95% interval
GOALS = {"colour_shape": 0.80, "motion": 0.70}  # on held-out prompts (the demo's done-when)


class StageStopped(Exception):
    """A signal stopped a training stage after its checkpoint: rerun to resume it."""


def _check_finished(name: str, step: int, steps: int) -> None:
    if step < steps:
        raise StageStopped(f"{name} stopped at step {step} of {steps}")


def make_world(plan: DemoPlan, seed: int) -> SyntheticWorld:
    return SyntheticWorld(
        WorldConfig(
            num_frames=plan.frames,
            height=plan.height,
            width=plan.width,
            fps=plan.fps,
            seed=seed,
            max_objects=plan.max_objects,
            train_size=plan.train_clips,
            val_size=max(8, plan.test_prompts),
            test_size=plan.test_prompts,
        )
    )


def _flow(plan: DemoPlan) -> RectifiedFlow:
    # The SD3 shift is unshifted at 512x512; at demo sizes that would leave almost no training
    # at large t, where layout and colour are decided, so the base is the demo's own size.
    return RectifiedFlow(FlowConfig(base_pixels=plan.height * plan.width))


class _Curve:
    """Keeps about `CURVE_POINTS` (step, loss) points of a run."""

    def __init__(self, steps: int) -> None:
        self.every = max(1, steps // CURVE_POINTS)
        self.points: list[tuple[int, float]] = []

    def __call__(self, out: Any) -> None:
        if out.step % self.every == 0 or out.step == 1:
            self.points.append((int(out.step), float(out.loss)))


def _clip_pool(world: SyntheticWorld, count: int) -> torch.Tensor:
    """The first ``count`` train clips as one uint8 (N, T, H, W, 3) tensor, rendered once."""
    frames = [world.sample("train", i).clip.frames for i in range(count)]
    return torch.from_numpy(np.stack(frames))


def _to_video(pool: torch.Tensor) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T, H, W) in [-1, 1]."""
    return pool.permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def _vae_trainer(plan: DemoPlan, out: Path, stage: str, steps: int) -> TrainerConfig:
    return TrainerConfig(
        steps=steps,
        lr=2e-3,
        min_lr=1e-4,
        warmup_steps=min(50, steps),
        schedule="cosine",
        betas=(0.9, 0.99),
        grad_clip=1.0,
        checkpoint_dir=str(out / "checkpoints" / f"vae-{stage}"),
        checkpoint_every=100,
        keep_last=1,
        log_every=50,
    )


def train_vae_stage(world: SyntheticWorld, plan: DemoPlan, out: Path, info: Any) -> dict:
    """The VAE in its two stages (SPEC: a spatial image autoencoder, then the temporal stage).

    Stage 1 fits the 2D autoencoder on random ``plan.vae_crop`` crops of single frames (MSE);
    `fit_temporal_start` then rescales the spatial features to unit variance and starts the
    temporal stage as their PCA codec; stage 2 freezes the
    spatial stage and fits the temporal one on whole clips, scored on the spatial features it
    must give back. Both stages checkpoint and resume; stage 1's model is kept
    under ``OUT/vae-spatial`` so a rerun goes straight to stage 2.
    """
    pool = _clip_pool(world, min(world.size("train"), plan.vae_pool))
    rng = np.random.default_rng(1)
    crop = min(plan.vae_crop, plan.height, plan.width)

    def frames(indices: list[int]) -> dict[str, torch.Tensor]:
        T, H, W = pool.shape[1:4]
        t = torch.from_numpy(rng.integers(T, size=len(indices)))
        y, x = (int(v) for v in rng.integers(0, [H - crop + 1, W - crop + 1]))
        picked = pool[torch.tensor(indices), t, y : y + crop, x : x + crop]
        return {"image": picked.permute(0, 3, 1, 2).float() / 127.5 - 1}

    def clips(indices: list[int]) -> dict[str, torch.Tensor]:
        return {"video": _to_video(pool[torch.tensor(indices)])}

    # the two stages' losses measure different things (pixel MSE, feature error): two curves
    spatial_curve, temporal_curve = _Curve(plan.vae_spatial_steps), _Curve(plan.vae_temporal_steps)
    spatial_dir = out / "vae-spatial"
    if (spatial_dir / "config.json").exists():
        vae = VideoVAE.from_pretrained(spatial_dir)
    else:
        vae = VideoVAE(CONFIGS[plan.vae_config])
        spatial = _vae_trainer(plan, out, "spatial", plan.vae_spatial_steps)
        train_vae(
            vae,
            ShuffledBatches(len(pool), plan.vae_frame_batch, frames, seed=1),
            spatial,
            info=info,
            config=VAETrainConfig(
                stage="spatial", loss=LossConfig(l1_weight=0, mse_weight=1, ssim_weight=0)
            ),
            on_step=spatial_curve,
        )
        _check_finished("vae spatial", checkpoint_step(spatial.checkpoint_dir), spatial.steps)
        vae = fit_temporal_start(
            vae, lambda: (_to_video(pool[s : s + 16]) for s in range(0, min(256, len(pool)), 16))
        )
        vae.save_pretrained(spatial_dir)

    temporal = _vae_trainer(plan, out, "temporal", plan.vae_temporal_steps)
    train_vae(
        vae.train(),
        ShuffledBatches(len(pool), plan.vae_batch, clips, seed=2),
        temporal,
        info=info,
        config=VAETrainConfig(
            stage="temporal",
            loss=LossConfig(l1_weight=0, ssim_weight=0, feature_weight=1, kl_weight=1e-6),
        ),
        on_step=temporal_curve,
    )
    _check_finished("vae temporal", checkpoint_step(temporal.checkpoint_dir), temporal.steps)
    vae.eval()
    with torch.no_grad():
        batches = (_to_video(pool[s : s + 16]) for s in range(0, min(128, len(pool)), 16))
        compute_latent_stats(vae, batches, weight_power=plan.vae_latent_weight_power)
    vae.save_pretrained(out / "vae")
    return {
        "curves": {
            "vae spatial loss": spatial_curve.points,
            "vae temporal loss": temporal_curve.points,
        }
    }


def load_vae(out: Path) -> VideoVAE:
    return VideoVAE.from_pretrained(out / "vae").eval()


def text_encoder() -> HFTextEncoder:
    return HFTextEncoder(max_length=32)


def _dit_dirs(out: Path) -> list[Path]:
    return sorted((out / "dit").glob("stage-*"))


def load_dit(out: Path) -> MUGDiT:
    return MUGDiT.from_pretrained(_dit_dirs(out)[-1]).eval()


def _stage_clips(
    world: SyntheticWorld,
    vae: VideoVAE,
    encoder: HFTextEncoder,
    plan: DemoPlan,
    frames: int,
    encoded: dict[int, LatentClips],
) -> tuple[LatentClips, int | None]:
    """A stage's clips and the latent frames to keep of each.

    Image stages encode the world's stills (their captions say nothing of motion). Video
    stages share one encoding of the longest clips (kept in ``encoded`` for the later stages
    of this run) and keep their first latent frames: exact, since the VAE encodes each group of
    frames on its own (latent 0 is frame 0 as an image).
    """
    bf16 = dit_precision(plan) == "bf16"  # the latents at the precision the DiT trains at
    if frames == 1:
        return world_latents(world, vae, encoder, 1, progress="encode stills", bf16=bf16), None
    if plan.frames not in encoded:
        progress = f"encode {plan.frames}-frame clips"
        encoded[plan.frames] = world_latents(
            world, vae, encoder, plan.frames, progress=progress, bf16=bf16
        )
    return encoded[plan.frames], (frames - 1) // vae.config.group_frames + 1


def train_dit_stage(
    world: SyntheticWorld,
    vae: VideoVAE,
    encoder: HFTextEncoder,
    plan: DemoPlan,
    out: Path,
    info: Any,
    name: str,
    frames: int,
    steps: int,
    batch: int,
    seed: int,
    encoded: dict[int, LatentClips],
    ranks: int = 1,
) -> dict:
    """One curriculum stage, from the previous stage's model; ``encoded`` caches the clips'
    latents between the stages of one run.

    With ``ranks > 1`` the stage trains data-parallel on that many spawned gloo ranks of one
    thread each (each rank takes ``batch / ranks`` of every batch, the same global
    batch). On two cores one process of two threads is the faster layout (no gradient
    all-reduce, no start-up per stage), so the demo trains in its own process by default.
    """
    clips, latent_frames = _stage_clips(world, vae, encoder, plan, frames, encoded)
    dataset, summary = stage_dataset(
        clips,
        where=f"demo {name}",
        latent_frames=latent_frames,
        spatial_stride=vae.config.spatial_downsample,
    )
    job = {
        "out": out,
        "plan": plan,
        "name": name,
        "steps": steps,
        "batch": batch,
        "data_seed": seed,
        "dataset": dataset,
        "text_dim": encoder.dim,
        "latent_channels": vae.latent_channels,
    }
    if ranks == 1:
        curve, step = _fit_dit(info=info, **job)
    else:
        curve, step = run_ranks(_fit_dit_rank, world_size=ranks, seed=seed, timeout=None, **job)[0]
    _check_finished(f"dit {name}", step, steps)
    return {"curve": curve, "pairs": len(dataset), "latent_shape": summary["latent_shape"]}


def _fit_dit_rank(**job: Any) -> tuple[list[tuple[int, float]], int]:
    """`_fit_dit` on a `run_ranks` rank: rank 0 prints the progress line, as the demo would."""
    info = dist_info()
    setup_logging(info.is_main)
    return _fit_dit(info=info, **job)


def _fit_dit(
    *,
    info: Any,
    out: Path,
    plan: DemoPlan,
    name: str,
    steps: int,
    batch: int,
    data_seed: int,
    dataset: LatentTextDataset,
    text_dim: int,
    latent_channels: int,
) -> tuple[list[tuple[int, float]], int]:
    """Trains one stage (resuming its checkpoint if one is there) and saves the EMA model as
    the next ``dit/stage-*`` folder; returns the loss curve and the last step (short of
    ``steps`` when a signal stopped it: then nothing is saved but the checkpoint)."""
    previous = _dit_dirs(out)
    if previous:
        model = MUGDiT.from_pretrained(previous[-1])
    else:
        config = dit_config(
            plan.dit_config,
            text_dim=text_dim,
            in_channels=latent_channels,
            patch_size=tuple(plan.dit_patch),
            hidden_size=plan.dit_hidden,
            num_heads=plan.dit_heads,
            depth=plan.dit_depth,
        )
        model = MUGDiT(config)
    slug = name.replace(" ", "-")
    config = TrainerConfig(
        steps=steps,
        lr=plan.dit_lr,
        min_lr=plan.dit_lr / 10,
        warmup_steps=min(100, steps // 5),
        ema_decay=0.995,
        optimizer=plan.dit_optimizer,
        muon_ns_steps=plan.dit_muon_ns_steps,
        precision=dit_precision(plan),
        compile=name in plan.dit_compile,
        checkpoint_dir=str(out / "checkpoints" / f"dit-{slug}"),
        checkpoint_every=200,
        keep_last=1,
        log_every=50,
    )
    curve = _Curve(steps)
    trainer = train_dit(
        model,
        dataset,
        config,
        info=info,
        batch_size=batch // info.data_size,
        flow=_flow(plan),
        seed=data_seed,
    )
    step = trainer.fit(curve)
    if step < steps:
        return curve.points, step
    trainer.ema.copy_to(model)
    if info.is_main:
        model.save_pretrained(out / "dit" / f"stage-{len(previous)}-{slug}")
    return curve.points, step


def dit_precision(plan: DemoPlan) -> str:
    """The DiT stages' `TrainerConfig.precision`. The demo trains on the CPU (gloo), where
    "auto" means bf16 if the CPU has AMX or AVX512-BF16 (`mugv.infra.fast_bf16`), else fp32."""
    if plan.dit_precision != "auto":
        return plan.dit_precision
    return "bf16" if fast_bf16("cpu") else "fp32"


def shape_contrasts(spec: SceneSpec) -> list[str]:
    """The spec's caption with one object's shape swapped for each other shape: the contrast
    prompts of the demo's contrast guidance."""
    out = []
    for k, obj in enumerate(spec.objects):
        for shape in SHAPES:
            if shape != obj.shape:
                objects = list(spec.objects)
                objects[k] = dataclasses.replace(obj, shape=shape)
                out.append(dataclasses.replace(spec, objects=tuple(objects)).caption())
    return out


def motion_contrasts(spec: SceneSpec) -> list[str]:
    """The spec's caption with one object's motion swapped for each other motion (a still
    object set moving at the slow speed, a moving one keeping its speed)."""
    out = []
    for k, obj in enumerate(spec.objects):
        for motion in MOTIONS:
            if motion != obj.motion:
                speed = 0.0 if motion == "static" else (obj.speed or SPEEDS["slow"])
                objects = list(spec.objects)
                objects[k] = dataclasses.replace(obj, motion=motion, speed=speed)
                out.append(dataclasses.replace(spec, objects=tuple(objects)).caption())
    return out


def demo_contrasts(spec: SceneSpec, plan: DemoPlan) -> tuple[list[str], list[float]]:
    """The demo's contrast prompts and their weights: shape swaps at 1, motion swaps at
    `plan.contrast_motion_weight` (none at 0)."""
    texts = shape_contrasts(spec)
    weights = [1.0] * len(texts)
    if plan.contrast_motion_weight > 0:
        motions = motion_contrasts(spec)
        texts += motions
        weights += [plan.contrast_motion_weight] * len(motions)
    return texts, weights


def _uint8(video: torch.Tensor) -> np.ndarray:
    return video_to_clips(video[None], 1.0)[0].frames


def _oracle_scores(oracle: Oracle, frames: np.ndarray, spec: SceneSpec) -> dict[str, float]:
    scores = oracle.score(frames, spec)
    return {k: float(scores[k]) for k in ORACLE_KEYS}


@torch.no_grad()
def generate_stage(
    world: SyntheticWorld,
    vae: VideoVAE,
    model: MUGDiT,
    encoder: HFTextEncoder,
    plan: DemoPlan,
    out: Path,
    seed: int,
) -> dict:
    pipe = checkpoint_pipeline(model, vae, encoder, _flow(plan))
    gen = GenerationConfig(
        num_frames=plan.frames,
        height=plan.height,
        width=plan.width,
        fps=plan.fps,
        num_steps=plan.sample_steps,
        guidance_scale=plan.guidance,
        seed=seed,
        contrast_scale=plan.contrast_scale,
        precision=dit_precision(plan),  # sampling as trained: 0.63x the fp32 time on Zen 4
    )
    oracle = Oracle()
    videos_dir = out / "videos"
    tests = [world.sample("test", i) for i in range(world.size("test"))]
    rows: list[dict[str, Any]] = []
    for start in tqdm(range(0, len(tests), 8), desc="generate and score"):
        chunk = tests[start : start + 8]
        prompts = [t.captions[0] for t in chunk]
        real = clips_to_batch([t.clip for t in chunk])  # (B, 3, T, H, W)
        specs = [SceneSpec.from_dict(t.clip.metadata["spec"]) for t in chunk]
        contrasts = weights = None
        if plan.contrast_scale > 0:
            contrasts, weights = map(list, zip(*(demo_contrasts(s, plan) for s in specs)))
        rivals = {"contrasts": contrasts, "contrast_weights": weights}
        outputs = {
            "t2v": pipe(prompts, config=gen, **rivals),
            "i2v": pipe(prompts, image=real[:, :, 0], config=gen, **rivals),
            "vae reconstruction": vae.decode(vae.encode(real), plan.frames),
            "real": real,
        }
        for k, test in enumerate(chunk):
            spec = specs[k]
            held = bool(test.clip.metadata.get("held_out"))
            for kind, video in outputs.items():
                frames = _uint8(video[k])
                row = {"kind": kind, "prompt": prompts[k], "held_out": held}
                row["scores"] = _oracle_scores(oracle, frames, spec)
                if kind in ("t2v", "i2v"):
                    name = f"{kind}_{start + k:03d}.mp4"
                    write_video(videos_dir / name, frames, fps=plan.fps)
                    row["video"] = f"videos/{name}"
                rows.append(row)
    return {"rows": rows, "accuracy": _accuracy(rows)}


def _accuracy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for kind in ("t2v", "i2v", "vae reconstruction", "real"):
        for subset, keep in (("all", None), ("seen", False), ("held-out", True)):
            picked = [
                r["scores"]
                for r in rows
                if r["kind"] == kind and (keep is None or r["held_out"] == keep)
            ]
            if not picked:
                continue
            entry: dict[str, Any] = {"videos": kind, "prompts": subset, "n": len(picked)}
            entry |= {k: float(np.mean([p[k] for p in picked])) for k in ORACLE_KEYS}
            for k in INTERVAL_KEYS:
                entry[f"{k} 95%"] = wilson_interval(entry[k], len(picked))
            table.append(entry)
    return table


def goal_note(table: list[dict[str, Any]]) -> str:
    """One sentence for the report: the held-out rows against the demo's goals, each with its
    95% interval."""
    parts = []
    for kind in ("t2v", "i2v"):
        row = next((r for r in table if r["videos"] == kind and r["prompts"] == "held-out"), None)
        if row is None:
            continue
        cells = []
        for key, goal in GOALS.items():
            lo, hi = row[f"{key} 95%"]
            verdict = "met" if row[key] >= goal else "not met"
            cells.append(
                f"{key.replace('_', '+')} {row[key]:.2f} (95% interval {lo:.2f}-{hi:.2f}; "
                f"{verdict})"
            )
        parts.append(f"{kind} on {row['n']} held-out prompts, " + ", ".join(cells))
    goals = ", ".join(f"{k.replace('_', '+')} >= {g:.2f}" for k, g in GOALS.items())
    if not parts:
        return f"Goals on held-out prompts ({goals}): this run drew no held-out test prompt."
    return f"Goals on held-out prompts ({goals}): " + "; ".join(parts) + "."


def report_videos(gen: dict) -> list[GeneratedVideo]:
    return [
        GeneratedVideo(r["prompt"], r["video"], r["kind"], r["scores"], r["held_out"])
        for r in gen["rows"]
        if "video" in r
    ]


def print_accuracy(table: list[dict[str, Any]]) -> None:
    print(
        f"\n{'videos':<20}{'prompts':<10}{'n':>4}"
        + "".join(f"{k:>14}" for k in ORACLE_KEYS)
        + "".join(f"{k + ' 95%':>18}" for k in INTERVAL_KEYS)
    )
    for row in table:
        cells = "".join(f"{row[k]:>14.3f}" for k in ORACLE_KEYS)
        cells += "".join(
            f"{f'{lo:.2f}-{hi:.2f}':>18}" for lo, hi in (row[f"{k} 95%"] for k in INTERVAL_KEYS)
        )
        print(f"{row['videos']:<20}{row['prompts']:<10}{row['n']:>4}{cells}")

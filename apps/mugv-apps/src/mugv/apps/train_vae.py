"""`mugv train-vae`: train the two-stage video VAE on clip shards or the synthetic world.

Thin over `mugv.vae.train_vae` (one `mugv.infra.Trainer` run: AdamW, schedule, EMA,
checkpoints, data parallelism): the config's sections map onto `VAEConfig`,
`VAETrainConfig`/`LossConfig` and `TrainerConfig`. At the end the latent statistics are
computed (merged over ranks) and `OUT/vae/` is written with `save_pretrained`. Rerunning the
same command resumes from `OUT/checkpoints/`; the same command runs under `torchrun`.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mugv.apps._config import AppError, load_config
from mugv.apps._training import (
    STOPPED,
    barrier,
    build,
    check_fields,
    checkpoint_step,
    distributed,
    out_folder,
    save_resolved,
    section,
    setup_logging,
)

EXAMPLE = """\
example config (YAML; TOML works too):
  model: {config: narrow}            # a name in mugv.vae.CONFIGS or VAEConfig fields;
                                     # init: DIR starts from a save_pretrained folder;
                                     # temporal_start: fit (default: before a temporal
                                     # stage, unit-variance features + the PCA start) or keep
  data:
    source: world                    # world (synthetic) or shards (clip shards)
    shards: null                     # folder of clip shards with manifest (source: shards)
    num_frames: 17                   # 1 + 8k pixel frames per clip (shards: the first ones)
    height: 64                       # pixels (shards: clips are resized, centre-cropped)
    width: 64
    batch_size: 8                    # clips per rank per step
    images: true                     # + each clip's first frame as an image batch
    world: {train_size: 1000, max_objects: 1, seed: 0}   # WorldConfig fields
  vae_train: {loss: {kl_weight: 1.0e-6, disc_weight: 0.0}}  # VAETrainConfig (+ LossConfig)
  train: {steps: 300, lr: 2.0e-3, warmup_steps: 20, checkpoint_every: 100}  # TrainerConfig
  stats: {clips: 128, weight_power: 0.25}  # clips for the per-channel latent mean/std;
                                     # channels then scaled by decoder sensitivity ** power
                                     # (mugv.vae.weight_latent_channels; 0 = plain std)
  seed: 0
"""

DATA_FIELDS = {"source", "shards", "num_frames", "height", "width", "batch_size", "images", "world"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-vae",
        help="train the video VAE (clip shards or the synthetic world); resumable, torchrun-ready",
        description=textwrap.fill(
            "Trains the two-stage video VAE with mugv.vae.train_vae on mugv.infra's "
            "Trainer, computes the per-channel latent statistics and writes OUT/vae "
            "(model.safetensors + config.json). Checkpoints go to OUT/checkpoints; rerunning the "
            "same command resumes. Under torchrun every rank trains on its share of the data "
            "(data parallel). A run stopped by SIGTERM/SIGINT saves a checkpoint and exits with "
            "status 3."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML or TOML config (see the example below)")
    p.add_argument("-o", "--out", help="output folder (or `out:` in the config)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set train.steps=1000 (repeatable)",
    )
    p.set_defaults(func=run)


def _vae_config(model: dict[str, Any]) -> Any:
    from mugv.vae import CONFIGS, VAEConfig

    check_fields(model, {"config", "init", "temporal_start"}, "model")
    spec = model.get("config", "small")
    if isinstance(spec, str):
        if spec not in CONFIGS:
            raise AppError(f"config model.config: unknown VAE {spec!r}; use one of {list(CONFIGS)}")
        return CONFIGS[spec]
    if isinstance(spec, dict):
        try:
            return VAEConfig.from_dict(spec)
        except Exception as exc:
            raise AppError(f"config model.config: {exc}") from exc
    raise AppError("config model.config: give a preset name (small, ...) or VAEConfig fields")


def _train_config(config: dict[str, Any]) -> Any:
    from mugv.vae import LossConfig, VAETrainConfig

    values = section(config, "vae_train")
    if "loss" in values:
        if not isinstance(values["loss"], dict):
            raise AppError("config vae_train.loss: must be a mapping of LossConfig fields")
        values["loss"] = build(LossConfig, values["loss"], "vae_train.loss")
    return build(VAETrainConfig, values, "vae_train")


def _check_data(data: dict[str, Any]) -> dict[str, Any]:
    check_fields(data, DATA_FIELDS, "data")
    data = {
        "source": "world",
        "num_frames": 17,
        "height": 64,
        "width": 64,
        "batch_size": 8,
        "images": True,
        **data,
    }
    if data["source"] not in ("world", "shards"):
        raise AppError(f"config data.source={data['source']!r}: use 'world' or 'shards'")
    for name in ("num_frames", "height", "width", "batch_size"):
        if not isinstance(data[name], int) or data[name] < 1:
            raise AppError(f"config data.{name}={data[name]!r}: use a positive integer")
    if data["source"] == "shards":
        shards = data.get("shards")
        if not shards or not Path(shards).is_dir():
            raise AppError(
                f"config data.shards={shards!r}: give the folder of clip shards "
                "(with its manifest) for data.source: shards"
            )
    return data


def _fetch_world(world: Any, images: bool):
    import torch

    from mugv.vae import clips_to_batch

    def fetch(indices: list[int]) -> dict[str, torch.Tensor]:
        batch = {"video": clips_to_batch([world.sample("train", i).clip for i in indices])}
        if images:
            stills = clips_to_batch([world.image("train", i).clip for i in indices])
            batch["image"] = stills[:, :, 0]  # (B, 3, H, W)
        return batch

    return fetch


class ShardBatches:
    """Batches of same-sized clips from clip shards, split over data-parallel ranks.

    Clips are cut to their first ``num_frames`` frames (shorter ones are skipped) and
    resized to ``size``. The position in the epoch is checkpointed by the Trainer; resuming
    skips the batches already trained on (they are read again, not trained on).
    """

    def __init__(
        self,
        folder: str,
        *,
        batch_size: int,
        num_frames: int,
        size: tuple[int, int],
        images: bool,
        seed: int,
        data_rank: int,
        data_size: int,
    ) -> None:
        from mugv.data.shards import ShardDataset

        self.dataset = ShardDataset(
            folder,
            split="sample",
            shuffle=True,
            seed=seed,
            rank=data_rank,
            world_size=data_size,
        )
        self.batch_size, self.num_frames, self.size, self.images = (
            batch_size,
            num_frames,
            size,
            images,
        )
        self.epoch, self.index = 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

    def _clips(self) -> Iterator[Any]:
        from mugv.data import VideoClip
        from mugv.data.video import resize_frames

        for sample in self.dataset:
            clip = sample.clip
            if clip is None or clip.frames.shape[0] < self.num_frames:
                continue
            frames = clip.frames[: self.num_frames]
            if frames.shape[1:3] != self.size:
                frames = resize_frames(frames, self.size)
            yield VideoClip(frames=frames, fps=clip.fps)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from mugv.vae import clips_to_batch

        self.dataset.set_epoch(self.epoch)
        skip, done, clips = self.index, 0, []
        for clip in self._clips():
            clips.append(clip)
            if len(clips) < self.batch_size:
                continue
            batch, clips = clips, []
            done += 1
            if done <= skip:
                continue
            self.index = done
            video = clips_to_batch(batch)  # (B, 3, T, H, W)
            out = {"video": video}
            if self.images:
                out["image"] = video[:, :, 0]
            yield out
        self.epoch, self.index = self.epoch + 1, 0


@dataclass(frozen=True)
class Settings:
    """A validated train-vae config."""

    vae_config: Any
    init: str | None
    train_config: Any  # VAETrainConfig
    trainer_config: Any  # TrainerConfig
    data: dict[str, Any]
    world: dict[str, Any]
    stats_clips: int
    weight_power: float
    seed: int
    temporal_start: str = "fit"


def load_settings(config: dict[str, Any], out: Path) -> Settings:
    """Validates a train-vae config (nothing is read or built)."""
    from mugv.infra import TrainerConfig

    check_fields(
        config, {"model", "data", "vae_train", "train", "stats", "seed", "out"}, "(top level)"
    )
    model_section = section(config, "model")
    vae_config = _vae_config(model_section)
    data = _check_data(section(config, "data"))
    stats = section(config, "stats")
    check_fields(stats, {"clips", "weight_power"}, "stats")
    weight_power = stats.get("weight_power", 0.25)
    if (
        isinstance(weight_power, bool)
        or not isinstance(weight_power, int | float)
        or weight_power < 0
    ):
        raise AppError(
            f"config stats.weight_power must be a number >= 0 (0 = plain standardisation); "
            f"got {weight_power!r}"
        )
    seed = int(config.get("seed", 0))
    trainer_values = {"checkpoint_dir": str(out / "checkpoints"), **section(config, "train")}
    init = model_section.get("init")
    temporal_start = model_section.get("temporal_start", "fit")
    if temporal_start not in ("fit", "keep"):
        raise AppError(
            f"config model.temporal_start={temporal_start!r}: use 'fit' (fit the spatial "
            "scaling factor and the PCA start before a temporal stage) or 'keep' (train the "
            "temporal stage of model.init as it is)"
        )
    if init is not None and not Path(init).is_dir():
        raise AppError(f"config model.init={init!r}: no such save_pretrained folder")
    world = {}
    if data["source"] == "world":
        from mugv.data.world import WorldConfig

        world = {
            "num_frames": data["num_frames"],
            "height": data["height"],
            "width": data["width"],
            "seed": seed,
            **section(data, "world"),
        }
        build(WorldConfig, world, "data.world")
    return Settings(
        vae_config=vae_config,
        init=init,
        train_config=_train_config(config),
        trainer_config=build(TrainerConfig, trainer_values, "train"),
        data=data,
        world=world,
        stats_clips=int(stats.get("clips", 128)),
        weight_power=float(weight_power),
        seed=seed,
        temporal_start=temporal_start,
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from mugv.infra import ParallelConfig, ShuffledBatches
    from mugv.vae import VideoVAE, compute_latent_stats, fit_temporal_start, train_vae

    config = load_config(args.config, args.set)
    out = out_folder(args.out, config)
    settings = load_settings(config, out)
    data, seed, init = settings.data, settings.seed, settings.init
    trainer_config, train_config = settings.trainer_config, settings.train_config
    with distributed(ParallelConfig(), seed) as info:
        setup_logging(info.is_main)
        if info.is_main:
            save_resolved(out / "config.yaml", config)
        vae = VideoVAE.from_pretrained(init) if init else VideoVAE(settings.vae_config)
        size = (data["height"], data["width"])
        world = None
        if data["source"] == "world":
            from mugv.data.world import SyntheticWorld, WorldConfig

            world = SyntheticWorld(WorldConfig(**settings.world))
            batches = ShuffledBatches(
                world.size("train"),
                data["batch_size"],
                _fetch_world(world, data["images"]),
                seed=seed,
                data_rank=info.data_rank,
                data_size=info.data_size,
            )
        else:
            batches = ShardBatches(
                data["shards"],
                batch_size=data["batch_size"],
                num_frames=data["num_frames"],
                size=size,
                images=data["images"],
                seed=seed,
                data_rank=info.data_rank,
                data_size=info.data_size,
            )
        if train_config.stage == "temporal" and settings.temporal_start == "fit":
            # deterministic from the data, so a resumed run refits the same scaling factor
            # before its checkpoint's weights replace the rest
            vae = fit_temporal_start(vae, lambda: _stat_videos(settings, world, info))
        train_vae(vae, batches, trainer_config, info=info, config=train_config)
        step = checkpoint_step(trainer_config.checkpoint_dir)
        if step < trainer_config.steps:
            if info.is_main:
                print(
                    f"stopped at step {step} of {trainer_config.steps}: "
                    "rerun the same command to resume"
                )
            return STOPPED
        vae.eval()
        with torch.no_grad():
            videos = _stat_videos(settings, world, info)
            mean, std = compute_latent_stats(vae, videos, weight_power=settings.weight_power)
        if info.is_main:
            vae.save_pretrained(out / "vae")
        barrier()
    if info.is_main:
        print(f"latent mean {json.dumps([round(float(m), 4) for m in mean])}")
        print(f"latent std  {json.dumps([round(float(s), 4) for s in std])}")
        print(f"vae: {out / 'vae'}")
    return 0


def _stat_videos(settings: Settings, world: Any, info: Any) -> Iterator[Any]:
    """This rank's share of the first ``stats.clips`` clips, as (B, 3, T, H, W) batches."""
    from mugv.vae import clips_to_batch

    data, n_stats = settings.data, settings.stats_clips
    if world is not None:
        mine = list(range(info.data_rank, min(n_stats, world.size("train")), info.data_size))
        for s in range(0, len(mine), 8):
            clips = [world.sample("train", i).clip for i in mine[s : s + 8]]
            yield clips_to_batch(clips).to(info.device)
        return
    stat_batches = ShardBatches(
        data["shards"],
        batch_size=1,
        num_frames=data["num_frames"],
        size=(data["height"], data["width"]),
        images=False,
        seed=settings.seed,
        data_rank=info.data_rank,
        data_size=info.data_size,
    )
    per_rank = max(1, n_stats // info.data_size)
    for _, batch in zip(range(per_rank), stat_batches):
        yield batch["video"].to(info.device)

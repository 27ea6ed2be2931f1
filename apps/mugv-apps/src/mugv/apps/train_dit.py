"""`mugv train-dit`: train MUGDiT through a curriculum of stages, resumable, torchrun-ready.

Thin over `mugv.dit.train.train_dit` (rectified flow on `mugv.infra.Trainer`): the config
names the model, the parallel layout (`mugv.infra.ParallelConfig`), the data (latent shards
from `mugv encode`, or the synthetic world encoded on the fly) and the stages
(`mugv.apps._curriculum`). Stages run in order, each starting from the weights the previous
one finished with; a rerun skips finished stages and resumes the current one from its last
checkpoint.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mugv.apps._config import AppError, load_config
from mugv.apps._curriculum import Stage, mark_done, parse_stages
from mugv.apps._training import (
    STOPPED,
    barrier,
    build,
    check_fields,
    distributed,
    out_folder,
    save_resolved,
    section,
    setup_logging,
)

TOP_FIELDS = {"out", "seed", "model", "parallel", "data", "flow", "train", "batch_size", "stages"}
DATA_FIELDS = {
    "source",
    "latents",
    "fps",
    "spatial_stride",
    "temporal_stride",
    "vae",
    "text_encoder",
    "max_text_length",
    "world",
}

EXAMPLE = """\
example config (YAML; TOML works too; infra/configs/ holds the 1B..18B recipes):
  model: {config: tiny, fields: {depth: 2}}  # a mugv.dit NAMED_CONFIGS name + DiTConfig
                                     # fields (in_channels/text_dim default to the data's);
                                     # init: DIR starts stage 0 from a save_pretrained folder
  parallel: {tensor: 1, sequence_parallel: false, context: 1, pipeline: 1}  # data = the rest
  data:
    source: latents                  # latents (from `mugv encode`) or world
    latents: latents/                # latent shard folder (a stage may name its own)
    fps: 8                           # when the shards do not store it
    # source: world -> vae: DIR, text_encoder: DIR (default MiniLM), world: {WorldConfig}
  flow: {base_pixels: 4096}          # FlowConfig fields for every stage
  train: {lr: 5.0e-4, warmup_steps: 10, ema_decay: 0.999, checkpoint_every: 100}  # TrainerConfig
  batch_size: 8                      # per data-parallel rank
  stages:                            # run in order; each resumes from the last
    - {name: images, frames: 1, steps: 300, flow: {task_probs: {t2i: 1.0}}}
    - {name: clips, frames: 17, steps: 1000, lr: 3.0e-4}
    - name: sft                      # annealed SFT on the curated subset
      steps: 200
      lr: 1.0e-4
      train: {min_lr: 0.0, warmup_steps: 0}
      filter: {manifest: curated/manifest.jsonl, status: kept, min: {align: 0.3}}
  seed: 0
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train-dit",
        help="train MUGDiT through a curriculum of stages; resumable, torchrun/Slurm-ready",
        description=textwrap.fill(
            "Trains MUGDiT with the rectified-flow objective on mugv.infra's Trainer, "
            "one stage after another (resolution, duration, task mix, steps, learning rate, "
            "optionally a curation-manifest filter for annealed SFT). Stage i writes "
            "OUT/stages/<i>-<name>/{checkpoints,model,ema,done.json}; rerunning the same command "
            "skips finished stages and resumes the current one. Under torchrun or srun the "
            "parallel layout comes from the config's `parallel:` section. A run stopped by "
            "SIGTERM/SIGINT saves a checkpoint and exits with status 3."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="YAML or TOML config (see the example below)")
    p.add_argument("-o", "--out", help="output folder (or `out:` in the config)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set parallel.tensor=4 (repeatable)",
    )
    p.set_defaults(func=run)


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A validated train-dit config."""

    model_name: str
    model_fields: dict[str, Any]
    init: str | None
    parallel: Any  # mugv.infra.ParallelConfig
    data: dict[str, Any]
    flow: dict[str, Any]
    train: dict[str, Any]
    batch_size: int
    seed: int
    stages: list[Stage]

    def dit_config(self, **defaults: Any) -> Any:
        from mugv.dit import dit_config

        try:
            return dit_config(self.model_name, **{**defaults, **self.model_fields})
        except Exception as exc:
            raise AppError(f"config model: {exc}") from exc

    def check_layout(self, world_size: int) -> None:
        """The layout against the world size and the model's heads and depth."""
        from mugv.infra import ConfigError

        config = self.dit_config()
        try:
            self.parallel.validate(world_size, num_heads=config.num_heads, num_layers=config.depth)
        except ConfigError as exc:
            raise AppError(f"config parallel: {exc}") from exc


def load_plan(config: dict[str, Any]) -> Plan:
    """Validates a train-dit config (no data is read, no process group made)."""
    from mugv.dit import NAMED_CONFIGS, FlowConfig
    from mugv.infra import ParallelConfig, TrainerConfig

    check_fields(config, TOP_FIELDS, "(top level)")
    model = section(config, "model")
    check_fields(model, {"config", "fields", "init"}, "model")
    name = model.get("config", "tiny")
    if name not in NAMED_CONFIGS:
        raise AppError(f"config model.config={name!r}: use one of {list(NAMED_CONFIGS)}")
    fields = section(model, "fields")
    init = model.get("init")
    if init is not None and not Path(init).is_dir():
        raise AppError(f"config model.init={init!r}: no such save_pretrained folder")
    parallel = build(ParallelConfig, section(config, "parallel"), "parallel")
    data = {"source": "latents", "spatial_stride": 8, "temporal_stride": 8, "max_text_length": 300}
    data |= section(config, "data")
    check_fields(data, DATA_FIELDS, "data")
    if data["source"] not in ("latents", "world"):
        raise AppError(f"config data.source={data['source']!r}: use 'latents' or 'world'")
    if data["source"] == "world" and not data.get("vae"):
        raise AppError("config data.vae: data.source: world needs a VideoVAE folder to encode")
    flow, train = section(config, "flow"), section(config, "train")
    build(FlowConfig, flow, "flow")
    check_fields(train, {f for f in TrainerConfig.__dataclass_fields__} - {"steps"}, "train")
    batch_size = config.get("batch_size", 8)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise AppError(f"config batch_size={batch_size!r}: use a positive integer")
    stages = parse_stages(config, int(data["temporal_stride"]))
    for stage in stages:
        check_fields(stage.data, DATA_FIELDS - {"source"}, f"stages[{stage.index}].data")
    plan = Plan(
        model_name=name,
        model_fields=fields,
        init=init,
        parallel=parallel,
        data=data,
        flow=flow,
        train=train,
        batch_size=batch_size,
        seed=int(config.get("seed", 0)),
        stages=stages,
    )
    plan.dit_config()  # fail now on bad model fields
    return plan


class _Data:
    """Loads a stage's clips, keeping the last source (latent folder or world size) loaded."""

    def __init__(self, plan: Plan, device: Any) -> None:
        self.plan, self.device, self.cache = plan, device, {}
        self.vae = self.encoder = None
        if plan.data["source"] == "world":
            import transformers

            from mugv.dit.text_encoder import HFTextEncoder
            from mugv.vae import VideoVAE

            transformers.utils.logging.disable_progress_bar()
            if not Path(plan.data["vae"]).is_dir():
                raise AppError(f"config data.vae={plan.data['vae']!r}: no such VideoVAE folder")
            self.vae = VideoVAE.from_pretrained(plan.data["vae"]).to(device).eval()
            self.encoder = HFTextEncoder(
                plan.data.get("text_encoder"),
                max_length=int(plan.data["max_text_length"]),
                device=device,
            )

    def strides(self, data: dict[str, Any]) -> tuple[int, int]:
        if self.vae is not None:
            return self.vae.config.group_frames, self.vae.config.spatial_downsample
        return int(data["temporal_stride"]), int(data["spatial_stride"])

    def clips(self, stage: Stage, data: dict[str, Any]) -> Any:
        from mugv.apps._latent_data import read_latent_shards, world_latents

        if data["source"] == "latents":
            if not data.get("latents"):
                raise AppError(
                    f"config stages[{stage.index}]: no latent folder; set data.latents "
                    "(or stages[i].data.latents)"
                )
            key = ("latents", str(data["latents"]))
            if key not in self.cache:
                self.cache = {key: read_latent_shards(str(data["latents"]), data.get("fps"))}
            return self.cache[key]
        from mugv.data.world import SyntheticWorld, WorldConfig

        world = {"seed": self.plan.seed, **section(data, "world")}
        sizes = {"num_frames": stage.frames, "height": stage.height, "width": stage.width}
        world |= {name: value for name, value in sizes.items() if value is not None}
        config = build(WorldConfig, world, f"stages[{stage.index}] world")
        key = ("world", repr(config))
        if key not in self.cache:
            clips = world_latents(SyntheticWorld(config), self.vae, self.encoder, config.num_frames)
            self.cache = {key: clips}
        return self.cache[key]


def _build_model(plan: Plan, start: str | None, summary: dict[str, Any], where: str) -> Any:
    from mugv.dit import MUGDiT

    kwargs = {"sequence_parallel": plan.parallel.sequence_parallel}
    if start is not None:
        model = MUGDiT.from_pretrained(start, **kwargs)
    else:
        C, D = summary["latent_shape"][0], summary["text_dim"]
        model = MUGDiT(plan.dit_config(in_channels=C, text_dim=D), **kwargs)
    for field_name, got in (
        ("in_channels", summary["latent_shape"][0]),
        ("text_dim", summary["text_dim"]),
    ):
        want = getattr(model.dit, field_name)
        if want != got:
            raise AppError(
                f"config {where}: the model has {field_name}={want} but the data has {got}; "
                f"set model.fields.{field_name}={got} or use data of the model's encoders"
            )
    return model


def _flops(model: Any):
    def forward_flops(batch: dict[str, Any]) -> float:
        _, _, T, h, w = batch["latents"].shape
        lengths = batch["text_mask"].sum(1).tolist()
        return float(sum(model.flops_per_sample(T, h, w, int(n)) for n in lengths))

    return forward_flops


def _train_stage(plan: Plan, stage: Stage, out: Path, start: str | None, data: _Data, info: Any):
    """Trains one stage; returns the step reached."""
    from mugv.apps._latent_data import stage_dataset
    from mugv.dit import FlowConfig, RectifiedFlow, train_dit
    from mugv.infra import TrainerConfig, manual_seed

    where = f"stages[{stage.index}]"
    stage_data = {**plan.data, **stage.data}
    temporal, spatial = data.strides(stage_data)
    clips = data.clips(stage, stage_data)
    latent_frames = None if stage.frames is None else (stage.frames - 1) // temporal + 1
    keep = stage.filter.keys() if stage.filter is not None else None
    dataset, summary = stage_dataset(
        clips, where=where, latent_frames=latent_frames, spatial_stride=spatial, keep=keep
    )
    wanted = (stage.height or dataset.height, stage.width or dataset.width)
    if plan.data["source"] == "latents" and wanted != (dataset.height, dataset.width):
        raise AppError(
            f"config {where}: height x width {wanted[0]}x{wanted[1]} but the latents are "
            f"{dataset.height}x{dataset.width} pixels; drop height/width or point "
            "stages[i].data.latents at shards encoded at that size"
        )
    manual_seed(plan.seed + stage.index)  # a stage starts the same whether or not it follows
    model = _build_model(plan, start, summary, where).to(info.device)
    flow = build(FlowConfig, {**plan.flow, **stage.flow}, f"{where}.flow")
    values = {**plan.train, **stage.train, "steps": stage.steps}
    if stage.lr is not None:
        values["lr"] = stage.lr
    values["checkpoint_dir"] = str(stage.folder(out) / "checkpoints")
    trainer_config = build(TrainerConfig, values, f"{where}.train")
    if info.is_main:
        print(
            f"[train-dit] stage {stage.slug}: {stage.steps} steps on {summary['pairs']} pairs "
            f"({summary['clips']} clips, latents {summary['latent_shape']}, "
            f"{dataset.height}x{dataset.width} px)",
            flush=True,
        )
    trainer = train_dit(
        model,
        dataset,
        trainer_config,
        info=info,
        batch_size=stage.batch_size or plan.batch_size,
        flow=RectifiedFlow(flow),
        seed=plan.seed + stage.index,
        forward_flops=_flops(model),
        model_config={"dit": model.dit.to_dict(), "stage": stage.name},
    )
    step = trainer.fit()
    if step < stage.steps:
        return step, summary
    folder = stage.folder(out)
    model.save_pretrained(folder / "model")
    if trainer.ema is not None:
        trainer.ema.copy_to(model)
        model.save_pretrained(folder / "ema")
    barrier()
    return step, summary


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.set)
    plan = load_plan(config)
    out = out_folder(args.out, config)
    from mugv.infra import launch_env

    plan.check_layout(world_size=launch_env()[2])  # on every rank, before any process group
    with distributed(plan.parallel, plan.seed) as info:
        setup_logging(info.is_main)
        if info.is_main:
            save_resolved(out / "config.yaml", config)
        data = _Data(plan, info.device)
        start = plan.init
        for stage in plan.stages:
            folder = stage.folder(out)
            if stage.done(out):
                if info.is_main:
                    print(f"[train-dit] stage {stage.slug}: done before, skipped", flush=True)
                start = str(folder / "model")
                continue
            step, summary = _train_stage(plan, stage, out, start, data, info)
            if step < stage.steps:
                if info.is_main:
                    print(
                        f"[train-dit] stage {stage.slug}: stopped at step {step} of "
                        f"{stage.steps}; rerun the same command to resume",
                        flush=True,
                    )
                return STOPPED
            if info.is_main:
                mark_done(stage, out, {"steps": step, **summary})
            barrier()
            start = str(folder / "model")
    final = plan.stages[-1].folder(out)
    weights = final / "ema" if (final / "ema").is_dir() else final / "model"
    if info.is_main:
        print(f"[train-dit] done: {weights}")
    return 0

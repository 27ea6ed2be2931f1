"""`mugv demo`: the whole stack on the synthetic world, end to end, on a CPU.

world -> train the VAE -> encode latents and captions -> train MUGDiT with a miniature
curriculum (stills, then 17-frame clips) -> generate videos for held-out test
prompts (text-to-video and image-to-video) -> score them with the oracle -> report.html.
Every stage stores its result under the output folder; rerunning skips finished stages and
resumes an interrupted training from its last checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mugv.apps._config import AppError


@dataclass(frozen=True, kw_only=True)
class DemoPlan:
    """How big each stage is. `curriculum` lists (name, pixel frames, steps, batch) in order."""

    height: int = 64
    width: int = 64
    fps: float = 8.0
    max_objects: int = 1
    train_clips: int = 1200
    # 48 test prompts, about half of them held-out compositions: with 24 (the plan until
    # 2026-12-03) the held-out rows rested on ~11 videos, a 95% interval of +-0.25 or more.
    test_prompts: int = 48
    # The VAE trains in two stages (mugv.vae.VAETrainConfig.stage): the spatial autoencoder on
    # `vae_frame_batch` random `vae_crop`-pixel frame crops, then the temporal stage on
    # `vae_batch` whole clips, from a pool of the first `vae_pool` train clips. The temporal
    # stage starts as the PCA codec of the spatial features (`fit_linear_shortcut`), so the
    # spatial stage sets the quality and gets the steps: that start alone reconstructs 48 probe
    # clips with oracle accuracy 1.00 (pixel MSE 0.0050); 100 temporal steps (105 s on two
    # Zen 4 cores) took the MSE to 0.0037 and colour+shape to 0.98, so 40 are spent. The
    # spatial loss flattens by ~800 steps (0.0016 there, 0.0015 at 1,000).
    # `narrow4x`: 4x4x8 compression, 6 channels. A 64x64 frame is 16 x 16 x 6 latents, the same
    # 1,536 numbers as the 8x8x8 `narrow`'s 8 x 8 x 24, but an object is 3-5 latent pixels
    # wide instead of 1.6-2.6, its shape an outline in space instead of a mix of channels: on
    # the same DiT budget held-out text-to-video colour+shape went from 0.35 to 0.68-0.77 (two
    # seeds) and reconstructions from 0.92 to 1.00 (docs/packages/dit-generation.md, "A 4x
    # latent").
    vae_config: str = "narrow4x"
    vae_spatial_steps: int = 800
    vae_temporal_steps: int = 40
    vae_frame_batch: int = 16
    vae_crop: int = 32
    vae_batch: int = 4
    vae_pool: int = 512
    # The latents' channels are scaled by (decoder sensitivity) ** this power
    # (`mugv.vae.weight_latent_channels`), so the DiT's loss favours what the decoder shows.
    vae_latent_weight_power: float = 0.25
    dit_config: str = "tiny"
    # A token holds `dit_patch` (1, 4, 4) x 6 channels = 96 numbers (as (1, 2, 2) x 24 did on
    # the 8x latents): a hidden size of 96 leaves the network no room beyond the token itself
    # and its videos hold blobs; 192 (heads of 48) learns objects (docs/packages/
    # dit-generation.md, "The token width"). Tokens of 384 numbers (patch 4 on 24 channels)
    # through the same width lose colour and motion.
    dit_patch: tuple[int, int, int] = (1, 4, 4)
    dit_hidden: int = 192
    dit_heads: int = 4
    dit_depth: int = 4
    # The clips stage gets the time: on its world (seed 0, the report's 48 prompts) held-out
    # t2v colour+shape went 0.54 / 0.77 / 0.96 with 1,250 / 2,500 / 5,000 clip steps of 32,
    # and at a fixed time more samples beat more steps (2,500 x 16 compiled: 0.62). The
    # 17-frame clips are encoded in bf16 (~25 s less) and the clips stage trains compiled at
    # batch 32 (docs/packages/dit-generation.md, "Where the clip steps come from"). Held-out
    # compositions fail on the shape: the model draws the shape it learnt in that colour, and
    # stills teach that binding at a third of a clip's tokens, so the images stage takes 900
    # steps ("Binding a shape to a colour it never came with"). One report is one noise draw
    # (it moves held-out rates by up to 0.2), so splits were compared over four draws each on
    # two models: with a 150-step short-clips stage (9 frames) between the stills and 2,150 clip
    # steps, held-out t2v / i2v colour+shape averaged 0.84 / 0.84 and 2 of 8 draws met every
    # goal; without it, its time given to the clips (2,330 steps), 0.85 / 0.91 and 7 of 8
    # ("One report is one draw"). The plan takes 2,300 clip steps to keep a margin under the
    # 15 minutes.
    curriculum: tuple[tuple[str, int, int, int], ...] = (
        ("images", 1, 900, 32),
        ("clips", 17, 2300, 32),
    )
    dit_lr: float = 3e-3
    # Muon on the blocks' weight matrices, AdamW on the embedders, tables and head
    # (`TrainerConfig.optimizer`): at the same steps text-to-video colour+shape went from
    # ~0.3 to ~0.42 and image-to-video to ~0.63 on 96 test prompts; its Newton-Schulz step
    # costs ~0.06 s a step, paid for with 150 fewer clip steps (docs/packages/dit-generation.md,
    # "Muon").
    dit_optimizer: str = "muon"
    dit_muon_ns_steps: int = 5
    # "auto": bf16 autocast where bf16 matrix products are fast (`mugv.infra.fast_bf16`: GPUs,
    # CPUs with AMX or AVX512-BF16; 0.83x the fp32 clip step on two AMX cores, ~0.8x on two Zen 4
    # cores, where Muon's Newton-Schulz runs in bf16 too), else fp32.
    dit_precision: str = "auto"
    # Stages (by name) whose DiT blocks run under torch.compile (`MUGDiT.compile`, one block
    # graph per stage): ~0.8x the bf16 clip step on two Zen 4 cores for 30-40 s of compiling
    # on a fresh machine, so only a stage of ~1,000 steps or more earns it back.
    dit_compile: tuple[str, ...] = ("clips",)
    sample_steps: int = 25
    guidance: float = 4.0
    # Contrast guidance (`mugv.dit.guidance.contrast_term`) against each test prompt with its
    # shape swapped for the world's other shapes, at t in [0.3, 1]; 0 turns it off. The DiT
    # tells the shapes of real test clips apart (0.95 of them by its own denoising error) far
    # better than it draws them. On the standard model, 4 raised colour+shape by 0.04-0.07
    # (t2v and i2v, 24 and 96 prompts; held-out t2v on 96 fell 0.04) and kept t2v motion (i2v
    # 0.95 -> 0.90 on 96); 8 helped held-out prompts more on 96 but cost up to 0.2 of motion
    # (docs/packages/dit-generation.md, "Contrast guidance"). The 4x latent's model keeps
    # shapes and loses motion (t2v 0.60 on 96 prompts): the prompt with its motion swapped joins
    # the rivals at `contrast_motion_weight` a row (shape rivals 1), at scale 6. On 96 prompts
    # 1/3 gave t2v colour+shape / motion 0.740 / 0.729 against 0.760 / 0.604 with shape rivals
    # alone at 4; equal weights 0.646 / 0.781 ("A 4x latent").
    contrast_scale: float = 6.0
    contrast_motion_weight: float = 1 / 3

    @property
    def frames(self) -> int:
        return self.curriculum[-1][1]


PLANS = {
    # CI smoke run: every stage runs, files come out; quality is not the point.
    "smoke": DemoPlan(
        height=32,
        width=32,
        train_clips=16,
        test_prompts=2,
        vae_config="tiny",
        dit_patch=(1, 2, 2),
        vae_spatial_steps=2,
        vae_temporal_steps=2,
        vae_frame_batch=4,
        vae_batch=2,
        vae_pool=16,
        dit_hidden=24,
        dit_heads=2,
        dit_depth=1,
        curriculum=(("images", 1, 2, 4), ("short clips", 9, 2, 4), ("clips", 17, 2, 4)),
        dit_compile=(),
        sample_steps=2,
    ),
    "fast": DemoPlan(
        train_clips=800,
        test_prompts=24,
        vae_spatial_steps=600,
        vae_temporal_steps=30,
        curriculum=(("images", 1, 200, 32), ("short clips", 9, 300, 32), ("clips", 17, 800, 32)),
        dit_compile=(),
    ),
    "standard": DemoPlan(),
    # Images 300 x 32, short clips 500 x 32 and clips 5,000 x 32 (compiled), as measured: the
    # accuracy goals, met, in 24 min 4 s on two Zen 4 cores (clips stage 1,076 s; held-out t2v
    # colour+shape 0.88, motion 1.00, i2v 0.92). With 300 image steps, what the 15-minute
    # plan lacked was DiT compute on clips: on its world (seed 0, the report's 48 prompts, 26
    # held-out) 1,250 / 2,500 / 5,000 clip steps of 32 gave held-out t2v colour+shape 0.54 /
    # 0.77 / 0.96 (motion 0.96 / 0.96 / 1.00) and i2v 0.81 / 0.81 / 0.92 (docs/packages/
    # dit-generation.md, "Clip steps, composed captions, image-first sampling"). The standard
    # plan's 900 image steps are not measured on this one.
    "full": DemoPlan(
        curriculum=(("images", 1, 300, 32), ("short clips", 9, 500, 32), ("clips", 17, 5000, 32))
    ),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole stack on the synthetic world and write an HTML report",
        description="Synthesises the world, trains the VAE and a tiny MUGDiT (images, then short "
        "clips, then clips), generates videos for held-out test prompts (t2v and i2v), scores "
        "them with the oracle and writes OUT/report.html. Rerunning reuses finished stages.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--fast", action="store_const", dest="plan", const="fast", help="smaller")
    size.add_argument(
        "--full",
        action="store_const",
        dest="plan",
        const="full",
        help="5,000 clip steps of 32: meets the accuracy goals, ~24 min on 2 cores",
    )
    size.add_argument(
        "--smoke", action="store_const", dest="plan", const="smoke", help="seconds, for CI"
    )
    p.add_argument("-o", "--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument("--seed", type=int, default=0, help="world and training seed")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    p.add_argument(
        "--dit-ranks",
        type=int,
        default=1,
        help="data-parallel processes (one thread each) for the DiT stages; default 1: train "
        "in this process on --threads threads, faster on two cores than two ranks "
        "(packages/mugv-dit/benchmarks/bench_cpu_layout.py)",
    )
    p.set_defaults(func=run, plan="standard")


class _Stages:
    """Runs named stages once: a finished stage leaves ``stages/<name>.json`` behind."""

    def __init__(self, out: Path) -> None:
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self.dir / f"{name.replace(' ', '_')}.json"
        if marker.exists():
            result = json.loads(marker.read_text())
            print(f"[demo] {name}: done before, reused")
        else:
            print(f"[demo] {name} ...", flush=True)
            t0 = time.perf_counter()
            result = fn()
            result["seconds"] = time.perf_counter() - t0
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps(result))
            os.replace(tmp, marker)
            print(f"[demo] {name}: {result['seconds']:.0f} s", flush=True)
        self.timings[name] = result["seconds"]
        return result


def _dit_ranks(args: argparse.Namespace, plan: DemoPlan) -> int:
    ranks = args.dit_ranks
    batches = sorted({batch for *_, batch in plan.curriculum})
    if ranks < 1 or any(batch % ranks for batch in batches):
        raise AppError(
            f"--dit-ranks {ranks}: the DiT batches {batches} must split evenly over the ranks; "
            "use a common divisor of them (1 trains in this process)"
        )
    return ranks


def run(args: argparse.Namespace) -> int:
    import torch

    from mugv.apps import _demo_steps as steps
    from mugv.apps._report import write_demo_report
    from mugv.apps._training import STOPPED

    plan = PLANS[args.plan]
    ranks = _dit_ranks(args, plan)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AppError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "plan.json"
    wanted = {"plan": args.plan, "seed": args.seed, **asdict(plan)}
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps(wanted)):
        raise AppError(
            f"{out} holds a demo run with another size or seed; use another --out or delete it"
        )
    saved.write_text(json.dumps(wanted, indent=1))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mugv").setLevel(logging.INFO)
    torch.set_num_threads(max(1, args.threads))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    stages = _Stages(out)
    world = steps.make_world(plan, args.seed)
    try:
        gen, curves = _train_and_generate(stages, world, plan, out, args, ranks)
    except steps.StageStopped as exc:
        print(f"[demo] {exc}: run the same command again to resume", flush=True)
        return STOPPED
    report = write_demo_report(
        out / "report.html",
        videos=steps.report_videos(gen),
        accuracy=gen["accuracy"],
        curves=curves,
        timings=stages.timings,
        notes=[
            f"Plan '{args.plan}': {plan.train_clips} training clips of {plan.frames} frames at "
            f"{plan.height}x{plan.width}, {plan.fps:g} fps; VAE '{plan.vae_config}'; MUGDiT "
            f"patch {tuple(plan.dit_patch)}, hidden {plan.dit_hidden}, "
            f"{plan.dit_heads} heads, depth {plan.dit_depth}, trained in "
            f"{steps.dit_precision(plan)}"
            + (f" (compiled: {', '.join(plan.dit_compile)})" if plan.dit_compile else "")
            + "; curriculum "
            + ", ".join(f"{n} ({f} frames, {s} steps x {b})" for n, f, s, b in plan.curriculum)
            + f"; {plan.sample_steps} Euler steps, CFG {plan.guidance}"
            + (
                f", contrast guidance {plan.contrast_scale:g} against the prompt with its "
                "shape swapped for each other shape"
                + (
                    f" and (weighted {plan.contrast_motion_weight:.2g}) its motion for each "
                    "other motion"
                    if plan.contrast_motion_weight > 0
                    else ""
                )
                + " (t in "
                f"[{', '.join(f'{t:g}' for t in steps.GenerationConfig().contrast_interval)}])."
                if plan.contrast_scale > 0
                else "."
            ),
            "Accuracy is the oracle's per-attribute agreement with the prompt. 'real' and "
            "'vae reconstruction' rows are the ceilings the generator can reach; the 95% "
            "columns are Wilson intervals over the row's n videos.",
            steps.goal_note(gen["accuracy"]),
        ],
    )
    steps.print_accuracy(gen["accuracy"])
    print(f"report: {report}")
    return 0


def _train_and_generate(
    stages: _Stages,
    world: Any,
    plan: DemoPlan,
    out: Path,
    args: argparse.Namespace,
    ranks: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stages in order, each reused when done before; the generation result and curves."""
    from mugv.apps import _demo_steps as steps
    from mugv.infra import single_process

    with single_process(seed=args.seed) as info:
        vae_result = stages.run("vae", lambda: steps.train_vae_stage(world, plan, out, info))
        vae = steps.load_vae(out)
        encoder = steps.text_encoder()
        curves = dict(vae_result["curves"])
        encoded: dict = {}  # the video stages share one encoding of the clips
        for name, frames, n_steps, batch in plan.curriculum:
            stage = f"dit {name}"
            train = functools.partial(
                steps.train_dit_stage,
                *(world, vae, encoder, plan, out, info),
                *(name, frames, n_steps, batch, args.seed, encoded),
                ranks=ranks,
            )
            result = stages.run(stage, train)
            curves[f"{stage} loss"] = result["curve"]
        model = steps.load_dit(out)
        gen = stages.run(
            "generate and score",
            lambda: steps.generate_stage(world, vae, model, encoder, plan, out, args.seed),
        )
    return gen, curves

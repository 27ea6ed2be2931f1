"""`mugv curate`: raw videos in, scored clips, WebDataset shards, a manifest and a report out."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from tqdm import tqdm

from mugv.apps._config import AppError, load_config

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "curate",
        help="split, filter, caption, score and deduplicate raw videos into training shards",
        description="Curates raw videos: scene split, blur/motion/exposure/static/overlay "
        "filters, near-duplicate removal, optional captioning and text-video alignment, then "
        "WebDataset shards, manifest.jsonl (every score, every decision) and report.html. "
        "Rerunning the same command resumes where a killed run stopped.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="video files, folders (searched recursively) or glob patterns; a .txt file lists "
        "one input per line",
    )
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("-c", "--config", help="YAML or TOML file of CurationConfig sections")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set blur.min_sharpness=0.8 (repeatable)",
    )
    p.add_argument(
        "--captioner",
        metavar="DIR",
        help="caption kept clips with a TSGCaptioner saved in DIR (scene graphs from the "
        "synthetic-world oracle)",
    )
    p.add_argument(
        "--scorer",
        metavar="DIR",
        help="score caption-clip alignment with a TW-BERT saved in DIR; set a threshold with "
        "--set align.min_score=X",
    )
    p.add_argument("-j", "--workers", type=int, default=1, help="local worker processes")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        nargs="?",
        const="local",
        help="run the per-video stages on Ray Data ('local' starts a local instance)",
    )
    p.set_defaults(func=run)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folders, globs and list files to a sorted list of video paths."""
    found: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.suffix == ".txt" and path.is_file():
            found += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        elif path.is_dir():
            found += [str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]
        elif path.exists():
            found.append(str(path))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise AppError(f"input {item!r} is neither a file, a folder nor a matching glob")
            found += matches
    return sorted(dict.fromkeys(found))


def _folder(flag: str, path: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise AppError(f"{flag} {folder}: no such model folder")
    return folder


def run(args: argparse.Namespace) -> int:
    from mugv.data.curation import (
        CurationConfig,
        LocalExecutor,
        RayExecutor,
        run_curation,
        write_report,
    )

    config = CurationConfig.from_dict(load_config(args.config, args.set))
    inputs = expand_inputs(args.inputs)
    captioner = scorer = None
    if args.captioner is not None:
        from mugv.captioning import TSGCaptioner, oracle_scene_graph

        captioner = TSGCaptioner.load(
            _folder("--captioner", args.captioner), graph_source=oracle_scene_graph
        )
    if args.scorer is not None:
        from mugv.retrieval import TWBertScorer

        scorer = TWBertScorer.from_pretrained(_folder("--scorer", args.scorer))
    if args.ray is not None:
        executor = RayExecutor(address=None if args.ray == "local" else args.ray)
    else:
        executor = LocalExecutor(workers=args.workers)
    with tqdm(total=len(inputs), unit="video", desc="curate") as bar:
        result = run_curation(
            inputs,
            args.out,
            config,
            captioner=captioner,
            scorer=scorer,
            executor=executor,
            progress=lambda _: bar.update(),
        )
    report = write_report(result, Path(args.out) / "report.html")
    summary = result.summary()
    width = max(len(k) for k in summary) + 12
    print(f"{'inputs':<{width}} {summary['inputs']}")
    print(f"{'inputs failed':<{width}} {summary['inputs_failed']}")
    print(f"{'clips':<{width}} {summary['clips']}")
    print(f"{'kept':<{width}} {summary['kept']}")
    for stage, n in summary["filtered"].items():
        print(f"{'filtered: ' + stage:<{width}} {n}")
    print(f"{'clips failed':<{width}} {summary['clips_failed']}")
    print(f"{'video hours':<{width}} {summary['video_hours']:.4f}")
    print(f"{'seconds':<{width}} {summary['seconds']:.1f}")
    print(f"{'video-hours / hour':<{width}} {summary['video_hours_per_hour']:.1f}")
    print(f"manifest: {result.manifest}\nreport:   {report}")
    return 0

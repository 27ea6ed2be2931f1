"""`mugv evaluate`: score a folder of generated videos against their prompts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mugv.apps._config import AppError
from mugv.apps._stats import score_interval

KEYS = ("colour", "shape", "size", "motion", "colour_shape", "all")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score generated videos against their prompts (oracle, optional TW-BERT)",
        description='Reads FOLDER/prompts.jsonl (lines {"video": NAME, "prompt": TEXT}, as '
        "`mugv generate` writes them) and scores each video with the synthetic-world oracle: "
        "per-attribute accuracy of colour, shape, size and motion against the parsed prompt, "
        "their means, and each mean's 95% interval (Wilson's for 0/1 scores).",
    )
    p.add_argument("folder", help="folder of videos with prompts.jsonl")
    p.add_argument("--prompts", metavar="JSONL", help="prompt file (default FOLDER/prompts.jsonl)")
    p.add_argument("--out", metavar="JSON", help="also write every score to this file")
    p.set_defaults(func=run)


def read_pairs(folder: Path, prompts: Path) -> list[tuple[Path, str]]:
    if not prompts.is_file():
        raise AppError(f'{prompts}: no prompt file; write lines {{"video": ..., "prompt": ...}}')
    pairs = []
    for n, line in enumerate(prompts.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((folder / row["video"], str(row["prompt"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AppError(
                f'{prompts}:{n}: expected {{"video": ..., "prompt": ...}} ({exc})'
            ) from exc
    if not pairs:
        raise AppError(f"{prompts}: holds no video")
    return pairs


def score_videos(pairs: list[tuple[Path, str]]) -> list[dict]:
    """One row per video: its oracle scores, or the error that stopped it."""
    from mugv.data import DataError
    from mugv.data.oracle import Oracle
    from mugv.data.video import read_video
    from mugv.data.world import parse_prompt

    oracle = Oracle()
    rows = []
    for path, prompt in pairs:
        row: dict = {"video": path.name, "prompt": prompt}
        try:
            row |= oracle.score(read_video(path).frames, parse_prompt(prompt))
        except DataError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise AppError(f"{folder}: no such folder")
    rows = score_videos(read_pairs(folder, Path(args.prompts or folder / "prompts.jsonl")))
    scored = [r for r in rows if "error" not in r]
    print(f"{'video':<24} " + " ".join(f"{k:>12}" for k in KEYS))
    for r in rows:
        cells = " ".join(f"{r[k]:12.2f}" if k in r else f"{'-':>12}" for k in KEYS)
        print(f"{r['video']:<24} {cells}" + (f"  error: {r['error']}" if "error" in r else ""))
    if scored:
        means = {k: sum(r[k] for r in scored) / len(scored) for k in KEYS}
        print(f"{'mean of ' + str(len(scored)):<24} " + " ".join(f"{means[k]:12.3f}" for k in KEYS))
        spans = [score_interval([r[k] for r in scored]) for k in KEYS]
        print(
            f"{'95% interval':<24} " + " ".join(f"{f'{lo:.2f}-{hi:.2f}':>12}" for lo, hi in spans)
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0 if scored else 1

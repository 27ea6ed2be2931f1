"""`mugv caption`: caption videos or clip shards with a trained TSG (scene graph -> caption)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from mugv.apps._config import AppError
from mugv.apps.curate import expand_inputs


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "caption",
        help="caption videos or clip shards with a TSG checkpoint",
        description="Captions each clip with a TSGCaptioner (mugv.captioning). The scene graph "
        "is the one stored in the shard sample when there is one, otherwise the synthetic-world "
        "oracle's parse of the frames. Prints KEY<TAB>CAPTION lines; with -o also writes "
        'JSON lines {"key", "source", "graph", "caption"}.',
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="video files, folders of videos, globs, .tar shards or shard folders (a folder "
        "with a *.manifest.jsonl is read as shards)",
    )
    p.add_argument("--captioner", required=True, metavar="DIR", help="TSGCaptioner.save folder")
    p.add_argument("-o", "--out", metavar="JSONL", help="also write the captions here")
    p.add_argument("--beam", type=int, default=5, help="beam size; 1 decodes greedily (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="graphs per decoding batch")
    p.set_defaults(func=run)


def _is_shards(path: Path) -> bool:
    return path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.manifest.jsonl")))


def iter_clips(inputs: list[str]) -> Iterator[tuple[str, str, object, object]]:
    """(key, source, clip, stored scene graph or None) for every clip of the inputs."""
    from mugv.data.shards import read_manifest, read_shard
    from mugv.data.video import read_video

    videos = []
    for item in inputs:
        path = Path(item)
        if not _is_shards(path):
            videos.append(item)
            continue
        shards = [path] if path.suffix == ".tar" else [path / s.shard for s in read_manifest(path)]
        for shard in shards:
            for sample in read_shard(shard):
                if sample.clip is None and sample.scene_graph is None:
                    raise AppError(f"{shard}: sample {sample.key!r} has neither clip nor graph")
                yield sample.key, str(shard), sample.clip, sample.scene_graph
    for video in expand_inputs(videos) if videos else []:
        yield Path(video).stem, video, read_video(video), None


def run(args: argparse.Namespace) -> int:
    if args.beam < 1 or args.batch_size < 1:
        raise AppError("--beam and --batch-size must be >= 1")
    folder = Path(args.captioner)
    if not (folder / "words.json").is_file():
        raise AppError(f"--captioner {folder}: not a TSGCaptioner folder (no words.json)")

    from mugv.captioning import CaptioningError, TSGCaptioner, oracle_scene_graph

    try:
        captioner = TSGCaptioner.load(folder, beam_size=args.beam, batch_size=args.batch_size)
        rows, graphs = [], []
        for key, source, clip, graph in iter_clips(args.inputs):
            rows.append({"key": key, "source": source, "graph": "stored" if graph else "oracle"})
            graphs.append(graph if graph is not None else oracle_scene_graph(clip))
        if not rows:
            raise AppError("no clip found in the inputs")
        captions = captioner.caption_graphs(graphs)
    except CaptioningError as exc:
        raise AppError(str(exc)) from exc
    for row, caption in zip(rows, captions):
        row["caption"] = caption
        print(f"{row['key']}\t{caption}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0

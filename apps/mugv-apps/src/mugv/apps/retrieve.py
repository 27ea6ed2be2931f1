"""`mugv retrieve`: train TW-BERT, evaluate text-video retrieval, search a folder of videos.

- ``train``: a config file (YAML/TOML) + ``--set`` overrides -> `mugv.retrieval.train`'s
  two-stage recipe on the synthetic world or a retrieval ``.jsonl``; writes OUT/model
  (`TWBert.save_pretrained`), OUT/config.yaml (as run) and OUT/train.json (timings).
- ``evaluate``: a trained model on a folder (``prompts.jsonl`` lines ``{"video", "prompt"}``,
  as `mugv generate` writes them), a retrieval ``.jsonl`` (``{"clip_name", "caption"}``),
  clip shards, or the world's test split -> R@1/5/10, MdR, MnR for text-to-video and
  video-to-text.
- ``search``: a folder of videos + a text query -> the ranked list.

A bad item (unreadable video, empty caption) is skipped with one line naming it; an
over-long caption is truncated with a warning. Neither stops the batch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mugv.apps._config import AppError, load_config

logger = logging.getLogger(__name__)

EXAMPLE = """\
example config (YAML; TOML works too):
  model:
    preset: small                    # tiny | small | base (mugv.retrieval.CONFIGS)
    cross_attention: t2w             # t2w (TW-BERT) or p2w (patch-to-word baseline)
    video: {num_frames: 4, image_size: 32}   # VideoEncoderConfig fields
    # ... any other TWBertConfig field (patch_pool, queue_size, momentum, ...)
  data:
    source: world                    # world (synthetic) or jsonl (retrieval .jsonl)
    clips: 2000                      # world: training clips
    world: {seed: 0}                 # WorldConfig fields
    # jsonl: captions.jsonl          # source: jsonl: {"clip_name", "caption"} lines
    # root: videos/                  # folder of <clip_name>.mp4
  recipe: {steps: 1000, vtm_steps: 60, batch_size: 64, lr: 1.0e-3}   # mugv.retrieval Recipe
"""

WORLD_DEFAULTS = {"num_frames": 8, "height": 32, "width": 32, "fps": 4.0}
DATA_FIELDS = {"source", "clips", "world", "jsonl", "root"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "retrieve",
        help="text-video retrieval with TW-BERT: train, evaluate (R@k), search a folder",
        description="Trains TW-BERT (trajectory-word alignment), evaluates text-to-video and "
        "video-to-text retrieval, or searches a folder of videos with a text query.",
    )
    sub = p.add_subparsers(title="actions", metavar="ACTION", dest="action")
    sub.required = True

    t = sub.add_parser(
        "train",
        help="train a model from a config file",
        description="Trains TW-BERT with the two-stage CPU recipe (stage 1: VTC + fine-grained "
        "alignment against the frozen MiniLM; stage 2: + video-text matching) and writes "
        "OUT/model.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", nargs="?", help="YAML or TOML config (defaults without one)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override")
    t.add_argument("-o", "--out", required=True, help="output folder")
    t.set_defaults(func=run_train)

    e = sub.add_parser(
        "evaluate",
        help="R@1/5/10 and median rank of a trained model on a captioned video set",
        description="Embeds every video and caption once, ranks by contrastive similarity and "
        "re-ranks each query's top-k with the matching head (k=0: contrastive only).",
    )
    e.add_argument("--model", required=True, metavar="DIR", help="TWBert.save_pretrained folder")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--folder", metavar="DIR", help='videos + prompts.jsonl {"video", "prompt"}')
    src.add_argument("--jsonl", metavar="FILE", help='retrieval .jsonl {"clip_name", "caption"}')
    src.add_argument("--shards", metavar="DIR", help="clip shards (ShardWriter) with captions")
    src.add_argument("--world", type=int, metavar="N", help="the first N synthetic test clips")
    e.add_argument("--root", metavar="DIR", help="video folder of --jsonl (default: its folder)")
    e.add_argument("--k", type=int, default=16, help="VTM re-ranking depth (default 16, 0 = off)")
    e.add_argument("--out", metavar="JSON", help="also write the metrics to this file")
    e.set_defaults(func=run_evaluate)

    s = sub.add_parser(
        "search",
        help="rank the videos of a folder for a text query",
        description="Embeds every video under FOLDER once (unreadable files are skipped and "
        "named) and prints the best matches of each query: rank, score, path.",
    )
    s.add_argument("query", nargs="+", help="one or more text queries")
    s.add_argument("--model", required=True, metavar="DIR", help="TWBert.save_pretrained folder")
    s.add_argument("--videos", required=True, metavar="FOLDER", help="folder of video files")
    s.add_argument("--top", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--rerank", type=int, default=16, help="VTM re-ranking depth (0 = off)")
    s.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    s.set_defaults(func=run_search)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """mugv.retrieval's user errors (config, input) become one-line AppErrors."""

    def wrapped(args: argparse.Namespace) -> int:
        from mugv.retrieval import RetrievalError

        try:
            return fn(args)
        except RetrievalError as exc:
            raise AppError(str(exc)) from exc

    return wrapped


def _load_model(folder: str):
    from mugv.retrieval import TWBert

    path = Path(folder)
    if not path.is_dir():
        raise AppError(f"--model {path}: no such checkpoint folder")
    return TWBert.from_pretrained(path)


def _setup() -> None:
    import os

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mugv").setLevel(logging.INFO)
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(torch.get_num_threads(), 4))


# ---- train


def model_config(values: dict[str, Any]):
    """``model:`` section -> TWBertConfig: a preset, then its fields overridden."""
    from dataclasses import fields

    from mugv.retrieval import CONFIGS, TWBertConfig, VideoEncoderConfig

    values = dict(values)
    preset = values.pop("preset", "small")
    if preset not in CONFIGS:
        raise AppError(f"config model.preset={preset!r}: use one of {', '.join(CONFIGS)}")
    config = CONFIGS[preset]().to_dict()
    known = {f.name for f in fields(TWBertConfig)}
    for key, value in values.items():
        if key not in known:
            raise AppError(
                f"config model.{key}: unknown field; use preset or one of {sorted(known)}"
            )
        if key == "video":
            if not isinstance(value, dict):
                raise AppError("config model.video: must be a mapping of VideoEncoderConfig fields")
            video_known = {f.name for f in fields(VideoEncoderConfig)}
            for vkey in value:
                if vkey not in video_known:
                    raise AppError(
                        f"config model.video.{vkey}: unknown field; use one of {sorted(video_known)}"
                    )
            config["video"].update(value)
        else:
            config[key] = value
    try:
        return TWBertConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise AppError(f"config model: {exc}") from exc


def recipe_config(values: dict[str, Any]):
    from mugv.apps._training import build
    from mugv.retrieval.train import Recipe

    return build(Recipe, values, "recipe")


def training_data(model, data: dict[str, Any], *, split: str = "train"):
    """``data:`` section -> a `ClipSet` at the model's frame count and size."""
    from mugv.apps._training import check_fields
    from mugv.retrieval.data import ClipSet, load_world

    check_fields(data, DATA_FIELDS, "data")
    source = data.get("source", "world")
    v = model.config.video
    if source == "world":
        world = _world(data.get("world") or {}, clips=int(data.get("clips", 2000)), split=split)
        return load_world(
            world,
            split,
            int(data.get("clips", 2000)),
            num_frames=v.num_frames,
            image_size=v.image_size,
        )
    if source == "jsonl":
        import torch

        from mugv.data import load_retrieval_jsonl
        from mugv.retrieval import retrieval_set

        if not data.get("jsonl"):
            raise AppError("config data.jsonl: give the retrieval .jsonl file (source: jsonl)")
        path = Path(data["jsonl"])
        rs = retrieval_set(model, load_retrieval_jsonl(path), Path(data.get("root") or path.parent))
        for name, why in rs.skipped.items():
            print(f"skipped {name}: {why}", file=sys.stderr)
        captions: list[list[str]] = [[] for _ in rs.keys]
        for text, j in zip(rs.texts, rs.text_to_video):
            captions[j].append(text)
        n = len(rs.keys)
        return ClipSet(rs.frames, captions, [[] for _ in range(n)], [], torch.arange(n))
    raise AppError(f"config data.source={source!r}: use world or jsonl")


def _world(values: dict[str, Any], *, clips: int, split: str):
    from mugv.apps._training import build
    from mugv.data.world import SyntheticWorld, WorldConfig

    fields = {**WORLD_DEFAULTS, **values}
    size_key = f"{split}_size"
    fields[size_key] = max(int(fields.get(size_key, 0)), clips)
    return SyntheticWorld(build(WorldConfig, fields, "data.world"))


@_guard
def run_train(args: argparse.Namespace) -> int:
    from mugv.apps._training import check_fields, save_resolved, section

    config = load_config(args.config, args.set)
    check_fields(config, {"model", "data", "recipe", "out"}, "config")
    cfg = model_config(section(config, "model"))
    recipe = recipe_config(section(config, "recipe"))
    data_cfg = section(config, "data")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AppError(f"--out {out} is a file; give a folder")
    _setup()

    import torch

    from mugv.infra import single_process
    from mugv.retrieval import TWBert
    from mugv.retrieval.train import TextCache, train_retrieval

    with single_process(seed=recipe.seed) as info:
        torch.manual_seed(recipe.seed)
        model = TWBert(cfg)
        data = training_data(model, data_cfg)
        cache = None
        if recipe.freeze_text:
            cache = TextCache(model, [c for cs in data.captions for c in cs])
        stats = train_retrieval(model, data, recipe, info=info, cache=cache)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model")
    save_resolved(out / "config.yaml", config)
    (out / "train.json").write_text(json.dumps({"clips": len(data), **stats}, indent=2))
    print(f"{out / 'model'}\ttrained on {len(data)} clips")
    return 0


# ---- evaluate


def _read_folder(model, folder: Path):
    """A folder with prompts.jsonl -> RetrievalSet (one caption per line; a video may repeat)."""
    from mugv.data import CaptionRecord
    from mugv.retrieval import retrieval_set

    prompts = folder / "prompts.jsonl"
    if not prompts.is_file():
        raise AppError(f'{prompts}: no prompt file; write lines {{"video": ..., "prompt": ...}}')
    records: dict[str, CaptionRecord] = {}
    for n, line in enumerate(prompts.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            video, prompt = str(row["video"]), row["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AppError(
                f'{prompts}:{n}: expected {{"video": ..., "prompt": ...}} ({exc})'
            ) from exc
        if not isinstance(prompt, str):
            raise AppError(f"{prompts}:{n}: prompt must be a string, got {prompt!r:.40}")
        records.setdefault(video, CaptionRecord(key=video, source=video)).captions.append(prompt)
    if not records:
        raise AppError(f"{prompts}: holds no video")
    return retrieval_set(model, list(records.values()), folder)


def _read_shards(model, source: Path):
    import torch

    from mugv.data import ShardDataset
    from mugv.retrieval import RetrievalSet
    from mugv.retrieval.preprocess import clip_to_tensor

    v = model.config.video
    keys, frames, texts, text_to_video, skipped = [], [], [], [], {}
    for sample in ShardDataset(str(source), video_options={"num_frames": v.num_frames}):
        captions = [c for c in sample.captions if isinstance(c, str) and c.strip()]
        if sample.clip is None or not captions:
            skipped[sample.key] = "no clip" if sample.clip is None else "no non-empty caption"
            continue
        keys.append(sample.key)
        frames.append(clip_to_tensor(sample.clip, v.num_frames, v.image_size))
        texts += captions
        text_to_video += [len(keys) - 1] * len(captions)
    if not keys:
        raise AppError(f"--shards {source}: no sample with a clip and a caption")
    return RetrievalSet(keys, torch.stack(frames), texts, text_to_video, skipped)


def _read_world(model, count: int):
    from mugv.retrieval import RetrievalSet
    from mugv.retrieval.data import load_world

    if count < 2:
        raise AppError(f"--world {count}: evaluate on at least 2 clips")
    v = model.config.video
    data = load_world(
        _world({}, clips=count, split="test"),
        "test",
        count,
        num_frames=v.num_frames,
        image_size=v.image_size,
    )
    keys = [f"test/{i}" for i in range(count)]
    return RetrievalSet(keys, data.frames, [c[0] for c in data.captions], list(range(count)))


def format_table(metrics: dict[str, dict[str, float]]) -> str:
    lines = [f"{'direction':10s} {'R@1':>6s} {'R@5':>6s} {'R@10':>6s} {'MdR':>6s} {'MnR':>7s}"]
    for direction in ("t2v", "v2t"):
        m = metrics[direction]
        lines.append(
            f"{direction:10s} {m['R@1']:6.1f} {m['R@5']:6.1f} {m['R@10']:6.1f} "
            f"{m['MdR']:6.0f} {m['MnR']:7.1f}"
        )
    return "\n".join(lines)


@_guard
def run_evaluate(args: argparse.Namespace) -> int:
    if args.k < 0:
        raise AppError(f"--k {args.k}: use 0 (contrastive only) or a positive depth")
    _setup()
    from mugv.retrieval import evaluate_retrieval

    model = _load_model(args.model)
    if args.folder:
        folder = Path(args.folder)
        if not folder.is_dir():
            raise AppError(f"--folder {folder}: no such folder")
        rs = _read_folder(model, folder)
    elif args.jsonl:
        from mugv.data import load_retrieval_jsonl
        from mugv.retrieval import retrieval_set

        path = Path(args.jsonl)
        if not path.is_file():
            raise AppError(f"--jsonl {path}: no such file")
        rs = retrieval_set(model, load_retrieval_jsonl(path), Path(args.root or path.parent))
    elif args.shards:
        rs = _read_shards(model, Path(args.shards))
    else:
        rs = _read_world(model, args.world)
    for name, why in rs.skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    metrics = evaluate_retrieval(model, rs.frames, rs.texts, rs.text_to_video, k=args.k)
    print(f"{len(rs.keys)} videos, {len(rs.texts)} captions, re-rank top-{args.k}")
    print(format_table(metrics))
    if args.out:
        report = {"videos": len(rs.keys), "captions": len(rs.texts), "k": args.k, **metrics}
        report["skipped"] = rs.skipped
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


# ---- search


@_guard
def run_search(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise AppError(f"--top {args.top}: ask for at least 1 result")
    if args.rerank < 0:
        raise AppError(f"--rerank {args.rerank}: use 0 (contrastive only) or a positive depth")
    folder = Path(args.videos)
    if not folder.is_dir():
        raise AppError(f"--videos {folder}: no such folder")
    _setup()
    from mugv.retrieval import VideoLibrary

    model = _load_model(args.model)
    library = VideoLibrary.from_folder(model, folder)
    for path, why in library.skipped.items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    for query in args.query:
        if not query.strip():
            print("skipped an empty query: write some text", file=sys.stderr)
            continue
        hits = library.search(query, k=args.top, rerank=args.rerank)
        for rank, hit in enumerate(hits, 1):
            if args.json:
                row = {"query": query, "rank": rank, "score": hit.score, "path": hit.path}
                print(json.dumps(row))
            else:
                print(f"{rank}\t{hit.score:.4f}\t{hit.path}\t{query}")
    return 0

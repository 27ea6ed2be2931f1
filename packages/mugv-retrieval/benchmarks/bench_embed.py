"""Embedding throughput and the cost of a full retrieval evaluation.

Measures videos/s through the video encoder (batched, against one video at a time as the
reference), texts/s, and the wall time of an N x N text-video evaluation with top-k VTM
re-ranking (against contrastive-only ranking in the same run).

    python bench_embed.py --out result.json [--config small --n 1000 --k 16]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mugv.retrieval import CONFIGS, TWBert, embed_texts, embed_videos
from mugv.retrieval.retrieval import rerank_scores, retrieval_metrics


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench_embed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TWBert(CONFIGS[args.config]()).eval()
    v = model.config.video
    frames = torch.rand(args.n, v.num_frames, 3, v.image_size, v.image_size) * 2 - 1
    words = ["red", "blue", "green", "circle", "square", "moves", "left", "up", "a", "small"]
    g = torch.Generator().manual_seed(0)
    texts = [
        " ".join(words[j] for j in torch.randint(len(words), (8,), generator=g).tolist())
        for _ in range(args.n)
    ]

    n_ref = min(32, args.n)
    _, t_single = timed(
        lambda: [embed_videos(model, frames[i : i + 1], batch_size=1) for i in range(n_ref)]
    )
    videos, t_videos = timed(lambda: embed_videos(model, frames, batch_size=args.batch_size))
    text_index, t_texts = timed(lambda: embed_texts(model, texts))
    _, t_contrastive = timed(lambda: rerank_scores(model, text_index, videos, k=0))
    (t2v, v2t), t_rerank = timed(
        lambda: rerank_scores(model, text_index, videos, k=args.k, batch_size=256)
    )
    metrics = retrieval_metrics(t2v, v2t, list(range(args.n)))  # untrained: near chance
    t_eval = t_videos + t_texts + t_rerank
    rows = {
        "videos_per_s_batched": args.n / t_videos,
        "videos_per_s_one_at_a_time": n_ref / t_single,
        "batched_speedup": (args.n / t_videos) / (n_ref / t_single),
        "texts_per_s": args.n / t_texts,
        "contrastive_rank_s": t_contrastive,
        f"rerank_top{args.k}_s": t_rerank,
        "vtm_pairs_per_s": 2 * args.n * args.k / t_rerank,
        f"eval_{args.n}x{args.n}_top{args.k}_s": t_eval,
        "rerank_over_contrastive": t_rerank / t_contrastive,
    }
    print(f"{'config':28s} {args.config}  n={args.n} k={args.k} threads={args.threads}")
    for name, value in rows.items():
        print(f"{name:28s} {value:12.3f}")
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "results": rows, "untrained_metrics": metrics}, f, indent=2)


if __name__ == "__main__":
    main()

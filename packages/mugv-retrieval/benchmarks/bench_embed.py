"""Embedding throughput and the cost of a full retrieval evaluation.

Measures videos/s through the video encoder (batched, against one video at a time as the
reference), texts/s, the exact time of N x N contrastive ranking in both directions, and
top-k VTM re-ranking in both directions. Re-ranking is timed on the first
`--rerank-queries` queries of each direction (all of them by default); when fewer, the full
N x N time is extrapolated from the measured pairs/s and labelled as such.

    python bench_embed.py --out result.json [--n 1000 --k 16 --rerank-queries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mugv.retrieval import CONFIGS, TWBert, embed_texts, embed_videos
from mugv.retrieval.retrieval import rerank_scores, vtm_scores


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="small", choices=sorted(CONFIGS))
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--patch-pool", type=int, default=2)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--rerank-queries", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench_embed.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CONFIGS[args.config]()
    cfg.video.num_frames, cfg.patch_pool = args.frames, args.patch_pool
    cfg.__post_init__()
    model = TWBert(cfg).eval()
    v = cfg.video
    frames = torch.rand(args.n, v.num_frames, 3, v.image_size, v.image_size) * 2 - 1
    words = ["red", "blue", "green", "circle", "square", "moving", "left", "up", "a", "small"]
    g = torch.Generator().manual_seed(0)
    texts = [
        " ".join(words[j] for j in torch.randint(len(words), (12,), generator=g).tolist())
        for _ in range(args.n)
    ]

    n_ref = min(32, args.n)
    _, t_single = timed(
        lambda: [embed_videos(model, frames[i : i + 1], batch_size=1) for i in range(n_ref)]
    )
    videos, t_videos = timed(lambda: embed_videos(model, frames, batch_size=args.batch_size))
    text_index, t_texts = timed(lambda: embed_texts(model, texts))
    _, t_contrastive = timed(lambda: rerank_scores(model, text_index, videos, k=0))

    q = args.rerank_queries or args.n
    sim = text_index.embeds @ videos.embeds.T  # (N, N)

    def rerank_first_queries() -> int:
        """VTM on the top-k candidates of the first q queries of each direction."""
        top_v = sim[:q].topk(args.k, dim=1).indices  # (q, k) videos per text
        top_t = sim[:, :q].T.topk(args.k, dim=1).indices  # (q, k) texts per video
        rows = torch.arange(q)[:, None].expand(q, args.k).flatten()
        ti = torch.cat([rows, top_t.flatten()])
        vi = torch.cat([top_v.flatten(), rows])
        vtm_scores(model, text_index, videos, ti, vi, batch_size=256)
        return ti.shape[0]

    pairs, t_rerank = timed(rerank_first_queries)
    pairs_per_s = pairs / t_rerank
    full_rerank_s = 2 * args.n * args.k / pairs_per_s
    t_embed = t_videos + t_texts + t_contrastive  # the contrastive-only evaluation
    rows = {
        "videos_per_s_batched": args.n / t_videos,
        "videos_per_s_one_at_a_time": n_ref / t_single,
        "batched_over_single": (args.n / t_videos) / (n_ref / t_single),
        "texts_per_s": args.n / t_texts,
        f"contrastive_rank_{args.n}x{args.n}_s": t_contrastive,
        "vtm_pairs_per_s": pairs_per_s,
        f"rerank_top{args.k}_both_dirs_s": full_rerank_s,
        f"eval_{args.n}x{args.n}_contrastive_s": t_embed,
        f"eval_{args.n}x{args.n}_top{args.k}_s": t_embed + full_rerank_s,
        "eval_with_rerank_over_without": (t_embed + full_rerank_s) / t_embed,
    }
    label = "measured" if q == args.n else f"extrapolated from {q} queries per direction"
    print(
        f"config {args.config} frames={args.frames} pool={args.patch_pool} n={args.n} "
        f"k={args.k} threads={args.threads}; re-rank time {label}"
    )
    for name, value in rows.items():
        print(f"{name:34s} {value:12.3f}")
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "rerank_time": label, "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()

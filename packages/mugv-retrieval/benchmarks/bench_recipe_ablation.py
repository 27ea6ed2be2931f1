"""Stage-1 recipe ablation on the synthetic world: is the video encoder learning, and what helps?

One stage-1 run (VTC + fine-grained, frozen cached MiniLM) of the `small` model per call, with
the knobs the diagnosis varied: momentum EMA, distillation weight, text centring, fine-grained
weight. Every `--eval-every` steps it prints contrastive recall on 1000 test clips (strict and
same-caption) and on 1000 *training* clips (underfitting vs. overfitting), and the motion /
colour hard-negative pair accuracy. Steps/s and CPU seconds per step are printed too.

    OMP_NUM_THREADS=1 python bench_recipe_ablation.py --steps 200 --momentum 0.5 --alpha 0
    OMP_NUM_THREADS=1 python bench_recipe_ablation.py --steps 200 --momentum 0.995 --alpha 0.4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mugv.data.world import SyntheticWorld, WorldConfig
from mugv.retrieval import LossWeights, TWBert, TWBertObjective, small
from mugv.retrieval.data import hard_negatives, load_world
from mugv.retrieval.retrieval import (
    TextIndex,
    contrastive_similarity,
    embed_videos,
    rank_metrics,
    ranks,
    rerank_scores,
    retrieval_metrics,
)
from mugv.retrieval.train import PretrainBatches, TextCache


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--train-clips", type=int, default=4000)
    p.add_argument("--test-clips", type=int, default=1000)
    p.add_argument("--hard-negatives", type=int, default=200)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.5)
    p.add_argument("--alpha", type=float, default=0.0)
    p.add_argument("--queue", type=int, default=256)
    p.add_argument("--fine", type=float, default=1.0)
    p.add_argument("--center", type=int, default=1, help="1: centre the text sentence vector")
    p.add_argument("--text-cache", help="load/save the frozen MiniLM states here")
    p.add_argument("--out", default="bench_recipe_ablation.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    world = SyntheticWorld(
        WorldConfig(
            num_frames=8,
            height=32,
            width=32,
            fps=4.0,
            train_size=args.train_clips,
            test_size=args.test_clips,
        )
    )
    load = {"num_frames": 4, "image_size": 32}
    train = load_world(world, "train", args.train_clips, **load)
    test = load_world(world, "test", args.test_clips, **load)
    hard = {
        k: hard_negatives(world, test, k, limit=args.hard_negatives, **load)
        for k in ("motion", "colour")
    }

    cfg = small()
    cfg.video.num_frames = 4
    cfg.queue_size, cfg.momentum, cfg.distill_alpha = args.queue, args.momentum, args.alpha
    cfg.__post_init__()
    model = TWBert(cfg)
    model.text_encoder.requires_grad_(False)
    texts = [c for cs in train.captions for c in cs]
    eval_texts = [c[0] for c in test.captions] + hard["motion"].texts + hard["colour"].texts
    if args.text_cache and os.path.exists(args.text_cache):
        cache = TextCache(model, [])
        cache.items = torch.load(args.text_cache, weights_only=True)
    else:
        cache = TextCache(model, texts + eval_texts)
        if args.text_cache:
            torch.save(cache.items, args.text_cache)
    if args.center:
        model.set_text_center(cache.sentences(texts))

    def text_index(items: list[str]) -> TextIndex:
        _ids, mask, states = cache.batch(items)
        with torch.no_grad():
            return TextIndex(model.text_embed(states, mask), states, mask)

    def recall(data) -> dict:
        n = min(len(data), 1000)
        v = embed_videos(model, data.frames[:n], batch_size=128)
        t2v, v2t = rerank_scores(model, text_index([c[0] for c in data.captions[:n]]), v, k=0)
        pid = data.pair_ids[:n]
        same = [torch.nonzero(pid == pid[i]).flatten().tolist() for i in range(n)]
        out = retrieval_metrics(t2v, v2t, list(range(n)))
        out["same_caption_t2v"] = rank_metrics(ranks(t2v, same))
        return out

    def pair_accuracy(hn) -> float:
        s = contrastive_similarity(text_index(hn.texts), embed_videos(model, hn.frames)).numpy()
        i = np.arange(len(hn.texts))
        return float(100 * np.mean(s[i, i] > s[i, i ^ 1]))

    objective = TWBertObjective(model, LossWeights(vtm=0.0, mlm=0.0, fine=args.fine))
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.02)
    warm = max(args.steps // 10, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(s / args.steps, 1))))
    )
    batches = iter(PretrainBatches(model, train, args.batch_size, seed=0, cache=cache))
    result = {"args": vars(args), "evals": []}
    train_wall = train_cpu = 0.0
    for step in range(1, args.steps + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        objective.train()
        out = objective(*next(batches))
        opt.zero_grad()
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        train_wall += time.perf_counter() - t0
        train_cpu += time.process_time() - c0
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            te, tr = recall(test), recall(train)
            row = {
                "step": step,
                "test": te,
                "train": tr,
                "motion_pair_acc": pair_accuracy(hard["motion"]),
                "colour_pair_acc": pair_accuracy(hard["colour"]),
                "temperature": float(model.temp),
                "steps_per_s": step / train_wall,
                "cpu_s_per_step": train_cpu / step,
            }
            result["evals"].append(row)
            print(
                f"step {step}: test t2v R@1/5/10 {te['t2v']['R@1']:.1f}/{te['t2v']['R@5']:.1f}/"
                f"{te['t2v']['R@10']:.1f} MdR {te['t2v']['MdR']:.0f}, v2t R@5 "
                f"{te['v2t']['R@5']:.1f}, same-caption t2v R@5 "
                f"{te['same_caption_t2v']['R@5']:.1f} | train t2v R@5 {tr['t2v']['R@5']:.1f} | "
                f"motion {row['motion_pair_acc']:.1f}% colour {row['colour_pair_acc']:.1f}% | "
                f"temp {row['temperature']:.3f} | {row['steps_per_s']:.2f} steps/s, "
                f"{row['cpu_s_per_step']:.2f} CPU s/step",
                flush=True,
            )
            with open(args.out, "w") as f:
                json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""Train TW-BERT on the synthetic world on a CPU and evaluate retrieval, hard negatives, QA.

Recipe (`mugv.retrieval.train.Recipe`, CPU budget): the MiniLM text encoder is frozen, its
states cached once and its sentence vector centred on the training captions' mean; per seed,
stage 1 (`align`) aligns (VTC with momentum distillation + fine-grained VTC) the video encoder
to the text; stage 2 (`match`) forks the aligned model into the T2W model and the
patch-to-word baseline and trains each with VTC + fine-grained + VTM (MLM off). Evaluation
on the test split: 1k x 1k contrastive retrieval both ways (strict: only the clip itself is a
hit; same-caption: any clip with the same canonical caption is), top-k VTM re-ranking for the first `--rerank-queries` texts,
and the motion-only / colour-swap hard-negative galleries (each clip next to its edited twin),
re-ranked with k=2. QA: the seed-0 T2W model fine-tuned with the answer classifier.

    OMP_NUM_THREADS=1 python bench_train_world.py --seeds 3 --out result.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mugv.data.world import SyntheticWorld, WorldConfig
from mugv.infra import single_process
from mugv.retrieval import TWBert, small
from mugv.retrieval.data import AnswerVocab, hard_negatives, load_world
from mugv.retrieval.retrieval import (
    embed_texts,
    embed_videos,
    rank_metrics,
    ranks,
    rerank_scores,
    retrieval_metrics,
)
from mugv.retrieval.train import (
    QABatches,
    Recipe,
    TextCache,
    align,
    evaluate_qa,
    fit,
    match,
    qa_step,
)

VARIANTS = ("t2w", "p2w")


def build(cross_attention: str, num_answers: int, frames: int, args) -> TWBert:
    cfg = small()
    cfg.momentum = args.momentum
    cfg.distill_alpha = args.alpha
    cfg.video.num_frames = frames
    cfg.cross_attention = cross_attention
    cfg.num_answers = num_answers
    cfg.patch_pool = 2
    cfg.queue_size = 256
    cfg.__post_init__()
    model = TWBert(cfg)
    model.text_encoder.requires_grad_(False)
    return model


def evaluate(model, test, motion, colour, args) -> dict:
    model.eval()
    texts = [c[0] for c in test.captions]
    videos = embed_videos(model, test.frames, batch_size=128)
    text_index = embed_texts(model, texts)
    t2v_c, v2t_c = rerank_scores(model, text_index, videos, k=0)
    out = {"contrastive": retrieval_metrics(t2v_c, v2t_c, list(range(len(texts))))}
    # 14% of the 1k test clips share their canonical caption with another clip (single-object
    # scenes): no text can rank its own clip above those, so also count any of them a hit
    same = [
        torch.nonzero(test.pair_ids == test.pair_ids[i]).flatten().tolist()
        for i in range(len(texts))
    ]
    out["same_caption"] = {
        "t2v": rank_metrics(ranks(t2v_c, same)),
        "v2t": rank_metrics(ranks(v2t_c, same)),
    }
    q = args.rerank_queries
    sub = embed_texts(model, texts[:q])
    t2v, _ = rerank_scores(model, sub, videos, k=args.rerank_k, batch_size=128, directions=("t2v",))
    t2v0, _ = rerank_scores(model, sub, videos, k=0)
    out[f"first{q}_t2v_contrastive"] = retrieval_metrics(t2v0, t2v0.T, list(range(q)))["t2v"]
    out[f"first{q}_t2v_rerank{args.rerank_k}"] = retrieval_metrics(t2v, t2v.T, list(range(q)))[
        "t2v"
    ]
    for name, hn in (("motion", motion), ("colour", colour)):
        v = embed_videos(model, hn.frames, batch_size=128)
        t = embed_texts(model, hn.texts)
        res = {}
        for k in (0, 2):
            t2v_h, v2t_h = rerank_scores(model, t, v, k=k, batch_size=128)
            m = retrieval_metrics(t2v_h, v2t_h, hn.text_to_video)
            # pair accuracy: each text prefers its own video over the edited twin
            s = t2v_h.numpy()
            n = len(hn.texts) // 2
            own = s[np.arange(2 * n), np.arange(2 * n)]
            twin = s[np.arange(2 * n), np.arange(2 * n) ^ 1]
            m["pair_acc"] = float(100 * np.mean(own > twin))
            res["contrastive" if k == 0 else "rerank2"] = m
        out[f"hard_{name}"] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--train-clips", type=int, default=2000)
    p.add_argument("--test-clips", type=int, default=1000)
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--stage1-steps", type=int, default=600)
    p.add_argument("--stage2-steps", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vtm-lr", type=float, default=2e-4)
    p.add_argument("--fine", type=float, default=1.0)
    p.add_argument("--momentum", type=float, default=0.5, help="EMA of the momentum encoders")
    p.add_argument("--alpha", type=float, default=0.0, help="momentum distillation weight")
    p.add_argument(
        "--text-cache",
        help="file of the frozen MiniLM states of the captions: loaded when it exists, else "
        "written (the states depend on the captions only, not on the seed)",
    )
    p.add_argument("--vtm-batch", type=int, default=16)
    p.add_argument("--rerank-k", type=int, default=16)
    p.add_argument("--rerank-queries", type=int, default=100)
    p.add_argument("--hard-negatives", type=int, default=100)
    p.add_argument("--qa-steps", type=int, default=30)
    p.add_argument("--qa-test-clips", type=int, default=150)
    p.add_argument("--budget-s", type=float, default=760, help="no new seed after this")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_train_world.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mugv.retrieval.model").setLevel(logging.ERROR)  # truncation notes
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    world = SyntheticWorld(
        WorldConfig(
            num_frames=8,
            height=32,
            width=32,
            fps=4.0,
            seed=0,
            train_size=args.train_clips,
            test_size=args.test_clips,
        )
    )
    load = {"num_frames": args.frames, "image_size": 32}
    train = load_world(world, "train", args.train_clips, **load)
    test = load_world(world, "test", args.test_clips, **load)
    motion = hard_negatives(world, test, "motion", limit=args.hard_negatives, **load)
    colour = hard_negatives(world, test, "colour", limit=args.hard_negatives, **load)
    vocab = AnswerVocab.build(train.qa)
    result = {"args": vars(args), "seeds": {}, "setup_s": 0.0}
    with single_process(seed=0) as info:
        torch.manual_seed(0)
        base = build("t2w", len(vocab), args.frames, args)
        texts = [c for cs in train.captions for c in cs]
        if args.text_cache and os.path.exists(args.text_cache):
            cache = TextCache(base, [])
            cache.items = torch.load(args.text_cache, weights_only=True)
            missing = [t for t in texts if t not in cache.items]
            assert not missing, f"{args.text_cache} lacks {len(missing)} training captions"
        else:
            cache = TextCache(base, texts)
            if args.text_cache:
                torch.save(cache.items, args.text_cache)
        result["setup_s"] = time.perf_counter() - start
        print(
            f"setup {result['setup_s']:.0f}s: {len(train)} train, {len(test)} test clips, "
            f"{len(motion.texts) // 2} motion / {len(colour.texts) // 2} colour twins, "
            f"{len(vocab)} answers"
        )
        common = {"info": info, "log_every": 25, "weight_decay": 0.02}
        for seed in range(args.seeds):
            if time.perf_counter() - start > args.budget_s:
                print(f"budget reached: stopping after {seed} seeds")
                break
            torch.manual_seed(seed)
            model = build("t2w", len(vocab), args.frames, args)
            recipe = Recipe(
                steps=args.stage1_steps,
                vtm_steps=args.stage2_steps,
                batch_size=args.batch_size,
                lr=args.lr,
                vtm_lr=args.vtm_lr,
                vtm_batch=args.vtm_batch,
                fine=args.fine,
                seed=seed,
            )
            runs = {"stage1": align(model, train, recipe, info=info, cache=cache)}
            aligned = {k: v.clone() for k, v in model.state_dict().items()}
            for variant in VARIANTS:
                torch.manual_seed(seed)
                fork = build(variant, len(vocab), args.frames, args)
                missing, unexpected = fork.load_state_dict(aligned, strict=False)
                assert all("trajectory" in k for k in [*missing, *unexpected])
                stage2 = match(fork, train, recipe, info=info, cache=cache)
                t0 = time.perf_counter()
                metrics = evaluate(fork, test, motion, colour, args)
                metrics.update(stage2=stage2, eval_s=time.perf_counter() - t0)
                runs[variant] = metrics
                c, s = metrics["contrastive"], metrics["same_caption"]
                print(
                    f"seed {seed} {variant}: t2v R@1/5/10 {c['t2v']['R@1']:.1f}/"
                    f"{c['t2v']['R@5']:.1f}/{c['t2v']['R@10']:.1f} MdR {c['t2v']['MdR']:.0f} | "
                    f"v2t R@1/5/10 {c['v2t']['R@1']:.1f}/{c['v2t']['R@5']:.1f}/"
                    f"{c['v2t']['R@10']:.1f} MdR {c['v2t']['MdR']:.0f} | same-caption t2v R@5 "
                    f"{s['t2v']['R@5']:.1f} | motion pair acc "
                    f"{metrics['hard_motion']['rerank2']['pair_acc']:.1f} (contrastive "
                    f"{metrics['hard_motion']['contrastive']['pair_acc']:.1f}) | "
                    f"{time.perf_counter() - start:.0f}s"
                )
                if seed == 0 and variant == "t2w" and args.qa_steps:
                    t0 = time.perf_counter()
                    qa_data = QABatches(fork, train, vocab, 32, seed=seed)
                    fit(
                        fork,
                        qa_step,
                        qa_data,
                        steps=args.qa_steps,
                        lr=2e-4,
                        warmup_steps=args.qa_steps // 10,
                        **common,
                    )
                    qa_test = load_world(world, "test", args.qa_test_clips, **load)
                    result["qa"] = evaluate_qa(fork, qa_test, vocab)
                    result["qa"]["majority_baseline"] = majority(qa_test, vocab)
                    result["qa"]["seconds"] = time.perf_counter() - t0
                    print(
                        f"QA accuracy {result['qa']['accuracy']:.1f}% on "
                        f"{result['qa']['count']:.0f} test pairs (majority "
                        f"{result['qa']['majority_baseline']:.1f}%)"
                    )
            result["seeds"][seed] = runs
            write(result, args.out, start)
    summary(result)
    write(result, args.out, start)


def majority(data, vocab) -> float:
    """Accuracy of answering each question type's most common answer (the text-only floor)."""
    from collections import Counter

    by_q: dict[str, Counter] = {}
    for pairs in data.qa:
        for p in pairs:
            by_q.setdefault(" ".join(p.question.split()[:3]), Counter())[p.answer] += 1
    hit = sum(c.most_common(1)[0][1] for c in by_q.values())
    return 100.0 * hit / max(sum(sum(c.values()) for c in by_q.values()), 1)


def summary(result: dict) -> None:
    seeds = result["seeds"]
    if not seeds:
        return
    print(f"\n{'variant':8s} {'metric':34s} " + " ".join(f"seed{s:<4}" for s in seeds) + "  mean")
    rows = [
        ("contrastive", "t2v", "R@1"),
        ("contrastive", "t2v", "R@5"),
        ("contrastive", "t2v", "R@10"),
        ("contrastive", "t2v", "MdR"),
        ("contrastive", "v2t", "R@1"),
        ("contrastive", "v2t", "R@5"),
        ("contrastive", "v2t", "R@10"),
        ("contrastive", "v2t", "MdR"),
        ("same_caption", "t2v", "R@1"),
        ("same_caption", "t2v", "R@5"),
        ("same_caption", "v2t", "R@5"),
    ]
    for variant in VARIANTS:
        any_run = next(iter(seeds.values()))[variant]
        rr = [k for k in any_run if k.startswith("first")]
        lines = [((a, b, c), f"1k {a} {b} {c}") for a, b, c in rows]
        lines += [((k, "R@1"), f"{k} R@1") for k in rr] + [((k, "R@5"), f"{k} R@5") for k in rr]
        for hn in ("hard_motion", "hard_colour"):
            for mode in ("contrastive", "rerank2"):
                for m in ("pair_acc", "t2v/R@1", "v2t/R@1", "t2v/MdR"):
                    lines.append(((hn, mode, *m.split("/")), f"{hn} {mode} {m}"))
        for path, label in lines:
            vals = []
            for s in seeds:
                node = seeds[s][variant]
                for key in path:
                    node = node[key]
                vals.append(node)
            print(
                f"{variant:8s} {label:34s} "
                + " ".join(f"{v:8.1f}" for v in vals)
                + f"  {np.mean(vals):6.1f}"
            )


def write(result: dict, path: str, start: float) -> None:
    result["total_s"] = time.perf_counter() - start
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

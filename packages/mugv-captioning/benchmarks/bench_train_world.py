"""TSG on the synthetic world, trained on this CPU: cross-entropy, then SCST; MoE vs no-expert
over seeds; routing weights per part of speech of the generated words.

    timeout 1500 nice -n 5 python bench_train_world.py --out result.json

Reports, on the world's held-out test split (half of its scenes hold compositions never seen
in training), beam-5 BLEU-4 / METEOR / ROUGE-L / CIDEr-D of: the MoE model after
cross-entropy (seed 0), the same model after SCST (ratio SCST/XE), and the MoE vs no-expert
ablation after cross-entropy over ``--seeds`` (mean and spread, ratio). Single-threaded: the
CPU is shared, and an oversubscribed 2-thread torch is many times slower than 1 thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time

import torch
from _world_setup import MAX_LENGTH, evaluate, new_model, train_xe, world_data

from mugv.captioning import CaptionCollator, routing_by_word_class, scst_loss
from mugv.captioning.metrics import CiderD, Meteor, ptb_tokenize
from mugv.data.world import COLOURS, SHAPES

WORD_CLASSES = {
    **{w: "noun" for w in (*SHAPES, "disc")},
    **{w: "adjective" for w in (*COLOURS, "small", "little", "large", "big")},
    **{w: "verb" for w in ("moving", "moves", "drifting", "staying", "stays", "resting", "is")},
    **{w: "preposition" for w in ("above", "below", "of", "to")},
}


def train_scst(model, examples, collate, words, cider, *, steps, batch_size, lr, seed):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start, rewards = time.perf_counter(), []
    for _ in range(steps):
        batch = collate(rng.sample(examples, batch_size))
        stats = scst_loss(model, batch, words, cider, num_samples=5, generator=gen)
        opt.zero_grad(set_to_none=True)
        stats.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rewards.append(stats.reward)
    n = max(1, min(10, len(rewards)))
    return {
        "first_reward": sum(rewards[:n]) / n,
        "last_reward": sum(rewards[-n:]) / n,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--xe-steps", type=int, default=150)
    p.add_argument("--scst-steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--scst-batch", type=int, default=16)
    p.add_argument("--scst-lr", type=float, default=2e-4)
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train_ex, test_ex, words, labels = world_data(args.train, args.test)
    collate = CaptionCollator(words, labels, max_length=MAX_LENGTH)
    print(
        f"world: {len(train_ex)} train / {len(test_ex)} test graphs, {len(words)} words, "
        f"{len(labels)} labels"
    )
    xe_kw = dict(steps=args.xe_steps, batch_size=args.batch, warmup=args.xe_steps // 4, factor=0.2)
    runs = {}
    main_model = None
    for seed in args.seeds:
        for variant in ("moe", "no-expert"):
            model = new_model(words, labels, seed, use_experts=variant == "moe")
            fit = train_xe(model, train_ex, collate, **xe_kw, seed=seed)
            scores, _, _ = evaluate(model, test_ex, collate, words)
            runs[f"{variant}/seed{seed}"] = {"variant": variant, "seed": seed, **fit, **scores}
            print(
                f"  xe {variant:9s} seed {seed}: CIDEr-D {scores['CIDEr-D']:.3f} "
                f"BLEU-4 {scores['BLEU-4']:.3f} loss {fit['final_loss']:.3f} "
                f"({fit['seconds']:.0f} s)",
                flush=True,
            )
            if variant == "moe" and seed == args.seeds[0]:
                main_model = model
    ablation = {}
    for variant in ("moe", "no-expert"):
        c = [r["CIDEr-D"] for r in runs.values() if r["variant"] == variant]
        b = [r["BLEU-4"] for r in runs.values() if r["variant"] == variant]
        ablation[variant] = {
            "CIDEr-D mean": statistics.mean(c),
            "CIDEr-D std": statistics.stdev(c) if len(c) > 1 else 0.0,
            "BLEU-4 mean": statistics.mean(b),
            "n": len(c),
        }

    with Meteor() as meteor:
        xe_scores, xe_decoded, _ = evaluate(
            main_model, test_ex, collate, words, meteor=meteor, keep_decoded=True
        )
        xe_routing = routing_by_word_class(_cat(xe_decoded), words, WORD_CLASSES)
        cider = CiderD([[" ".join(ptb_tokenize(c)) for c in e.captions] for e in train_ex])
        scst_fit = train_scst(
            main_model,
            train_ex,
            collate,
            words,
            cider,
            steps=args.scst_steps,
            batch_size=args.scst_batch,
            lr=args.scst_lr,
            seed=args.seeds[0],
        )
        scst_scores, scst_decoded, hyps = evaluate(
            main_model, test_ex, collate, words, meteor=meteor, keep_decoded=True
        )
        scst_routing = routing_by_word_class(_cat(scst_decoded), words, WORD_CLASSES)

    metrics = ["BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"]
    print(f"\nheld-out test split ({len(test_ex)} graphs), beam 5, MoE seed {args.seeds[0]}:")
    print(f"{'model':10s}" + "".join(f"{m:>10s}" for m in metrics))
    for name, s in (("XE", xe_scores), ("XE+SCST", scst_scores)):
        print(f"{name:10s}" + "".join(f"{s[m]:10.3f}" for m in metrics))
    ratio = scst_scores["CIDEr-D"] / xe_scores["CIDEr-D"]
    print(
        f"SCST / XE CIDEr-D ratio: {ratio:.3f} (reward {scst_fit['first_reward']:.3f} -> "
        f"{scst_fit['last_reward']:.3f} over {args.scst_steps} steps, {scst_fit['seconds']:.0f} s)"
    )
    print(f"\nablation after XE, {len(args.seeds)} seeds (CIDEr-D mean +- std):")
    for variant, a in ablation.items():
        print(
            f"  {variant:9s} {a['CIDEr-D mean']:.3f} +- {a['CIDEr-D std']:.3f}  "
            f"(BLEU-4 {a['BLEU-4 mean']:.3f})"
        )
    abl_ratio = ablation["moe"]["CIDEr-D mean"] / ablation["no-expert"]["CIDEr-D mean"]
    print(f"  MoE / no-expert CIDEr-D ratio: {abl_ratio:.3f}")
    for name, table in (("XE", xe_routing), ("XE+SCST", scst_routing)):
        print(f"\nrouting weight per word class ({name} model, mean over layers and words):")
        print(f"{'class':12s}{'object':>9s}{'attribute':>10s}{'relation':>9s}{'words':>7s}")
        for cls, row in table.items():
            print(
                f"{cls:12s}{row['object']:9.3f}{row['attribute']:10.3f}{row['relation']:9.3f}"
                f"{row['count']:7d}"
            )
    examples = [(ex.captions[0], hyps[ex.key]) for ex in test_ex[:3]]
    for ref, hyp in examples:
        print(f"\n  ref: {ref}\n  gen: {hyp}")
    total = time.perf_counter() - t0
    print(f"\ntotal {total:.0f} s")
    result = {
        "config": vars(args),
        "machine": platform.processor() or platform.machine(),
        "torch_threads": 1,
        "xe": xe_scores,
        "scst": scst_scores,
        "scst_over_xe": ratio,
        "scst_fit": scst_fit,
        "ablation": ablation,
        "moe_over_no_expert": abl_ratio,
        "runs": runs,
        "routing": {"xe": xe_routing, "scst": scst_routing},
        "samples": examples,
        "seconds": total,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


def _cat(decoded):
    """One Decoded from several batches (padded to the longest)."""
    from mugv.captioning import Decoded

    width = max(d.tokens.shape[1] for d in decoded)

    def pad(t, value):
        return torch.nn.functional.pad(
            t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1]), value=value
        )

    return Decoded(
        torch.cat([pad(d.tokens, 0) for d in decoded]),
        torch.cat([d.scores for d in decoded]),
        torch.cat([pad(d.routing, 0.0) for d in decoded]),
    )


if __name__ == "__main__":
    main()

"""Decoding throughput of the small TSG on CPU: beam-5 captions/s, against greedy and batch 1.

    python bench_decode.py --out result.json

A small model is first trained briefly with cross-entropy on the synthetic world, so captions
have realistic lengths (an untrained model runs every caption to the length limit). Then the
same test graphs are captioned with beam 5 in batches of ``--batch``, with beam 5 one graph at a
time, and greedily in batches (the reference); ratios are to the batched beam-5 figure.
Single-threaded (the CPU is shared).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from _world_setup import MAX_LENGTH, new_model, train_xe, world_data

from mugv.captioning import CaptionCollator, beam_search, greedy


def timed(fn, graphs_batches) -> tuple[float, float]:
    """(captions per second, mean words per caption) over all batches."""
    start, words, n = time.perf_counter(), 0, 0
    for g in graphs_batches:
        out = fn(g)
        words += int(out.lengths().sum())
        n += out.tokens.shape[0]
    return n / (time.perf_counter() - start), words / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--graphs", type=int, default=100)
    p.add_argument("--batch", type=int, default=25)
    p.add_argument("--xe-steps", type=int, default=150)
    args = p.parse_args()
    torch.set_num_threads(1)
    train_ex, test_ex, words, labels = world_data(1000, args.graphs)
    collate = CaptionCollator(words, labels, max_length=MAX_LENGTH)
    model = new_model(words, labels, seed=0, use_experts=True)
    train_xe(
        model,
        train_ex,
        collate,
        steps=args.xe_steps,
        batch_size=32,
        warmup=max(1, args.xe_steps // 4),
        factor=0.2,
        seed=0,
    )
    model.eval()
    batched = [
        collate(test_ex[i : i + args.batch]).graphs for i in range(0, len(test_ex), args.batch)
    ]
    singles = [collate([e]).graphs for e in test_ex[: max(1, args.graphs // 5)]]
    rows = {
        f"beam-5, batch {args.batch}": timed(lambda g: beam_search(model, g, beam_size=5), batched),
        "beam-5, batch 1": timed(lambda g: beam_search(model, g, beam_size=5), singles),
        f"greedy, batch {args.batch}": timed(lambda g: greedy(model, g), batched),
    }
    ref = rows[f"beam-5, batch {args.batch}"][0]
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"small TSG ({n_params / 1e6:.2f} M parameters), {args.graphs} world test graphs, 1 thread"
    )
    print(f"{'decoding':22s}{'captions/s':>12s}{'words/cap':>11s}{'ratio':>8s}")
    for name, (rate, length) in rows.items():
        print(f"{name:22s}{rate:12.1f}{length:11.1f}{rate / ref:8.2f}")
    with open(args.out, "w") as f:
        json.dump(
            {
                "machine": platform.processor() or platform.machine(),
                "parameters": n_params,
                "config": vars(args),
                "rows": {
                    k: {"captions_per_s": r, "words_per_caption": w, "ratio": r / ref}
                    for k, (r, w) in rows.items()
                },
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()

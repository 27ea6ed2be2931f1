"""Muon's orthogonalisation: the short-side (Gram) iteration against the direct one.

    python bench_muon.py --out result.json

For each set of matrices (the `mugv demo` MUGDiT's block matrices, width 192 and depth 4, and
one 1B-width MLP matrix) `orthogonalize` runs 5 Newton-Schulz steps in float32 with
`gram=False` (the direct iteration, X <- a X + (b G + c G^2) X) and with the default (the
short-side iteration for matrices at least twice as long as wide). Rounds alternate and each
takes the process CPU time, so a busy shared machine slows both alike; the ratio of the
medians is reported. `max_dev` is the largest entry-wise gap to the float64 direct answer,
relative to its largest entry, on a momentum-like input (singular values spanning 1e3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mugv.infra.muon import orthogonalize

# (rows, cols): count. The demo's 4 MUGDiT blocks: q, out and cross q / out 192 x 192; the
# fused qkv 576 x 192; cross kv 384 x 192; MLP 768 x 192 and 192 x 768; adaLN tables 6 x 192.
SETS = {
    "demo MUGDiT blocks (width 192, depth 4)": {
        (192, 192): 12,
        (6, 192): 4,
        (576, 192): 4,
        (384, 192): 4,
        (768, 192): 4,
        (192, 768): 4,
    },
    "1B MLP matrix (4608 x 1152)": {(4608, 1152): 1},
}


def momentum_like(shape: tuple[int, int], count: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(count, *shape, generator=gen, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    spectrum = torch.logspace(0, -3, u.shape[-1], dtype=x.dtype)
    return u @ torch.diag_embed(spectrum.expand(count, -1)) @ vh


def run_set(shapes: dict[tuple[int, int], int], rounds: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    stacks = [momentum_like(s, k, gen) for s, k in shapes.items()]
    f32 = [s.float() for s in stacks]
    times: dict[bool | None, list[float]] = {False: [], None: []}
    for _ in range(rounds):
        for mode in times:
            t0 = time.process_time()
            for s in f32:
                orthogonalize(s, 5, gram=mode)
            times[mode].append(time.process_time() - t0)
    refs = [orthogonalize(s, 5, gram=False) for s in stacks]  # float64, direct
    dev = {
        mode: max(
            float((orthogonalize(s32, 5, gram=mode).double() - ref).abs().max() / ref.abs().max())
            for s32, ref in zip(f32, refs)
        )
        for mode in times
    }
    direct, short = statistics.median(times[False]), statistics.median(times[None])
    return {
        "direct_ms": direct * 1e3,
        "short_side_ms": short * 1e3,
        "speedup": direct / short,
        "direct_max_dev": dev[False],
        "short_side_max_dev": dev[None],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: run_set(shapes, args.rounds) for name, shapes in SETS.items()}
    print(
        f"{'matrices':<42}{'direct ms':>10}{'short ms':>10}{'speedup':>9}{'dev direct':>12}"
        f"{'dev short':>11}"
    )
    for name, r in results.items():
        print(
            f"{name:<42}{r['direct_ms']:>10.1f}{r['short_side_ms']:>10.1f}{r['speedup']:>8.2f}x"
            f"{r['direct_max_dev']:>12.1e}{r['short_side_max_dev']:>11.1e}"
        )
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "sets": results}, indent=1))


if __name__ == "__main__":
    main()

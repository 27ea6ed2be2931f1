"""Curation benchmark: throughput per CPU core, share of time per stage, and accuracy.

Builds a synthetic-world corpus with known answers (multi-shot videos with known cuts, blurred,
static, overlaid and duplicated variants, 20% broken files), curates it in one process (one
core), and reports clips/s, video-hours per hour per core, the share of time of each stage,
cut-detection F1 at +-1 frame and each filter's precision and recall.

    python bench_curation.py --videos 60 --out curation.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mugv.data.curation import CurationConfig, read_manifest, run_curation
from mugv.data.curation.synthetic import evaluate_curation, make_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-curation.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        items = make_corpus(
            Path(tmp) / "corpus", args.videos, seed=args.seed, height=args.height, width=args.width
        )
        corpus_s = time.perf_counter() - t0
        result = run_curation([i.path for i in items], Path(tmp) / "out", CurationConfig())
        quality = evaluate_curation(items, read_manifest(result.manifest))
    summary = result.summary()
    stages = result.stage_seconds()
    total_stage = sum(stages.values())
    report = {
        "videos": args.videos,
        "size": [args.height, args.width],
        "corpus_seconds": corpus_s,
        "summary": summary,
        "clips_per_second_per_core": summary["clips"] / result.seconds,
        "video_hours_per_hour_per_core": summary["video_hours_per_hour"],
        "stage_share": {k: v / total_stage for k, v in stages.items()},
        "quality": quality,
    }
    print(f"curation of {args.videos} videos at {args.height}x{args.width}, 1 process")
    print(
        f"{'inputs / clips / kept':<34} {summary['inputs']} / {summary['clips']} / {summary['kept']}"
    )
    print(f"{'wall seconds':<34} {result.seconds:.1f}")
    print(f"{'clips/s per core':<34} {report['clips_per_second_per_core']:.2f}")
    print(f"{'video-hours/hour per core':<34} {summary['video_hours_per_hour']:.1f}")
    print("share of time per stage:")
    for stage, share in report["stage_share"].items():
        print(f"  {stage:<32} {100 * share:5.1f}%")
    cuts = quality["cuts"]
    print(
        f"{'cut F1 (+-1 frame)':<34} {cuts['f1']:.3f} (P {cuts['precision']:.3f} R {cuts['recall']:.3f})"
    )
    for name, m in quality["filters"].items():
        print(f"  {name + ' precision / recall':<32} {m['precision']:.3f} / {m['recall']:.3f}")
    print(f"{'inputs unaccounted for':<34} {len(quality['unaccounted'])}")
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

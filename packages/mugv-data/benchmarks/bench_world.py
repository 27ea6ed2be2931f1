"""Synthetic-world generation and oracle throughput, plus oracle accuracy under degradation.

    python bench_world.py --out result.json [--quick]

Generation (`SyntheticWorld.sample`, 16 x 64 x 64 with captions, scene graph, trajectories
and QA) is compared with its rendering alone and with the reference an anti-aliased renderer
would otherwise use: 4x4 supersampling of hard shape masks. The oracle's clips/s and its
accuracy are measured on clean clips and after Gaussian blur (sigma 1), noise (8/255) and
H.264 (yuv420p, crf 35) at 32, 64 and 128 pixels.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from mugv.data.oracle import SCORE_KEYS, Oracle
from mugv.data.video import read_video, write_video
from mugv.data.world import PALETTE, SceneSpec, SyntheticWorld, WorldConfig
from mugv.data.world._render import coverage


def supersampled(spec: SceneSpec, num_frames: int, size: int, fps: float, k: int = 4) -> np.ndarray:
    """Reference renderer: hard masks on a k-times finer grid, averaged down."""
    fine = size * k
    xs = np.arange(fine, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(fine, dtype=np.float32)[:, None] + 0.5
    out = np.empty((num_frames, fine, fine, 3), np.float32)
    out[:] = spec.background
    for t in range(num_frames):
        for obj in spec.objects:
            x, y, w, h = obj.box(t / fps, fine, fine)
            mask = coverage(obj.shape, x + w / 2, y + h / 2, w, xs, ys) > 0.5
            out[t][mask] = PALETTE[obj.colour]
    return out.reshape(num_frames, size, k, size, k, 3).mean((2, 4)).round().astype(np.uint8)


def degrade(frames: np.ndarray, fps: float, seed: int, folder: Path) -> np.ndarray:
    """Blur sigma 1, noise sigma 8/255, H.264 crf 35 (yuv420p), decoded back."""
    rng = np.random.default_rng(seed)
    k = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    k /= k.sum()
    x = np.pad(frames.astype(np.float64), ((0, 0), (3, 3), (3, 3), (0, 0)), mode="edge")
    H, W = frames.shape[1:3]
    x = sum(k[i] * x[:, i : i + H] for i in range(7))
    x = sum(k[i] * x[:, :, i : i + W] for i in range(7))
    x = np.clip(np.rint(x + rng.normal(0, 8, x.shape)), 0, 255).astype(np.uint8)
    return read_video(write_video(folder / f"{seed}.mp4", x, fps=fps, crf=35)).frames


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_world.json"))
    parser.add_argument("--quick", action="store_true", help="fewer clips (a smoke run)")
    args = parser.parse_args()
    n_gen, n_oracle = (20, 10) if args.quick else (200, 100)

    world = SyntheticWorld(WorldConfig(num_frames=16, height=64, width=64, fps=8))
    specs = [world.scene("train", i) for i in range(n_gen)]
    world.sample("train", 0)  # warm up
    rows = {
        "sample clips/s (16x64x64, annotated)": rate(lambda i: world.sample("train", i), n_gen),
        "render clips/s (analytic coverage)": rate(lambda i: world.render(specs[i]), n_gen),
        "render clips/s (4x4 supersampling ref)": rate(
            lambda i: supersampled(specs[i], 16, 64, 8.0), n_gen
        ),
    }
    rows["render speed-up vs supersampling"] = (
        rows["render clips/s (analytic coverage)"] / rows["render clips/s (4x4 supersampling ref)"]
    )
    aa_error = float(
        np.mean(
            [
                np.abs(world.render(s).frames.astype(float) - supersampled(s, 16, 64, 8.0)).mean()
                for s in specs[:10]
            ]
        )
    )
    rows["analytic vs supersampled mean |diff| (0-255)"] = aa_error

    oracle = Oracle()
    accuracy = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (32, 64, 128):
            w = SyntheticWorld(WorldConfig(num_frames=16, height=size, width=size, fps=8))
            clips = [w.render(w.scene("test", i)).frames for i in range(n_oracle)]
            rows[f"oracle clips/s ({size}x{size}, clean)"] = rate(
                lambda i, clips=clips: oracle.parse(clips[i]), n_oracle
            )
            for name, frames in (
                ("clean", clips),
                ("blur+noise+h264", [degrade(c, 8.0, i, Path(tmp)) for i, c in enumerate(clips)]),
            ):
                scores = [oracle.score(frames[i], w.scene("test", i)) for i in range(n_oracle)]
                accuracy[f"{size}x{size} {name}"] = {
                    k: float(np.mean([s[k] for s in scores])) for k in SCORE_KEYS
                }
    rows["oracle / sample throughput ratio (64x64)"] = (
        rows["oracle clips/s (64x64, clean)"] / rows["sample clips/s (16x64x64, annotated)"]
    )

    width = max(map(len, rows))
    print(f"{'measure':<{width}}  value")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value:10.2f}")
    print(f"\noracle accuracy over {n_oracle} test clips of 16 frames")
    print(f"{'setting':<22}" + "".join(f"{k:>13}" for k in SCORE_KEYS))
    for setting, scores in accuracy.items():
        print(f"{setting:<22}" + "".join(f"{scores[k]:13.3f}" for k in SCORE_KEYS))
    result = {
        "benchmark": "world",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "clips_generation": n_gen,
        "clips_oracle": n_oracle,
        "throughput": rows,
        "oracle_accuracy": accuracy,
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

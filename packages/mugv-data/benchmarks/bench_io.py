"""Video and shard I/O throughput: sampled decoding vs decode-everything, encoding, shards.

    python bench_io.py --out result.json [--quick]

Sampled decoding (`read_video(num_frames=n)`, which seeks by GOP) is compared, on the same
file, against the reference a naive loader does: decode every frame, then index.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from mugv.data.shards import ShardDataset, ShardWriter
from mugv.data.video import encode_video, read_video
from mugv.data.world import SyntheticWorld, WorldConfig


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of `repeats` calls (seconds)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def moving_frames(frames: int, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 of smooth moving texture: a stand-in for camera footage."""
    y, x = np.mgrid[0:size, 0:size]
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        out[t, ..., 0] = 128 + 100 * np.sin((x + 3 * t) / 9.0)
        out[t, ..., 1] = 128 + 100 * np.cos((y - 2 * t) / 13.0)
        out[t, ..., 2] = 128 + 60 * np.sin((x + y + t) / 21.0)
    return out


def moving_video(path: Path, *, frames: int, size: int, fps: int, gop: int) -> Path:
    """`moving_frames` as x264 at crf 23 with a keyframe every `gop` frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "g": str(gop), "keyint_min": str(gop)}
        stream.codec_context.time_base = Fraction(1, fps)
        for t, image in enumerate(moving_frames(frames, size)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def decode_everything_then_index(path: Path, indices: np.ndarray) -> np.ndarray:
    """The naive reference: every frame decoded and converted, then the wanted ones kept."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return np.stack([frames[i] for i in indices])


def bench_decode(tmp: Path, quick: bool) -> list[dict]:
    rows = []
    num_frames, size, fps = (120, 128, 30) if quick else (300, 256, 30)
    for gop in (30, 250):
        path = moving_video(tmp / f"gop{gop}.mp4", frames=num_frames, size=size, fps=fps, gop=gop)
        for n in (4, 16):
            sampled = read_video(path, num_frames=n)
            idx = np.round(np.linspace(0, num_frames - 1, n)).astype(int)
            reference = decode_everything_then_index(path, idx)
            assert np.array_equal(sampled.frames, reference), "sampled decode differs"
            t_sampled = best_of(lambda p=path, k=n: read_video(p, num_frames=k), 3)
            t_full = best_of(lambda p=path, i=idx: decode_everything_then_index(p, i), 3)
            rows.append(
                {
                    "file": f"{num_frames} frames {size}x{size} @{fps} fps, GOP {gop}",
                    "frames_kept": n,
                    "sampled_s": t_sampled,
                    "everything_s": t_full,
                    "sampled_frames_per_s": n / t_sampled,
                    "everything_frames_per_s": n / t_full,
                    "speedup": t_full / t_sampled,
                }
            )
    return rows


def bench_encode(quick: bool) -> list[dict]:
    rows = []
    world = SyntheticWorld(WorldConfig(num_frames=16, height=64, width=64, fps=8, seed=0))
    clips = [world.sample("train", i).clip for i in range(8 if quick else 32)]
    for pix_fmt in ("yuv420p", "yuv444p"):
        seconds = best_of(lambda f=pix_fmt: [encode_video(c, pix_fmt=f) for c in clips], 2)
        rows.append(
            {
                "what": f"encode world clips 16x64x64, crf 18, {pix_fmt}",
                "frames_per_s": 16 * len(clips) / seconds,
                "clips_per_s": len(clips) / seconds,
            }
        )
    big = moving_frames(32, 256)
    seconds = best_of(lambda: encode_video(big, fps=24), 2)
    rows.append(
        {"what": "encode 32x256x256 texture, crf 18, yuv420p", "frames_per_s": 32 / seconds}
    )
    return rows


def bench_shards(tmp: Path, quick: bool) -> list[dict]:
    world = SyntheticWorld(WorldConfig(num_frames=16, height=64, width=64, fps=8, seed=0))
    n = 32 if quick else 128
    items = [world.sample("train", i) for i in range(n)]
    latent = np.zeros((4, 4, 8, 8), np.float32)
    directory = tmp / "shards"
    start = time.perf_counter()
    with ShardWriter(directory, max_count=32) as writer:
        for item in items:
            writer.write(item, latent=latent)
    write_s = time.perf_counter() - start
    rows = [{"what": "write (mp4 + json + safetensors)", "clips_per_s": n / write_s}]
    for label, kwargs, workers in [
        ("read + decode mp4", {}, 0),
        ("read + decode mp4, 2 workers (incl. start-up)", {}, 2),
        ("read, no video decode (latents only)", {"decode_video": False}, 0),
    ]:
        ds = ShardDataset(directory, **kwargs)

        def read(ds: ShardDataset = ds, workers: int = workers) -> int:
            if workers == 0:
                return sum(1 for _ in ds)
            loader = torch.utils.data.DataLoader(
                ds, batch_size=None, num_workers=workers, multiprocessing_context="fork"
            )
            return sum(1 for _ in loader)

        assert read() == n
        rows.append({"what": label, "clips_per_s": n / best_of(read, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="smaller files, fewer clips")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        decode = bench_decode(Path(tmp), args.quick)
        encode = bench_encode(args.quick)
        shards = bench_shards(Path(tmp), args.quick)

    print("\nSampled decoding (seeks by GOP) vs decode-everything-then-index, same file")
    print(f"{'file':<42} {'kept':>4} {'sampled fr/s':>13} {'all fr/s':>9} {'speedup':>8}")
    for r in decode:
        print(
            f"{r['file']:<42} {r['frames_kept']:>4} {r['sampled_frames_per_s']:>13.1f} "
            f"{r['everything_frames_per_s']:>9.1f} {r['speedup']:>7.1f}x"
        )
    print("\nH.264 encoding")
    for r in encode:
        print(f"{r['what']:<48} {r['frames_per_s']:>9.0f} frames/s")
    print("\nShards (world clips 16x64x64)")
    for r in shards:
        print(f"{r['what']:<48} {r['clips_per_s']:>9.1f} clips/s")
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "pyav": av.__version__,
        "quick": args.quick,
        "decode": decode,
        "encode": encode,
        "shards": shards,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""Codec throughput and memory on this CPU: encode/decode frames/s, and decode peak memory.

    python bench_codec.py --out result.json [--checkpoint bench-out/vae-world]

1. Frames/s of `encode` and `decode` for the `small` config (17 x 128 x 128) and the
   `reference` config at a small size (9 x 64 x 64), random weights (speed does not depend on
   them); ratio = reference / small.
2. Peak resident memory added by decoding videos of growing length at 256 x 256 with the
   `small` config, chunked (6 latent frames, the default), and unchunked (one chunk) at the
   longest length as the reference: each measurement runs in a fresh process that resets its
   peak RSS after setup (Linux /proc/self/clear_refs) and reports VmHWM - VmRSS; the output video
   itself (T x 3 x 256 x 256 float32) is included and listed.
3. With --checkpoint (a trained `save_pretrained` folder): PSNR between tiled (--tile pixels)
   and untiled decodes of the world's test clips, and between chunked and unchunked decodes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import torch

from mugv.vae import CONFIGS, VideoVAE, psnr


def _throughput(name: str, frames: int, size: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS[name]).eval()
    video = torch.rand(1, 3, frames, size, size) * 2 - 1
    z = vae.encode(video)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        z = vae.encode(video)
    enc = (time.perf_counter() - t0) / repeats
    vae.decode(z)
    t0 = time.perf_counter()
    for _ in range(repeats):
        vae.decode(z)
    dec = (time.perf_counter() - t0) / repeats
    return {
        "config": name,
        "video": f"{frames}x{size}x{size}",
        "encode_frames_per_s": frames / enc,
        "decode_frames_per_s": frames / dec,
        "encode_s": enc,
        "decode_s": dec,
    }


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _peak_decode(frames: int, size: int, chunk: int | None, queue) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS["small"]).eval()
    t, h, w = vae.latent_shape(frames, size, size)
    z = torch.randn(1, vae.latent_channels, t, h, w)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset the peak RSS (VmHWM) to the current RSS
    base = _rss_kib("VmRSS")
    video = vae.decode(z, chunk_latents=chunk or t)
    peak = _rss_kib("VmHWM")
    queue.put(((peak - base) / 1024, video.numel() * 4 / 2**20))  # MiB


def peak_decode_mib(frames: int, size: int, chunk: int | None) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_decode, args=(frames, size, chunk, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _quality(path: str, tile: int, clips: int) -> dict[str, float]:
    from mugv.data.world import SyntheticWorld, WorldConfig
    from mugv.vae import clips_to_batch

    vae = VideoVAE.from_pretrained(path).eval()
    world = SyntheticWorld(WorldConfig(num_frames=17, height=128, width=128, fps=8, seed=0))
    video = clips_to_batch([world.sample("test", i).clip for i in range(clips)])
    z = vae.encode(video)
    full = vae.decode(z, chunk_latents=z.shape[2])
    return {
        "video": f"{clips}x17x128x128",
        "tile": tile,
        "psnr_tiled_encode_decode_vs_untiled_db": psnr(
            vae.decode(vae.encode(video, tile=tile), chunk_latents=z.shape[2], tile=tile), full
        ),
        "psnr_chunked_decode_vs_unchunked_db": psnr(vae.decode(z, chunk_latents=1), full),
        "psnr_recon_untiled_db": psnr(full, video),
    }


def speed_table() -> dict:
    speed = [_throughput("small", 17, 128, 2), _throughput("reference", 9, 64, 1)]
    print(f"{'config':<10}{'video':<12}{'encode f/s':>12}{'decode f/s':>12}")
    for r in speed:
        print(
            f"{r['config']:<10}{r['video']:<12}{r['encode_frames_per_s']:>12.2f}"
            f"{r['decode_frames_per_s']:>12.2f}"
        )
    ratio = {k: speed[1][k] / speed[0][k] for k in ("encode_frames_per_s", "decode_frames_per_s")}
    print(
        f"reference / small frames/s: encode {ratio['encode_frames_per_s']:.4f}, "
        f"decode {ratio['decode_frames_per_s']:.4f}"
    )

    return {"speed": speed, "reference_over_small": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lengths", type=int, nargs="+", default=[25, 121])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--tile", type=int, default=64)
    p.add_argument("--skip-speed", action="store_true", help="only memory (and quality)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    result: dict = {"threads": args.threads}
    if not args.skip_speed:
        result |= speed_table()
    memory = []
    print(
        f"\n{'frames':>7}{'chunked MiB':>13}{'unchunked MiB':>15}{'output MiB':>12}  (small, "
        f"{args.size}x{args.size})"
    )
    for frames in args.lengths:
        chunked, out_mib = peak_decode_mib(frames, args.size, None)
        # unchunked (the reference point) only at the longest length: it costs a full decode
        whole = peak_decode_mib(frames, args.size, 0)[0] if frames == max(args.lengths) else None
        memory.append(
            {
                "frames": frames,
                "size": args.size,
                "chunked_peak_mib": chunked,
                "unchunked_peak_mib": whole,
                "output_mib": out_mib,
            }
        )
        shown = "-" if whole is None else f"{whole:.0f}"
        print(f"{frames:>7}{chunked:>13.0f}{shown:>15}{out_mib:>12.0f}")

    result["decode_memory"] = memory
    if args.checkpoint:
        result["quality"] = _quality(args.checkpoint, args.tile, 4)
        print("\n" + json.dumps(result["quality"], indent=1))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

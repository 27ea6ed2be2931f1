"""A curation test corpus with known answers, built from the synthetic world.

Multi-shot videos (world scenes concatenated, cut frames known), plus variants every filter
must catch — blurred, static, text-overlaid and re-encoded duplicates — and a share of broken
files (truncated, zero bytes, not a video, audio only). `make_corpus` returns the truth, so a
benchmark can report cut-detection F1 and each filter's precision and recall.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from mugv.data.video import write_video
from mugv.data.world import PALETTE, SyntheticWorld, WorldConfig

KINDS = ("clean", "blur", "static", "overlay", "duplicate")
BROKEN = ("truncated", "empty", "not_video", "audio_only")


@dataclass
class CorpusItem:
    path: str
    kind: str  # one of KINDS or BROKEN
    cuts: list[int] = field(default_factory=list)  # first frame of each shot after the first
    num_frames: int = 0
    duplicate_of: str | None = None
    still_shots: list[bool] = field(default_factory=list)  # shots in which nothing moves


def _shots(
    world: SyntheticWorld, rng: np.random.Generator, start: int, count: int
) -> tuple[list[np.ndarray], list[bool]]:
    frames, still = [], []
    for i in range(count):
        spec = world.scene("train", start + i)
        grey = _background_grey(spec, rng)
        tint = rng.integers(-15, 16, size=3)
        background = tuple(int(np.clip(grey + t, 0, 255)) for t in tint)
        spec = dataclasses.replace(spec, background=background)
        n = int(rng.integers(world.config.num_frames * 2 // 3, world.config.num_frames + 1))
        frames.append(world.render(spec, num_frames=n).frames)
        still.append(all(o.motion == "static" for o in spec.objects))
    return frames, still


def _background_grey(spec, rng: np.random.Generator, apart: float = 30.0) -> int:
    """A grey level whose luma differs from every object's by `apart`: an object of the same
    luma as the background has no luma edges or luma motion, which no luma filter can see."""
    lumas = [float(np.dot(PALETTE[o.colour], (0.299, 0.587, 0.114))) for o in spec.objects]
    greys = [g for g in range(30, 111) if all(abs(g - y) >= apart for y in lumas)]
    return int(rng.choice(greys)) if greys else 30


def _blur(frames: np.ndarray, radius: float) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.fromarray(f).filter(ImageFilter.GaussianBlur(radius))) for f in frames]
    )


def _overlay(frames: np.ndarray, text: str) -> np.ndarray:
    """Burns a caption bar into every frame, scaled with the frame like real subtitles."""
    h, w = frames.shape[1:3]
    scale = max(1, h // 64)
    bar = Image.new("RGBA", (min(w // scale, 7 * len(text) + 4), 14), (0, 0, 0, 255))
    ImageDraw.Draw(bar).text((2, 1), text, fill=(255, 255, 255, 255))
    bar = bar.resize((bar.width * scale, bar.height * scale), Image.NEAREST)
    out = []
    for f in frames:
        image = Image.fromarray(f)
        image.paste(bar, (2 * scale, h - bar.height - 3 * scale), bar)
        out.append(np.asarray(image))
    return np.stack(out)


def _write_audio_only(path: Path, seconds: float = 1.0) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(16000 * seconds))) * 0.3
        frame_size = 1024
        for i in range(0, len(samples), frame_size):
            chunk = samples[i : i + frame_size].astype(np.float32)[None, :]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = 16000
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def make_corpus(
    out_dir: str | Path,
    num_videos: int = 20,
    *,
    seed: int = 0,
    height: int = 96,
    width: int = 128,
    fps: float = 12.0,
    broken_fraction: float = 0.2,
) -> list[CorpusItem]:
    """Writes the corpus into `out_dir` (and ``truth.json``); returns its items."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = SyntheticWorld(
        WorldConfig(num_frames=25, height=height, width=width, fps=fps, seed=seed)
    )
    num_broken = round(num_videos * broken_fraction)
    kinds = [KINDS[i % len(KINDS)] for i in range(num_videos - num_broken)]
    kinds += [BROKEN[i % len(BROKEN)] for i in range(num_broken)]
    items: list[CorpusItem] = []
    clean: list[tuple[CorpusItem, np.ndarray]] = []
    scene_index = 0
    for i, kind in enumerate(kinds):
        path = out / f"video_{i:03d}_{kind}.mp4"
        item = CorpusItem(path=str(path), kind=kind)
        if kind in KINDS:
            if kind == "duplicate" and clean:
                original, frames = clean[int(rng.integers(len(clean)))]
                item.duplicate_of, item.cuts = original.path, list(original.cuts)
                item.still_shots = list(original.still_shots)
            else:
                count = int(rng.integers(2, 5)) if kind == "clean" else 1
                shots, item.still_shots = _shots(world, rng, scene_index, count)
                scene_index += count
                item.cuts = [int(c) for c in np.cumsum([len(s) for s in shots])[:-1]]
                frames = np.concatenate(shots)
                if kind == "blur":
                    frames = _blur(frames, radius=3.0)
                elif kind == "static":
                    frames = np.repeat(frames[:1], len(frames), axis=0)
                    item.still_shots = [True]
                elif kind == "overlay":
                    frames = _overlay(frames, f"LIVE NEWS {i:02d}")
            item.num_frames = len(frames)
            write_video(path, frames, fps=fps, crf=28 if kind == "duplicate" else 18)
            if kind == "clean":
                clean.append((item, frames))
        elif kind == "truncated":
            source = out / f".whole_{i:03d}.mp4"
            write_video(source, np.concatenate(_shots(world, rng, scene_index, 2)[0]), fps=fps)
            scene_index += 2
            data = source.read_bytes()
            path.write_bytes(data[: len(data) // 2])
            source.unlink()
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "not_video":
            path.write_text("this is a text file, not a video\n" * 20)
        elif kind == "audio_only":
            _write_audio_only(path)
        items.append(item)
    (out / "truth.json").write_text(json.dumps([dataclasses.asdict(x) for x in items], indent=1))
    return items


def _shot_bounds(item: CorpusItem) -> list[int]:
    return [0, *item.cuts, item.num_frames]


def _expected(item: CorpusItem, start: int, end: int) -> str:
    """What a perfect pipeline does with the clip ``[start, end)`` of `item`."""
    bounds = _shot_bounds(item)
    middle = (start + end) // 2
    shot = max(i for i, b in enumerate(bounds[:-1]) if b <= middle)
    if item.kind == "blur":  # the blur filter runs first
        return "blur"
    if item.kind == "static" or item.still_shots[shot]:
        return "still"
    return "overlay" if item.kind == "overlay" else "keep"


def evaluate_curation(items: list[CorpusItem], rows: list[dict], tolerance: int = 1) -> dict:
    """Cut-detection F1 (within `tolerance` frames), each filter's precision and recall, and the
    inputs the manifest does not account for, from `make_corpus` truth and manifest rows.

    "still" clips may be caught by the motion or the static filter; a duplicated pair of clips
    that both survive the filters counts as found when either copy is removed as a
    near-duplicate (which one depends on key order).
    """
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    unaccounted = [it.path for it in items if it.path not in by_source]
    tp = fp = fn = 0
    stages = {"blur": {"blur"}, "still": {"motion", "static"}, "overlay": {"overlay"}}
    counts = {name: {"tp": 0, "fp": 0, "fn": 0} for name in [*stages, "dedup", "broken"]}
    paired = {it.path for it in items if it.duplicate_of} | {
        it.duplicate_of for it in items if it.duplicate_of
    }
    for item in items:
        clip_rows = [r for r in by_source.get(item.path, []) if "start_frame" in r]
        broken = item.kind in BROKEN
        failed = any(r["status"] == "failed" for r in by_source.get(item.path, []))
        if broken or failed:
            counts["broken"]["tp" if broken and failed else "fn" if broken else "fp"] += 1
        if broken:
            continue
        cuts = sorted({r["start_frame"] for r in clip_rows} - {0})
        truth = list(item.cuts)
        matched = set()
        for c in cuts:
            hit = next((t for t in truth if abs(t - c) <= tolerance and t not in matched), None)
            if hit is None:
                fp += 1
            else:
                matched.add(hit)
                tp += 1
        fn += len(truth) - len(matched)
        for r in clip_rows:
            expected = _expected(item, r["start_frame"], r["end_frame"])
            stage = r["stage"] if r["status"] == "filtered" else None
            for name, accepted in stages.items():
                hit = stage in accepted
                if expected == name:
                    counts[name]["tp" if hit else "fn"] += 1
                elif hit:
                    counts[name]["fp"] += 1
            if stage == "dedup" and item.path not in paired:
                counts["dedup"]["fp"] += 1
        if item.duplicate_of:
            original = {
                r["start_frame"]: r
                for r in by_source.get(item.duplicate_of, [])
                if "start_frame" in r
            }
            for r in clip_rows:
                twin = original.get(r["start_frame"])
                reached = [
                    x for x in (r, twin) if x and (x["status"] == "kept" or x["stage"] == "dedup")
                ]
                if twin is None or len(reached) < 2:
                    continue  # a copy was filtered earlier: nothing left to de-duplicate
                removed = any(x["stage"] == "dedup" for x in reached)
                counts["dedup"]["tp" if removed else "fn"] += 1

    def pr(c: dict) -> dict:
        precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0
        recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0
        return {"precision": precision, "recall": recall, **{k: c[k] for k in ("tp", "fp", "fn")}}

    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "cuts": {
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "tp": tp,
            "fp": fp,
            "fn": fn,
        },
        "filters": {name: pr(c) for name, c in counts.items()},
        "unaccounted": unaccounted,
    }

"""The curation pipeline: raw videos in, scored clips, shards and a manifest out.

Two phases. *Per input* (parallel, any executor): probe, scene split, clip extraction and the
per-clip filters; each input's record is written atomically to ``work/inputs/``, so a rerun
after a crash or kill skips finished inputs. *Corpus* (one process, deterministic): near-duplicate
removal across all clips, captioning, text-video alignment, entity extraction, shards and the
manifest. Nothing is lost: every input and clip ends kept, filtered (stage, reason) or failed
(error), and the manifest lists them all. Clips are re-read from their source spans (seeking)
for captioning, scoring and shard writing, so no intermediate copy is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mugv.data._errors import VideoError
from mugv.data._schema import CaptionedClip, Captioner, VideoClip, VideoTextScorer
from mugv.data.curation import filters, scenes
from mugv.data.curation.config import CurationConfig, CurationError
from mugv.data.curation.entities import balanced_weights, extract_entities
from mugv.data.curation.records import ClipRecord, InputRecord, write_atomic
from mugv.data.shards import ShardWriter
from mugv.data.video import probe, read_video, write_image

logger = logging.getLogger(__name__)

_FILTER_ORDER = ("blur", "motion", "quality", "static", "overlay")


def input_id(source: str | Path) -> str:
    """Stable id of an input: a hash of its resolved path."""
    return hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:16]


class _Timer:
    """Adds the wall time of each ``with timer("stage"):`` block to ``seconds[stage]``."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


def _measure(
    frames: np.ndarray, config: CurationConfig, timer: _Timer
) -> tuple[dict[str, float], str]:
    """Every filter's scores, and the perceptual hash, of one clip."""
    scores: dict[str, float] = {}
    with timer("blur"):
        scores["laplacian_var"], scores["sharpness"] = filters.blur_scores(
            frames, config.blur.num_frames
        )
    if config.motion.enabled:
        with timer("motion"):
            scores["flow"] = filters.flow_magnitude(
                frames, config.motion.num_pairs, config.motion.size
            )
    with timer("quality"):
        scores["brightness"], scores["contrast"] = filters.exposure(frames)
    with timer("static_overlay"):
        scores["max_change"], scores["overlay_fraction"] = filters.static_and_overlay(
            frames, config.overlay.num_frames
        )
    with timer("phash"):
        phash = filters.perceptual_hash(frames)
    return scores, phash


def _verdict(scores: dict[str, float], config: CurationConfig) -> tuple[str, str] | None:
    """The first filter (in pipeline order) that rejects the scores, as (stage, reason)."""
    c = config
    checks = {
        "blur": c.blur.enabled
        and (
            not c.blur.min_var <= scores["laplacian_var"] <= c.blur.max_var
            or scores["sharpness"] < c.blur.min_sharpness
        )
        and f"laplacian variance {scores['laplacian_var']:.1f} / sharpness "
        f"{scores['sharpness']:.2f} outside [{c.blur.min_var}, {c.blur.max_var}] / "
        f">= {c.blur.min_sharpness}",
        "motion": c.motion.enabled
        and not c.motion.min_flow <= scores["flow"] <= c.motion.max_flow
        and f"optical flow {scores['flow']:.3f} px/frame outside "
        f"[{c.motion.min_flow}, {c.motion.max_flow}]",
        "quality": c.quality.enabled
        and (
            not c.quality.min_brightness <= scores["brightness"] <= c.quality.max_brightness
            or scores["contrast"] < c.quality.min_contrast
        )
        and f"brightness {scores['brightness']:.1f} / contrast {scores['contrast']:.1f} outside "
        f"[{c.quality.min_brightness}, {c.quality.max_brightness}] / >= {c.quality.min_contrast}",
        "static": c.overlay.enabled
        and scores["max_change"] < c.overlay.static_max_diff
        and f"static: largest frame change {scores['max_change']:.2f} < "
        f"{c.overlay.static_max_diff}",
        "overlay": c.overlay.enabled
        and scores["overlay_fraction"] > c.overlay.overlay_max_fraction
        and f"overlay: {scores['overlay_fraction']:.4f} of pixels are fixed edges "
        f"> {c.overlay.overlay_max_fraction}",
    }
    for stage in _FILTER_ORDER:
        if checks[stage]:
            return stage, str(checks[stage])
    return None


def process_input(source: str, config: CurationConfig, work_dir: str) -> InputRecord:
    """Probe, split, extract and filter one input; returns (and stores) its record.

    A record already stored for this input is returned as is: this is what makes reruns
    resume. A bad file becomes a ``failed`` record, never an exception.
    """
    work = Path(work_dir)
    iid = input_id(source)
    record_path = work / "inputs" / f"{iid}.json"
    if record_path.exists():
        return InputRecord.from_json(record_path.read_text())
    record = InputRecord(source=str(source), input_id=iid)
    try:
        _split_and_filter(record, config, work)
    except VideoError as exc:
        record.status, record.stage, record.reason = "failed", "probe", str(exc)
        record.clips = []
    if record.status == "ok" and not record.clips:
        record.status, record.stage = "filtered", "split"
        record.reason = f"no scene of at least {config.split.min_seconds} s"
    write_atomic(record_path, record.to_json())
    return record


def _split_and_filter(record: InputRecord, config: CurationConfig, work: Path) -> None:
    source = record.source
    seconds: dict[str, float] = {}
    record.info["seconds"] = seconds
    timer = _Timer(seconds)
    with timer("probe"):
        info = probe(source)
    a = config.split.analysis_size
    with timer("split"):
        small = read_video(source, size=(a, a), fit="stretch")
    times = small.metadata["frame_times"]
    fps = info.fps or (len(times) / max(times[-1], 1e-6))
    record.info |= {
        "duration": float(info.duration),
        "fps": float(fps),
        "width": int(info.width),
        "height": int(info.height),
        "num_frames": len(times),
    }
    with timer("split"):
        cuts = scenes.detect_cuts(scenes.change_scores(small.frames), config.split)
    record.info["cuts"] = cuts
    spans = scenes.scene_spans(cuts, len(times), fps, config.split)
    for i, (s, e) in enumerate(spans):
        end_time = float(times[e]) if e < len(times) else None
        clip = ClipRecord(
            key=f"{record.input_id}-{i:04d}",
            source=source,
            start_frame=s,
            end_frame=e,
            start=float(times[s]),
            end=end_time if end_time is not None else float(info.duration),
            to_end=end_time is None,
        )
        record.clips.append(clip)
        try:
            with timer("extract"):
                video = read_video(source, start=clip.start, end=end_time)
                write_image(
                    work / "thumbs" / f"{clip.key}.jpg", video.frames[len(video.frames) // 2]
                )
            clip.scores, clip.phash = _measure(video.frames, config, timer)
            verdict = _verdict(clip.scores, config)
            if verdict is not None:
                clip.mark("filtered", *verdict)
        except VideoError as exc:
            clip.mark("failed", "extract", str(exc))


@dataclass
class CurationResult:
    manifest: Path
    inputs: list[InputRecord]
    shards: list[Path]
    seconds: float
    corpus_seconds: dict[str, float]  # wall time of the corpus-phase stages

    def stage_seconds(self) -> dict[str, float]:
        """Seconds per stage summed over inputs (worker time) and the corpus phase."""
        total = dict(self.corpus_seconds)
        for record in self.inputs:
            for stage, sec in record.info.get("seconds", {}).items():
                total[stage] = total.get(stage, 0.0) + sec
        return dict(sorted(total.items(), key=lambda kv: -kv[1]))

    def summary(self) -> dict[str, Any]:
        """Counts for the summary table: inputs, clips, kept, filtered per stage, failed."""
        clips = [c for r in self.inputs for c in r.clips]
        filtered: dict[str, int] = {}
        for c in clips:
            if c.status == "filtered":
                filtered[c.stage or "?"] = filtered.get(c.stage or "?", 0) + 1
        for r in self.inputs:
            if r.status == "filtered":
                filtered[r.stage or "?"] = filtered.get(r.stage or "?", 0) + 1
        hours = sum(r.info.get("duration", 0.0) for r in self.inputs) / 3600
        return {
            "inputs": len(self.inputs),
            "inputs_failed": sum(r.status == "failed" for r in self.inputs),
            "clips": len(clips),
            "kept": sum(c.status == "kept" for c in clips),
            "filtered": dict(sorted(filtered.items())),
            "clips_failed": sum(c.status == "failed" for c in clips),
            "video_hours": hours,
            "seconds": self.seconds,
            "video_hours_per_hour": hours * 3600 / self.seconds if self.seconds else 0.0,
        }


def _dedup(clips: list[ClipRecord], max_hamming: int) -> None:
    """Marks later near-duplicates (in key order) of an earlier kept clip as filtered."""
    if not clips:
        return
    bits = np.stack(
        [np.unpackbits(np.frombuffer(bytes.fromhex(c.phash), dtype=np.uint8)) for c in clips]
    )  # (N, hash bits), unpacked once
    kept: list[int] = []
    for i, clip in enumerate(clips):
        if kept:
            distances = (bits[kept] != bits[i]).sum(axis=1)  # (len(kept),)
            j = int(distances.argmin())
            clip.scores["dup_distance"] = float(distances[j])
            if distances[j] <= max_hamming:
                clip.mark("filtered", "dedup", f"near-duplicate of {clips[kept[j]].key}")
                continue
        kept.append(i)


def _read_clip(clip: ClipRecord) -> VideoClip:
    return read_video(clip.source, start=clip.start, end=None if clip.to_end else clip.end)


def _finish(
    clips: list[ClipRecord],
    out: Path,
    config: CurationConfig,
    captioner: Captioner | None,
    scorer: VideoTextScorer | None,
    batch_size: int,
    timer: _Timer,
) -> list[Path]:
    """Captions, scores and shards the clips that survived filtering and de-duplication.

    The shard folder is rebuilt from scratch, so a rerun after a kill writes the same shards.
    """
    shard_dir = out / "shards"
    shutil.rmtree(shard_dir, ignore_errors=True)
    writer = ShardWriter(
        shard_dir,
        prefix="clips",
        max_count=config.output.shard_max_count,
        max_bytes=config.output.shard_max_bytes,
        crf=config.output.crf,
    )
    with writer:
        for i in range(0, len(clips), batch_size):
            batch, videos = [], []
            with timer("extract"):
                for clip in clips[i : i + batch_size]:
                    try:
                        videos.append(_read_clip(clip))
                        batch.append(clip)
                    except VideoError as exc:
                        clip.mark("failed", "extract", str(exc))
            if not batch:
                continue
            if captioner is not None:
                with timer("caption"):
                    for clip, caption in zip(batch, captioner.caption(videos)):
                        clip.caption = caption
            if scorer is not None:
                with timer("align"):
                    texts = [c.caption or "" for c in batch]
                    values = np.asarray(scorer.score(videos, texts), dtype=np.float64)
                for clip, value in zip(batch, values):
                    _align(clip, float(value), config.align.min_score)
            with timer("shards"):
                for clip, video in zip(batch, videos):
                    if clip.status != "kept":
                        continue
                    clip.entities = extract_entities(clip.caption or "")
                    video.metadata.update(scores=clip.scores, entities=clip.entities)
                    captions = [clip.caption] if clip.caption else []
                    writer.write(CaptionedClip(key=clip.key, clip=video, captions=captions))
    shard_of = {key: info.shard for info in writer.shards for key in info.keys}
    for clip in clips:
        clip.shard = shard_of.get(clip.key)
    return [shard_dir / info.shard for info in writer.shards]


def _align(clip: ClipRecord, value: float, min_score: float | None) -> None:
    if np.isnan(value):
        clip.mark("failed", "align", "the video-text scorer could not score it")
        return
    clip.scores["align"] = value
    if min_score is not None and value < min_score:
        clip.mark("filtered", "align", f"alignment {value:.3f} < {min_score}")


def run_curation(
    inputs: Iterable[str | Path],
    out_dir: str | Path,
    config: CurationConfig | None = None,
    *,
    captioner: Captioner | None = None,
    scorer: VideoTextScorer | None = None,
    executor: Any = None,
    batch_size: int = 16,
    progress: Callable[[InputRecord], None] | None = None,
) -> CurationResult:
    """Curates `inputs` into ``out_dir/shards/*.tar`` and ``out_dir/manifest.jsonl``.

    `executor` maps the per-input phase (`LocalExecutor` by default; `RayExecutor` for a
    cluster); `progress` is called once per finished input. Rerunning with the same
    arguments resumes and produces the same manifest.
    """
    from mugv.data.curation.executors import LocalExecutor
    from mugv.data.curation.output import write_manifest

    config = config or CurationConfig()
    if config.motion.enabled:
        filters._cv2()  # fail now, with the fix, rather than once per input
    out = Path(out_dir)
    work = out / "work"
    sources = sorted(dict.fromkeys(str(Path(p)) for p in inputs))
    if not sources:
        raise CurationError("curation: no input videos given; pass files, a folder or a glob")
    t0 = time.perf_counter()
    executor = executor or LocalExecutor()
    records = []
    for record in executor.map_inputs(sources, config, str(work)):
        records.append(record)
        if progress is not None:
            progress(record)
    records.sort(key=lambda r: r.source)
    corpus_seconds: dict[str, float] = {}
    timer = _Timer(corpus_seconds)
    clips = sorted((c for r in records for c in r.clips if c.status == "kept"), key=lambda c: c.key)
    if config.dedup.enabled:
        with timer("dedup"):
            _dedup(clips, config.dedup.max_hamming)
    clips = [c for c in clips if c.status == "kept"]
    shards = _finish(clips, out, config, captioner, scorer, batch_size, timer)
    clips = [c for c in clips if c.status == "kept"]
    for clip, weight in zip(clips, balanced_weights([c.entities for c in clips])):
        clip.weight = weight
    manifest = write_manifest(records, out / "manifest.jsonl")
    logger.info("curated %d inputs into %d kept clips", len(records), len(clips))
    return CurationResult(manifest, records, shards, time.perf_counter() - t0, corpus_seconds)


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """The manifest's rows: one per clip, plus one per input that produced no clip."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]

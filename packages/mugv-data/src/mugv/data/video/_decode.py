"""Frame-sampled decoding that seeks by GOP, and the same sampling for frames in memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import av
import numpy as np

from mugv.data._errors import SchemaError, VideoError
from mugv.data._schema import VideoClip
from mugv.data.video._open import Source, _frame_ts, _label, _open_video, _raising, _rotation

logger = logging.getLogger(__name__)

Fit = Literal["crop", "pad", "stretch"]
_EPS = 1e-6  # seconds: timestamps are rationals, comparisons need a little slack


@dataclass(frozen=True)
class _Index:
    pts: np.ndarray  # (N,) int64, presentation order
    keyframes: np.ndarray  # (K,) int64 pts of the keyframes, sorted
    times: np.ndarray  # (N,) float64 seconds from the first frame
    end: float  # seconds: when the last frame stops being displayed


def _index(container: av.container.InputContainer, stream: av.VideoStream, label: str) -> _Index:
    pts, keys, durations = [], [], []
    for packet in container.demux(stream):
        ts = packet.pts if packet.pts is not None else packet.dts
        if packet.size == 0 or packet.is_discard:
            continue
        if ts is None:
            raise VideoError(
                f"{label}: the video packets carry no timestamps; remux it into mp4 or mkv",
                source=label,
            )
        pts.append(ts)
        durations.append(packet.duration or 0)
        if packet.is_keyframe:
            keys.append(ts)
    if not pts:
        raise VideoError(f"{label}: the video stream holds no frames", source=label)
    if stream.frames and len(pts) < stream.frames:
        raise VideoError(
            f"{label}: truncated: the header lists {stream.frames} frames, the file holds "
            f"{len(pts)}",
            source=label,
        )
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    pts_sorted = np.asarray(pts, dtype=np.int64)[order]
    tb = float(stream.time_base)
    times = (pts_sorted - pts_sorted[0]) * tb
    last = np.asarray(durations, dtype=np.int64)[order][-1] * tb
    if last <= 0:
        gaps = np.diff(times)
        last = float(np.median(gaps)) if gaps.size else 1.0 / float(stream.average_rate or 1)
    keyframes = np.sort(np.asarray(keys or pts_sorted[:1], dtype=np.int64))
    return _Index(pts_sorted, keyframes, times, float(times[-1] + last))


def _select(
    times: np.ndarray,
    end_of_video: float,
    *,
    start: float,
    end: float | None,
    every: int | None,
    num_frames: int | None,
    fps: float | None,
) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Which frames (indices into `times`) a sampling takes, the clip's fps and its span.

    `times` are the frames' display times in seconds, ascending; a frame is shown from its
    time until the next one's, so time-based sampling (`fps`) picks the frame on screen.
    """
    stop = min(end_of_video, end) if end is not None else end_of_video
    if fps is not None:
        count = num_frames if num_frames is not None else int(np.ceil((stop - start) * fps - _EPS))
        at = start + np.arange(max(count, 0)) / fps  # (count,) seconds
        if num_frames is not None and (count == 0 or at[-1] >= stop + _EPS):
            raise ValueError(
                f"{num_frames} frames at {fps} fps from {start:.3f} s need "
                f"{num_frames / fps:.3f} s, the video has {max(stop - start, 0):.3f} s there"
            )
        idx = np.clip(np.searchsorted(times, at + _EPS, side="right") - 1, 0, None)
        return idx, fps, (start, start + count / fps)
    span = np.nonzero((times >= start - _EPS) & (times < stop - _EPS))[0]
    if span.size == 0:
        return span, 1.0, (start, stop)
    source_fps = len(times) / end_of_video
    if every is not None:
        return span[::every], source_fps / every, (start, stop)
    if num_frames is not None:
        pick = np.round(np.linspace(0, span.size - 1, num_frames)).astype(np.int64)
        return span[pick], num_frames / max(stop - times[span[0]], _EPS), (start, stop)
    return span, source_fps, (start, stop)


def _fit(frame: av.VideoFrame, rotation: int, size: tuple[int, int] | None, fit: Fit) -> np.ndarray:
    """RGB (H, W, 3) uint8 of `frame`, upright, scaled and cropped/padded to `size` (H, W)."""
    if size is None:
        return np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), rotation // 90))
    th, tw = size
    dh, dw = (frame.width, frame.height) if rotation % 180 else (frame.height, frame.width)
    if fit == "stretch":
        sh, sw = th, tw
    elif fit == "crop":  # cover the target, then cut the overhang (centre crop)
        scale = max(th / dh, tw / dw)
        sh, sw = max(th, round(dh * scale)), max(tw, round(dw * scale))
    else:  # "pad": fit inside the target, then letterbox with black
        scale = min(th / dh, tw / dw)
        sh, sw = min(th, max(1, round(dh * scale))), min(tw, max(1, round(dw * scale)))
    ch, cw = (sw, sh) if rotation % 180 else (sh, sw)
    rgb = frame.to_ndarray(format="rgb24", width=cw, height=ch, interpolation="BILINEAR")
    rgb = np.rot90(rgb, rotation // 90)  # (sh, sw, 3)
    if fit == "pad":
        out = np.zeros((th, tw, 3), np.uint8)
        y, x = (th - sh) // 2, (tw - sw) // 2
        out[y : y + sh, x : x + sw] = rgb
        return out
    y, x = (sh - th) // 2, (sw - tw) // 2
    return np.ascontiguousarray(rgb[y : y + th, x : x + tw])


def _decode_at(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    wanted: np.ndarray,
    keyframes: np.ndarray,
    convert: Callable[[av.VideoFrame], np.ndarray],
    label: str,
) -> tuple[dict[int, np.ndarray], int]:
    """Decodes the frames whose pts are in `wanted` (sorted, unique), seeking between GOPs.

    Returns the frames by pts and how many frames the decoder produced in all.

    A seek is taken when a keyframe lies between the last decoded frame and the next wanted
    one: everything before that keyframe is not needed to decode the target.
    """
    out: dict[int, np.ndarray] = {}
    frames: Iterator[av.VideoFrame] | None = None
    last: int | None = None  # pts of the last frame the decoder gave
    held: av.VideoFrame | None = None  # a decoded frame past the previous target
    decoded = 0
    for target in wanted.tolist():
        key = int(keyframes[max(np.searchsorted(keyframes, target, side="right") - 1, 0)])
        if frames is None or last is None or key > last:
            container.seek(key, stream=stream, backward=True, any_frame=False)
            frames, held, last = container.decode(stream), None, None
        if held is not None and _frame_ts(held) >= target:
            out[target] = convert(held)
            continue
        for frame in frames:
            decoded += 1
            ts = _frame_ts(frame)
            if ts is None:
                continue
            if last is None and ts > target and key > int(keyframes[0]):
                # The seek overshot (a broken index): restart from the first keyframe.
                container.seek(int(keyframes[0]), stream=stream, backward=True)
                frames, key = container.decode(stream), int(keyframes[0])
                continue
            last = ts
            if ts >= target:
                out[target], held = convert(frame), frame
                break
        else:
            raise VideoError(
                f"{label}: truncated or corrupt: the stream ended before the frame at pts {target}",
                source=label,
            )
    return out, decoded


def _check_sampling(
    start: float,
    end: float | None,
    every: int | None,
    num_frames: int | None,
    fps: float | None,
    size: tuple[int, int] | None,
    fit: str,
) -> None:
    if every is not None and (num_frames is not None or fps is not None):
        raise ValueError(
            "read_video: choose one sampling among every=, num_frames= and fps= "
            "(fps= may be combined with num_frames=)"
        )
    for name, value in (("every", every), ("num_frames", num_frames)):
        if value is not None and value < 1:
            raise ValueError(f"read_video: {name} must be >= 1; got {value}")
    if fps is not None and not fps > 0:
        raise ValueError(f"read_video: fps must be positive; got {fps}")
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"read_video: need 0 <= start < end; got start={start}, end={end}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"read_video: size must be (height, width) >= 1; got {size}")
    if fit not in ("crop", "pad", "stretch"):
        raise ValueError(f"read_video: fit must be 'crop', 'pad' or 'stretch'; got {fit!r}")


def read_video(
    source: Source,
    *,
    start: float = 0.0,
    end: float | None = None,
    every: int | None = None,
    num_frames: int | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    fit: Fit = "crop",
) -> VideoClip:
    """Decodes the frames a sampling picks from ``[start, end)`` seconds (all frames by default).

    Sampling (at most one of `every`, `num_frames`, `fps`; `fps` may add `num_frames`):
    ``every=k`` every k-th frame; ``num_frames=n`` n frames spread uniformly over the span
    (frames repeat when it holds fewer); ``fps=r`` the frame on screen at ``start + i / r``;
    ``fps=r, num_frames=n`` exactly n such frames (error when the video is too short).
    `size` ``(H, W)`` resizes each frame, keeping aspect with a centre crop (``fit="crop"``),
    black bars (``"pad"``), or not (``"stretch"``). Rotation metadata is applied first.
    ``metadata["frame_times"]`` holds each returned frame's time in the source, in seconds.
    """
    label = _label(source)
    _check_sampling(start, end, every, num_frames, fps, size, fit)
    with _open_video(source) as (container, stream), _raising(label, "decode it"):
        index = _index(container, stream, label)
        try:
            idx, out_fps, span = _select(
                index.times,
                index.end,
                start=start,
                end=end,
                every=every,
                num_frames=num_frames,
                fps=fps,
            )
        except ValueError as exc:
            raise VideoError(f"{label}: {exc}", source=label) from exc
        if idx.size == 0:
            raise VideoError(
                f"{label}: no frame in [{start}, {end}) s; the video lasts {index.end:.3f} s",
                source=label,
            )
        rotations: set[int] = set()

        def convert(frame: av.VideoFrame) -> np.ndarray:
            rotations.add(_rotation(frame))
            return _fit(frame, _rotation(frame), size, fit)

        wanted = np.unique(index.pts[idx])
        decoded, work = _decode_at(container, stream, wanted, index.keyframes, convert, label)
        frames = np.stack([decoded[int(p)] for p in index.pts[idx]])  # (T, H, W, 3)
    logger.debug("%s: kept %d frames, decoded %d of %d", label, len(wanted), work, len(index.pts))
    return VideoClip(
        frames=frames,
        fps=float(out_fps),
        source=label,
        span=(float(span[0]), float(span[1])),
        metadata={
            "frame_times": [round(float(t), 6) for t in index.times[idx]],
            "rotation": min(rotations),
            "codec": stream.codec_context.name,
        },
    )


def sample_clip(
    clip: VideoClip,
    *,
    start: float = 0.0,
    end: float | None = None,
    every: int | None = None,
    num_frames: int | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    fit: Fit = "crop",
) -> VideoClip:
    """The sampling and resizing of `read_video`, applied to frames already in memory."""
    _check_sampling(start, end, every, num_frames, fps, size, fit)
    label = clip.source or "<clip in memory>"
    times = np.arange(clip.num_frames) / clip.fps
    try:
        idx, out_fps, span = _select(
            times, clip.duration, start=start, end=end, every=every, num_frames=num_frames, fps=fps
        )
    except ValueError as exc:
        raise VideoError(f"{label}: {exc}", source=label) from exc
    if idx.size == 0:
        raise VideoError(
            f"{label}: no frame in [{start}, {end}) s; the clip lasts {clip.duration:.3f} s",
            source=label,
        )
    frames = clip.frames[idx]
    return VideoClip(
        frames=frames if size is None else resize_frames(frames, size, fit),
        fps=float(out_fps),
        source=clip.source,
        span=(float(span[0]), float(span[1])),
        metadata={**clip.metadata, "frame_times": [round(float(t), 6) for t in times[idx]]},
    )


def resize_frames(frames: np.ndarray, size: tuple[int, int], fit: Fit = "crop") -> np.ndarray:
    """Resizes uint8 ``(T, H, W, 3)`` frames to ``(T, *size, 3)`` exactly as `read_video` does."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise SchemaError(
            f"resize_frames needs uint8 (T, H, W, 3); got {frames.dtype} {frames.shape}"
        )
    return np.stack(
        [
            _fit(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24"), 0, size, fit)
            for f in frames
        ]
    )

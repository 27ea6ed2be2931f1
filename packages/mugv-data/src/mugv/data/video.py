"""Video I/O on PyAV: probe, frame-sampled decoding that seeks, H.264 encoding, images.

Decoding first demuxes the video stream's packets (cheap: no pixel is decoded) to learn every
frame's timestamp and the keyframes, picks the frames the sampling asks for, then decodes only
the groups of pictures that hold them, seeking over the rest. Frame times come from the
timestamps, so variable-frame-rate files sample correctly; display rotation is applied.

Every failure a file can cause (missing, empty, truncated, corrupt, audio-only, an image or any
other non-video) raises one `VideoError` naming the file and the cause.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from mugv.data._errors import SchemaError, VideoError
from mugv.data._schema import VideoClip

__all__ = [
    "Fit",
    "PixFmt",
    "VideoError",
    "VideoInfo",
    "decode_image",
    "encode_image",
    "encode_video",
    "probe",
    "read_image",
    "read_video",
    "resize_frames",
    "sample_clip",
    "write_image",
    "write_video",
]

logger = logging.getLogger(__name__)

Source = str | os.PathLike[str] | bytes | BinaryIO
Fit = Literal["crop", "pad", "stretch"]
PixFmt = Literal["yuv420p", "yuv444p"]
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
# Demuxers that read still images (png_pipe, jpeg_pipe, ...); animated GIFs stay videos.
_IMAGE_DEMUXERS = ("image2", "_pipe")
_EPS = 1e-6  # seconds: timestamps are rationals, comparisons need a little slack


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learns from a file's header and first frame (sizes as displayed)."""

    source: str
    duration: float  # seconds
    fps: float  # average frame rate
    num_frames: int  # as the header states; estimated from duration * fps when it does not
    width: int
    height: int
    codec: str
    rotation: int  # display rotation applied on read, degrees counter-clockwise: 0/90/180/270
    pix_fmt: str
    container: str
    has_audio: bool


def _label(source: Source) -> str:
    if isinstance(source, bytes):
        return f"<{len(source)} bytes of video in memory>"
    if isinstance(source, str | os.PathLike):
        return str(source)
    return getattr(source, "name", None) or "<video stream in memory>"


@contextlib.contextmanager
def _raising(label: str, doing: str) -> Iterator[None]:
    """Turns every av/PIL/OS/numpy failure inside the block into a `VideoError`."""
    try:
        yield
    except VideoError:
        raise
    except (av.FFmpegError, OSError, EOFError, ValueError) as exc:
        raise VideoError(
            f"{label}: cannot {doing}: {type(exc).__name__}: {exc}", source=label
        ) from exc


@contextlib.contextmanager
def _open_video(source: Source) -> Iterator[tuple[av.container.InputContainer, av.VideoStream]]:
    label = _label(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            problem = "is a directory, not a video file" if path.is_dir() else "no such file"
            raise VideoError(f"{label}: {problem}", source=label)
        if path.stat().st_size == 0:
            raise VideoError(f"{label}: the file is empty (0 bytes)", source=label)
        target: str | BinaryIO = str(path)
    elif isinstance(source, bytes):
        if not source:
            raise VideoError(f"{label}: the video is empty (0 bytes)", source=label)
        target = io.BytesIO(source)
    else:
        target = source
    with _raising(label, "open it as a video (corrupt, truncated or not a video file?)"):
        container = av.open(target, mode="r")
    try:
        fmt = container.format.name
        if any(tag in fmt for tag in _IMAGE_DEMUXERS):
            raise VideoError(
                f"{label}: is a still image ({fmt}), not a video; read it with read_image",
                source=label,
            )
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise VideoError(
                f"{label}: holds no video stream (found: {', '.join(kinds)})", source=label
            )
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield container, stream
    finally:
        container.close()


def _rotation(frame: av.VideoFrame) -> int:
    return round(frame.rotation / 90.0) * 90 % 360


def _frame_ts(frame: av.VideoFrame) -> int | None:
    return frame.pts if frame.pts is not None else frame.dts


def _nbytes(source: Source) -> int | None:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, str | os.PathLike):
        return Path(source).stat().st_size
    return None


def probe(source: Source) -> VideoInfo:
    """Reads the header and decodes the first frame (to prove the file decodes).

    A file cut short after its header is caught from the demuxer's sample index when the
    container has one (mp4/mov list every sample's byte range).
    """
    label = _label(source)
    with _open_video(source) as (container, stream), _raising(label, "probe it"):
        entries = stream.index_entries
        nbytes = _nbytes(source)
        if nbytes is not None and len(entries):
            needed = max(e.pos + e.size for e in entries)
            if needed > nbytes:
                raise VideoError(
                    f"{label}: truncated: the samples need {needed} bytes, the file has {nbytes}",
                    source=label,
                )
        first = next(container.decode(stream), None)
        if first is None:
            raise VideoError(f"{label}: the video stream holds no decodable frame", source=label)
        rotation = _rotation(first)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        num_frames = stream.frames or round(duration * fps)
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation % 180:
            width, height = height, width
        return VideoInfo(
            source=label,
            duration=duration,
            fps=fps,
            num_frames=int(num_frames),
            width=width,
            height=height,
            codec=stream.codec_context.name,
            rotation=rotation,
            pix_fmt=stream.codec_context.format.name if stream.codec_context.format else "",
            container=container.format.name,
            has_audio=bool(container.streams.audio),
        )


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
    convert,
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


def _frames_of(clip: VideoClip | np.ndarray, fps: float | None) -> tuple[np.ndarray, float]:
    if isinstance(clip, VideoClip):
        return clip.frames, float(fps if fps is not None else clip.fps)
    if fps is None:
        raise ValueError("write_video: pass fps= when writing a bare frame array")
    return VideoClip(frames=clip, fps=fps).frames, float(fps)


def _encode(
    target: str | BinaryIO,
    fmt: str,
    frames: np.ndarray,
    fps: float,
    crf: int,
    preset: str,
    pix_fmt: PixFmt,
) -> None:
    # yuv420p halves chroma resolution, so H.264 needs even sizes there: odd ones are padded
    # by repeating the last row/column (nothing is lost; the decoded clip is 1 px larger).
    # yuv444p takes any size.
    t, h, w, _ = frames.shape
    if pix_fmt == "yuv420p":
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(target, mode="w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        # x264's macroblock-tree rate control is not bit-reproducible on tiny frames (~64 px):
        # the bytes may differ between runs; the decoded frames stay within codec tolerance.
        stream.options = {"crf": str(crf), "preset": preset}
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _check_encode_args(fps: float, crf: int, pix_fmt: str) -> None:
    if pix_fmt not in ("yuv420p", "yuv444p"):
        raise ValueError(f"write_video: pix_fmt must be 'yuv420p' or 'yuv444p'; got {pix_fmt!r}")
    if not fps > 0:
        raise ValueError(f"write_video: fps must be positive; got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(
            f"write_video: crf must be in [0, 51] (18 is visually lossless); got {crf}"
        )


def write_video(
    path: str | os.PathLike[str],
    clip: VideoClip | np.ndarray,
    *,
    fps: float | None = None,
    crf: int = 18,
    preset: str = "medium",
    pix_fmt: PixFmt = "yuv420p",
) -> Path:
    """Encodes H.264 at `crf` into an mp4/mov/mkv, atomically (temp file, then rename).

    `fps` overrides the clip's; a bare ``(T, H, W, 3)`` uint8 array needs it. ``yuv420p``
    plays everywhere but halves chroma resolution, which blurs sharp colour edges (about
    32 dB RGB PSNR on hard-edged saturated shapes, before any compression); ``yuv444p``
    (H.264 High 4:4:4) keeps full chroma for training data that only PyAV/FFmpeg reads.
    """
    path = Path(path)
    fmt = _MUXERS.get(path.suffix.lower())
    if fmt is None:
        raise VideoError(
            f"{path}: cannot write a video with suffix {path.suffix!r}; use one of "
            f"{sorted(_MUXERS)}",
            source=str(path),
        )
    frames, rate = _frames_of(clip, fps)
    _check_encode_args(rate, crf, pix_fmt)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with _raising(str(path), "encode it"):
            path.parent.mkdir(parents=True, exist_ok=True)
            _encode(str(tmp), fmt, frames, rate, crf, preset, pix_fmt)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def encode_video(
    clip: VideoClip | np.ndarray,
    *,
    fps: float | None = None,
    crf: int = 18,
    preset: str = "medium",
    pix_fmt: PixFmt = "yuv420p",
) -> bytes:
    """The mp4 bytes `write_video` would write (for shards and in-memory pipelines)."""
    frames, rate = _frames_of(clip, fps)
    _check_encode_args(rate, crf, pix_fmt)
    buffer = io.BytesIO()
    with _raising("<mp4 in memory>", "encode it"):
        _encode(buffer, "mp4", frames, rate, crf, preset, pix_fmt)
    return buffer.getvalue()


def _image_format(name: str, format: str | None) -> str:
    key = (format or Path(name).suffix).lower()
    key = key if key.startswith(".") else f".{key}"
    if key not in _IMAGE_FORMATS:
        raise VideoError(
            f"{name}: unknown image format {key!r}; use one of {sorted(_IMAGE_FORMATS)}",
            source=name,
        )
    return _IMAGE_FORMATS[key]


def encode_image(frame: np.ndarray, format: str = "png", *, quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of one uint8 ``(H, W, 3)`` frame."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise SchemaError(f"an image must be uint8 (H, W, 3); got {frame.dtype} {frame.shape}")
    kind = _image_format(f"<{format} image>", format)
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(
        buffer, format=kind, **({"quality": quality} if kind == "JPEG" else {})
    )
    return buffer.getvalue()


def write_image(path: str | os.PathLike[str], frame: np.ndarray, *, quality: int = 95) -> Path:
    """Writes one frame as PNG or JPEG (from the suffix), atomically."""
    path = Path(path)
    data = encode_image(frame, _image_format(str(path), None), quality=quality)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _raising(str(path), "write the image"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def decode_image(data: bytes, *, name: str = "<image in memory>") -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of encoded image bytes (PNG, JPEG, ...)."""
    if not data:
        raise VideoError(f"{name}: the image is empty (0 bytes)", source=name)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise VideoError(f"{name}: cannot decode the image: {exc}", source=name) from exc


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of an image file."""
    with _raising(str(path), "read the image"):
        data = Path(path).read_bytes()
    return decode_image(data, name=str(path))

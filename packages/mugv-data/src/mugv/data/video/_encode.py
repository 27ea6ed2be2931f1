"""H.264 encoding into mp4/mov/mkv files or bytes."""

from __future__ import annotations

import io
import os
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np

from mugv.data._errors import VideoError
from mugv.data._schema import VideoClip
from mugv.data.video._open import _raising

PixFmt = Literal["yuv420p", "yuv444p"]
_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


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

"""Opening media safely: one `VideoError` for every bad file, and `probe`."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av

from mugv.data._errors import VideoError

Source = str | os.PathLike[str] | bytes | BinaryIO
# Demuxers that read still images (png_pipe, jpeg_pipe, ...); animated GIFs stay videos.
_IMAGE_DEMUXERS = ("image2", "_pipe")


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

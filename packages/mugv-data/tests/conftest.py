"""Media helpers for the I/O tests: clips whose frames can be told apart after H.264."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def indexed_frames(num_frames: int, height: int = 48, width: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8 frames; frame t has a flat grey border of level 20 + 5 t.

    A red square moves across the middle so the encoder sees motion; `frame_ids` reads t back.
    """
    assert num_frames <= 45
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = 20 + 5 * t
        x = (3 * t) % max(width - 16, 1)
        frames[t, height // 2 - 6 : height // 2 + 6, x : x + 12] = (220, 30, 30)
    return frames


def frame_ids(frames: np.ndarray) -> list[int]:
    """The index t of each frame made by `indexed_frames` (robust to compression)."""
    corner = frames[:, :6, :6].reshape(len(frames), -1).astype(np.float64)
    return [round((float(np.median(c)) - 20) / 5) for c in corner]


def write_raw(
    path: Path,
    frames: np.ndarray,
    *,
    pts: list[int] | None = None,
    time_base: int = 1000,
    rate: int = 10,
    gop: int | None = None,
    rotation: int = 0,
) -> Path:
    """An H.264 mp4 written straight with PyAV: custom timestamps (VFR), GOP and rotation."""
    from fractions import Fraction

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.time_base = Fraction(1, time_base)
        stream.codec_context.time_base = Fraction(1, time_base)
        stream.options = {"crf": "18", **({"g": str(gop), "keyint_min": str(gop)} if gop else {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = pts[i] if pts is not None else i * time_base // rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


class Media:
    """The helpers above, handed to tests by the `media` fixture (tests/ is not a package)."""

    indexed_frames = staticmethod(indexed_frames)
    frame_ids = staticmethod(frame_ids)
    write_raw = staticmethod(write_raw)


@pytest.fixture
def media() -> type[Media]:
    return Media


@pytest.fixture
def clip_file(tmp_path: Path) -> Path:
    """40 indexed frames, 48 x 64, 10 fps, a keyframe every 5 frames."""
    return write_raw(tmp_path / "clip.mp4", indexed_frames(40), gop=5)

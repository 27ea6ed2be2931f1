"""Video I/O: real H.264 mp4 files through PyAV, sampled decoding against decode-everything."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

from mugv.data import DataError, VideoClip
from mugv.data.video import (
    VideoError,
    decode_image,
    encode_image,
    encode_video,
    probe,
    read_image,
    read_video,
    resize_frames,
    sample_clip,
    write_image,
    write_video,
)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def natural_clip(num_frames: int = 16, height: int = 64, width: int = 64) -> np.ndarray:
    """Smooth background plus two moving shapes: what the synthetic world looks like."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = 60 + 80 * x / width
        frames[t, ..., 1] = 90 + 60 * y / height
        frames[t, ..., 2] = 120
        cx = 8 + 2 * t
        frames[t, 20:36, cx : cx + 16] = (230, 40, 40)
        r2 = (x - 40) ** 2 + (y - (10 + 2 * t)) ** 2
        frames[t][r2 < 64] = (40, 200, 60)
    return frames


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma (the Y plane H.264 codes at full resolution)."""
    return frames.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_round_trip_psnr_at_crf18(tmp_path: Path) -> None:
    frames = natural_clip()
    path = write_video(tmp_path / "c.mp4", VideoClip(frames=frames, fps=8), crf=18)
    clip = read_video(path)
    assert clip.frames.shape == frames.shape
    assert clip.fps == pytest.approx(8)
    # yuv420p: luma is coded at full resolution; chroma at half blurs the hard colour edges.
    assert psnr(luma(clip.frames), luma(frames)) >= 35.0
    assert psnr(clip.frames, frames) >= 30.0
    full = read_video(write_video(tmp_path / "f.mp4", frames, fps=8, crf=18, pix_fmt="yuv444p"))
    assert psnr(full.frames, frames) >= 35.0
    # A higher crf compresses harder: the file shrinks and the error grows.
    worse = read_video(write_video(tmp_path / "w.mp4", frames, fps=8, crf=40))
    assert psnr(worse.frames, frames) < psnr(clip.frames, frames)
    assert (tmp_path / "w.mp4").stat().st_size < path.stat().st_size


def test_synthetic_world_round_trip_at_crf18() -> None:
    """The issue's bar: world clip -> mp4 -> decode within H.264 tolerance (PSNR >= 35 dB).

    yuv444p meets it in RGB; yuv420p meets it on luma (its half-resolution chroma alone caps
    RGB PSNR near 31-33 dB on the world's hard colour edges, before any compression).
    """
    from mugv.data.world import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(num_frames=16, height=64, width=64, fps=8, seed=0))
    for index in range(6):
        frames = world.sample("test", index).clip.frames
        full = read_video(encode_video(frames, fps=8, crf=18, pix_fmt="yuv444p")).frames
        assert psnr(full, frames) >= 35.0
        half = read_video(encode_video(frames, fps=8, crf=18)).frames
        assert psnr(luma(half), luma(frames)) >= 35.0 and psnr(half, frames) >= 29.0


def test_encode_video_bytes_equal_the_file(tmp_path: Path) -> None:
    frames = natural_clip(6)
    data = encode_video(frames, fps=12, crf=18)
    (tmp_path / "c.mp4").write_bytes(data)
    from_bytes, from_file = read_video(data), read_video(tmp_path / "c.mp4")
    np.testing.assert_array_equal(from_bytes.frames, from_file.frames)
    assert from_bytes.fps == pytest.approx(12)
    assert from_bytes.source.startswith("<") and from_file.source == str(tmp_path / "c.mp4")
    assert psnr(luma(from_bytes.frames), luma(frames)) >= 35


def test_probe(clip_file: Path, tmp_path: Path) -> None:
    info = probe(clip_file)
    assert (info.width, info.height, info.num_frames) == (64, 48, 40)
    assert info.fps == pytest.approx(10)
    assert info.duration == pytest.approx(4.0, abs=0.11)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.rotation == 0
    assert not info.has_audio
    ntsc = probe(write_video(tmp_path / "n.mp4", natural_clip(4), fps=30000 / 1001))
    assert ntsc.fps == pytest.approx(29.97, abs=0.01)


def test_all_frames_in_order(clip_file: Path, media) -> None:
    clip = read_video(clip_file)
    assert media.frame_ids(clip.frames) == list(range(40))
    assert clip.fps == pytest.approx(10) and clip.span == (0.0, pytest.approx(4.0))
    assert clip.metadata["frame_times"][:3] == [0.0, 0.1, 0.2]


@pytest.mark.parametrize(
    ("kwargs", "expected", "fps"),
    [
        ({"every": 3}, list(range(0, 40, 3)), 10 / 3),
        ({"num_frames": 5}, [0, 10, 20, 29, 39], None),
        ({"start": 1.0, "end": 2.0}, list(range(10, 20)), 10),
        ({"start": 1.0, "end": 2.0, "every": 4}, [10, 14, 18], 2.5),
        ({"fps": 4}, [0, 2, 5, 7, 10, 12, 15, 17, 20, 22, 25, 27, 30, 32, 35, 37], 4),
        ({"fps": 5, "start": 2.05, "num_frames": 3}, [20, 22, 24], 5),
        ({"fps": 20, "num_frames": 4}, [0, 0, 1, 1], 20),
        ({"num_frames": 3, "start": 3.5}, [35, 37, 39], None),
    ],
)
def test_sampling_picks_the_right_frames(clip_file: Path, media, kwargs, expected, fps) -> None:
    clip = read_video(clip_file, **kwargs)
    assert media.frame_ids(clip.frames) == expected
    if fps is not None:
        assert clip.fps == pytest.approx(fps)


def test_sampled_decode_equals_decode_everything(clip_file: Path) -> None:
    """Seeking must give bit-identical frames to decoding the whole file and indexing."""
    everything = read_video(clip_file).frames
    for kwargs, idx in [
        ({"every": 7}, list(range(0, 40, 7))),
        ({"start": 2.3, "end": 3.1}, list(range(23, 31))),
        ({"num_frames": 4}, [0, 13, 26, 39]),
    ]:
        np.testing.assert_array_equal(read_video(clip_file, **kwargs).frames, everything[idx])


def test_sample_clip_matches_read_video(clip_file: Path) -> None:
    everything = read_video(clip_file)
    for kwargs in [{"every": 3}, {"num_frames": 7}, {"fps": 4, "start": 0.5}, {"end": 1.0}]:
        from_file, in_memory = read_video(clip_file, **kwargs), sample_clip(everything, **kwargs)
        np.testing.assert_array_equal(in_memory.frames, from_file.frames)
        assert in_memory.metadata["frame_times"] == from_file.metadata["frame_times"]
        assert in_memory.fps == pytest.approx(from_file.fps)
    assert sample_clip(everything, size=(16, 20)).frames.shape == (40, 16, 20, 3)
    with pytest.raises(VideoError, match="no frame"):
        sample_clip(everything, start=5.0)


def test_sampled_decode_seeks_instead_of_decoding_everything(
    tmp_path: Path, media, caplog: pytest.LogCaptureFixture
) -> None:
    path = media.write_raw(tmp_path / "long.mp4", media.indexed_frames(45), gop=5)
    with caplog.at_level(logging.DEBUG, logger="mugv.data.video"):
        clip = read_video(path, num_frames=3)  # frames 0, 22, 44: three GOPs of 5
    assert media.frame_ids(clip.frames) == [0, 22, 44]
    (record,) = [r for r in caplog.records if "decoded" in r.getMessage()]
    kept, decoded, total = (int(a) for a in record.args[1:])
    assert (kept, total) == (3, 45)
    assert decoded <= 3 * 5 + 3  # at most a GOP per target (plus decoder lookahead)


def test_variable_frame_rate(tmp_path: Path, media) -> None:
    # Frames shown at irregular times (ms): a burst, a 0.6 s hold, then 10 fps.
    times = [0, 50, 100, 150, 200, 800, 900, 1000, 1100, 1200]
    path = media.write_raw(tmp_path / "vfr.mp4", media.indexed_frames(10), pts=times)
    clip = read_video(path)
    assert media.frame_ids(clip.frames) == list(range(10))
    assert clip.metadata["frame_times"] == [t / 1000 for t in times]
    # At 5 fps the frame on screen at 0, .2, .4, .6, .8, 1.0, 1.2 s.
    resampled = read_video(path, fps=5)
    assert media.frame_ids(resampled.frames) == [0, 4, 4, 4, 5, 7, 9]
    assert read_video(path, start=0.3, end=1.0).metadata["frame_times"] == [0.8, 0.9]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path: Path, media, rotation: int) -> None:
    frames = media.indexed_frames(4)
    frames[:, :8, :8] = (0, 0, 255)  # mark the top-left corner of the stored frame
    path = media.write_raw(tmp_path / "rot.mp4", frames, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    assert (info.height, info.width) == ((64, 48) if rotation % 180 else (48, 64))
    clip = read_video(path)
    expected = np.rot90(frames, rotation // 90, axes=(1, 2))  # counter-clockwise
    assert clip.frames.shape == expected.shape
    assert psnr(clip.frames, expected) > 30
    sized = read_video(path, size=(32, 24), fit="stretch")
    assert sized.frames.shape == (4, 32, 24, 3)
    assert psnr(sized.frames, resize_frames(expected, (32, 24), "stretch")) > 28


def test_animated_gif_is_a_video(tmp_path: Path) -> None:
    from PIL import Image

    images = [Image.fromarray(np.full((16, 20, 3), 40 * i, np.uint8)) for i in range(5)]
    images[0].save(tmp_path / "a.gif", save_all=True, append_images=images[1:], duration=100)
    clip = read_video(tmp_path / "a.gif", every=2)
    assert clip.frames.shape == (3, 16, 20, 3)
    assert [round(float(f.mean())) for f in clip.frames] == [0, 80, 160]
    assert probe(tmp_path / "a.gif").fps == pytest.approx(10)
    with pytest.raises(VideoError, match="is a directory"):
        read_video(tmp_path)


def test_odd_sizes_are_padded_to_even(tmp_path: Path) -> None:
    frames = natural_clip(5, height=33, width=35)
    clip = read_video(write_video(tmp_path / "odd.mp4", frames, fps=8))
    assert clip.frames.shape == (5, 34, 36, 3)
    assert psnr(luma(clip.frames[:, :33, :35]), luma(frames)) >= 35
    # The padding repeats the last row/column.
    assert psnr(luma(clip.frames[:, 33, :35]), luma(frames[:, 32])) > 30
    full = read_video(write_video(tmp_path / "odd444.mp4", frames, fps=8, pix_fmt="yuv444p"))
    assert full.frames.shape == frames.shape


def test_resize_crop_pad_stretch(clip_file: Path) -> None:
    frame = np.zeros((1, 40, 80, 3), np.uint8)
    frame[:, :, :20] = 255  # left quarter white
    crop = resize_frames(frame, (20, 20), "crop")  # scale to 20 x 40, keep the middle half
    assert crop.shape == (1, 20, 20, 3) and crop.max() < 40
    pad = resize_frames(frame, (20, 20), "pad")  # scale to 10 x 20, black bars above/below
    assert pad.shape == (1, 20, 20, 3)
    assert pad[0, :5].max() == 0 and pad[0, 15:].max() == 0 and pad[0, 10, 1].min() > 200
    stretch = resize_frames(frame, (20, 20), "stretch")
    assert stretch[0, 10, 2].min() > 200 and stretch[0, 10, 15].max() < 20
    decoded = read_video(clip_file, size=(32, 32))
    assert decoded.frames.shape == (40, 32, 32, 3)
    reference = resize_frames(read_video(clip_file).frames, (32, 32))
    assert psnr(decoded.frames, reference) > 35


def test_images(tmp_path: Path) -> None:
    frame = natural_clip(1)[0]
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "f.png", frame)), frame)
    assert psnr(read_image(write_image(tmp_path / "f.jpg", frame, quality=95)), frame) > 30
    np.testing.assert_array_equal(decode_image(encode_image(frame, "png")), frame)
    with pytest.raises(VideoError, match="unknown image format"):
        write_image(tmp_path / "f.bmp", frame)
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(VideoError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(VideoError, match="empty"):
        decode_image(b"")


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _corrupt(data: bytes, seed: int) -> bytes:
    """Overwrites bytes inside the media data (the header stays intact)."""
    start = data.find(b"mdat") + 64
    stop = data.find(b"moov") - 64
    out = bytearray(data)
    rng = np.random.default_rng(seed)
    out[start:stop] = rng.integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    return bytes(out)


def _faststart(path: Path, frames: np.ndarray) -> Path:
    """An mp4 with its header first, so a cut keeps the header and loses frames."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_FILES = {
    "missing": (lambda p, good: p, "no such file"),
    "empty": (lambda p, good: _bytes(p, b""), "empty"),
    "text": (lambda p, good: _bytes(p, b"id,caption\n1,a dog\n"), "cannot open"),
    "random": (lambda p, good: _bytes(p, np.random.default_rng(0).bytes(5000)), "cannot open"),
    "truncated": (lambda p, good: _bytes(p, good.read_bytes()[:1500]), "cannot open"),
    "corrupt": (lambda p, good: _bytes(p, _corrupt(good.read_bytes(), 0)), "cannot decode"),
    "header-first-truncated": (
        lambda p, good: _bytes(p, _faststart(p, natural_clip(20)).read_bytes()[:2500]),
        "truncated",
    ),
    "audio-only": (lambda p, good: _audio_only(p), "no video stream"),
    "png": (lambda p, good: write_image(p.with_suffix(".png"), natural_clip(1)[0]), "image"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_raise_video_error(tmp_path: Path, kind: str) -> None:
    good = write_video(tmp_path / "good.mp4", natural_clip(20), fps=8)
    make, cause = BAD_FILES[kind]
    path = make(tmp_path / f"{kind}.mp4", good)
    for reader in (read_video, probe):
        if kind == "corrupt" and reader is probe:
            continue  # the header is intact: probe only decodes frames it needs
        with pytest.raises(VideoError, match=cause) as info:
            reader(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, DataError)


def test_random_damage_only_ever_raises_video_error() -> None:
    """Flipped bytes, cuts and zeroed blocks anywhere: a clip or a VideoError, nothing else."""
    good = encode_video(natural_clip(12), fps=8)
    rng = np.random.default_rng(0)
    errors = 0
    for trial in range(60):
        data = bytearray(good)
        if trial % 3 == 0:
            for p in rng.integers(0, len(data), int(rng.integers(1, 20))):
                data[p] = int(rng.integers(0, 256))
        elif trial % 3 == 1:
            data = data[: int(rng.integers(0, len(data)))]
        else:
            a, n = int(rng.integers(0, len(data))), int(rng.integers(1, 300))
            data[a : a + n] = bytes(len(data[a : a + n]))
        for call in (read_video, probe, lambda d: read_video(d, num_frames=3)):
            try:
                call(bytes(data))
            except VideoError:
                errors += 1
    assert errors > 30  # most damage is detected, none of it escapes as another type


def test_bad_bytes_and_arguments(clip_file: Path) -> None:
    with pytest.raises(VideoError, match="empty"):
        read_video(b"")
    with pytest.raises(VideoError, match="bytes of video in memory"):
        read_video(b"\x00" * 300)
    with pytest.raises(VideoError, match=r"need 1\.000 s"):
        read_video(clip_file, fps=10, num_frames=10, start=3.5)
    with pytest.raises(VideoError, match="no frame"):
        read_video(clip_file, start=10.0)
    with pytest.raises(ValueError, match="one sampling"):
        read_video(clip_file, every=2, num_frames=3)
    with pytest.raises(ValueError, match="crf"):
        encode_video(natural_clip(2), fps=8, crf=80)
    with pytest.raises(ValueError, match="fps="):
        encode_video(natural_clip(2))
    with pytest.raises(VideoError, match="suffix"):
        write_video(clip_file.with_suffix(".avi"), natural_clip(2), fps=8)


def test_video_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(VideoError("x.mp4: truncated", source="x.mp4")))
    assert str(err) == "x.mp4: truncated"
    assert VideoError("x.mp4: truncated").args == ("x.mp4: truncated",)

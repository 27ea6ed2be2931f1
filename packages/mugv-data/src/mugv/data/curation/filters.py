"""Per-clip quality measurements; each returns plain floats for the manifest.

All take uint8 RGB frames ``(T, H, W, 3)`` and look at a few evenly spaced frames, so their
cost does not grow with clip length.
"""

from __future__ import annotations

import numpy as np

from mugv.data.curation.config import CurationError

_LUMA = np.array([0.299, 0.587, 0.114])


def _pick(num_frames: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_frames - 1, max(1, count)).round().astype(int))


def luma(frames: np.ndarray) -> np.ndarray:
    """Grey levels in [0, 255], float64 ``(T, H, W)``."""
    return frames.astype(np.float64) @ _LUMA


def blur_scores(frames: np.ndarray, num_frames: int = 3) -> tuple[float, float]:
    """(variance of the Laplacian, sharpness) of luma over sampled frames.

    The variance of the 4-neighbour Laplacian grows with edge sharpness but also with how
    much the frame holds. Sharpness divides it by the mean squared gradient: for an edge
    blurred by a Gaussian of width s it falls like 1 / s^2 whatever the content, so one
    threshold serves sparse and busy frames alike.
    """
    grey = luma(frames[_pick(len(frames), num_frames)])
    lap = (
        4 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    )
    gx = np.diff(grey, axis=2)
    gy = np.diff(grey, axis=1)
    grad2 = float((gx**2).mean() + (gy**2).mean())
    var = float(lap.var(axis=(1, 2)).mean())
    return var, var / grad2 if grad2 > 1e-6 else 0.0


def exposure(frames: np.ndarray, num_frames: int = 4) -> tuple[float, float]:
    """(mean brightness, contrast as the luma standard deviation) over sampled frames."""
    grey = luma(frames[_pick(len(frames), num_frames)])
    return float(grey.mean()), float(grey.std(axis=(1, 2)).mean())


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise CurationError(
            "the motion filter uses OpenCV's dense optical flow: install it with "
            "`pip install 'mugv-data[cv]'`, or set motion.enabled = false"
        ) from exc
    return cv2


def flow_magnitude(frames: np.ndarray, num_pairs: int = 4, size: int = 128) -> float:
    """Mean Farneback optical-flow magnitude over a few consecutive frame pairs.

    Frames are resized so the longer side is `size`; the result is in pixels per frame at that
    size, so it does not depend on the source resolution.
    """
    cv2 = _cv2()
    t, h, w = frames.shape[:3]
    if t < 2:
        return 0.0
    scale = size / max(h, w)
    dsize = (max(8, round(w * scale)), max(8, round(h * scale)))
    mags = []
    for i in _pick(t - 1, num_pairs):
        a, b = (
            cv2.resize(
                cv2.cvtColor(frames[j], cv2.COLOR_RGB2GRAY), dsize, interpolation=cv2.INTER_AREA
            )
            for j in (i, i + 1)
        )
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        mags.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return float(np.mean(mags))


def static_and_overlay(frames: np.ndarray, num_frames: int = 8) -> tuple[float, float]:
    """(largest mean abs luma change between sampled frames, overlay pixel fraction).

    The overlay fraction counts pixels that carry a strong edge in every sampled frame yet
    never change while the rest of the frame does: burnt-in text, logos, tickers.
    """
    idx = _pick(len(frames), num_frames)
    grey = luma(frames[idx])  # (N, H, W)
    if len(grey) < 2:
        return 0.0, 0.0
    change = float(np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2)).max())
    gy = np.abs(np.diff(grey, axis=1))[:, :, :-1]
    gx = np.abs(np.diff(grey, axis=2))[:, :-1, :]
    edges = np.minimum(gx + gy, 255.0)  # (N, H-1, W-1)
    steady = grey.std(axis=0)[:-1, :-1] < 2.0
    strong = (edges > 40.0).all(axis=0)
    moving = grey.std(axis=0) >= 2.0
    if not moving.any():
        return change, 0.0
    return change, float((strong & steady).mean())


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


_DCT32 = _dct_matrix(32)


def _resize_grey(grey: np.ndarray, size: int) -> np.ndarray:
    """Area-average resize of a 2D array to ``(size, size)`` (bins of equal source extent)."""
    h, w = grey.shape
    rows = np.minimum((np.arange(h) * size) // h, size - 1)
    cols = np.minimum((np.arange(w) * size) // w, size - 1)
    out = np.zeros((size, size))
    np.add.at(out, (rows[:, None], cols[None, :]), grey)
    counts = np.zeros((size, size))
    np.add.at(counts, (rows[:, None], cols[None, :]), 1.0)
    return out / np.maximum(counts, 1.0)


def perceptual_hash(frames: np.ndarray, num_frames: int = 3) -> str:
    """DCT perceptual hash (64 bits per sampled frame) as a hex string."""
    bits = []
    for grey in luma(frames[_pick(len(frames), num_frames)]):
        coeffs = _DCT32 @ _resize_grey(grey, 32) @ _DCT32.T
        low = coeffs[:8, :8].ravel()[1:]  # drop DC
        bits.append(low > np.median(low))
    packed = np.packbits(np.concatenate(bits))
    return packed.tobytes().hex()


def hamming(a: str, b: str) -> int:
    """Bit distance between two hashes from `perceptual_hash`."""
    x = np.frombuffer(bytes.fromhex(a), dtype=np.uint8) ^ np.frombuffer(bytes.fromhex(b), np.uint8)
    return int(np.unpackbits(x).sum())

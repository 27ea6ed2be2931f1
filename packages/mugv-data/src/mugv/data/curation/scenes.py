"""Scene splitting by content change with an adaptive threshold (PySceneDetect-style).

Each pair of consecutive frames gets a change score in [0, 1]: the mean of the colour
histogram distance and the mean absolute pixel difference, on downscaled frames. A cut is a
score that stands out from its neighbourhood (median + k * MAD) and exceeds an absolute floor,
so slow pans and moving objects do not cut while hard shot changes do.
"""

from __future__ import annotations

import itertools

import numpy as np

from mugv.data.curation.config import SplitConfig

_BINS = 16
_MAD_TO_STD = 1.4826  # MAD of a normal distribution times this is its standard deviation


def change_scores(frames: np.ndarray) -> np.ndarray:
    """Change score of every frame against the previous one: ``(T,)`` with ``scores[0] = 0``.

    `frames` is uint8 ``(T, H, W, 3)``, ideally downscaled (64 px is plenty).
    """
    t = frames.shape[0]
    quantised = (frames >> 4).astype(np.int64)  # 16 levels per channel
    hists = np.stack(
        [
            np.stack([np.bincount(q[..., c].ravel(), minlength=_BINS) for c in range(3)])
            for q in quantised
        ]
    ).astype(np.float64)  # (T, 3, 16)
    hists /= hists.sum(axis=-1, keepdims=True)
    scores = np.zeros(t)
    if t > 1:
        hist_d = 0.5 * np.abs(np.diff(hists, axis=0)).sum(axis=-1).mean(axis=-1)  # (T-1,)
        pix_d = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3)) / 255.0
        scores[1:] = 0.5 * (hist_d + pix_d)
    return scores


def detect_cuts(scores: np.ndarray, config: SplitConfig) -> list[int]:
    """Frame indices that start a new scene (never 0), from `change_scores`."""
    t = len(scores)
    half = config.window // 2
    cuts: list[int] = []
    for i in range(1, t):
        lo, hi = max(1, i - half), min(t, i + half + 1)
        neighbours = np.delete(scores[lo:hi], i - lo)
        if neighbours.size == 0:
            neighbours = np.zeros(1)
        median = float(np.median(neighbours))
        mad = float(np.median(np.abs(neighbours - median))) * _MAD_TO_STD
        threshold = max(config.min_score, median + config.k * max(mad, 0.002))
        if scores[i] > threshold and (not cuts or i - cuts[-1] > 1):
            cuts.append(i)
    return cuts


def scene_spans(
    cuts: list[int], num_frames: int, fps: float, config: SplitConfig
) -> list[tuple[int, int]]:
    """``[start, end)`` frame spans of the scenes: too short dropped, too long split evenly."""
    bounds = [0, *cuts, num_frames]
    min_len = max(1, round(config.min_seconds * fps))
    max_len = max(min_len, int(config.max_seconds * fps))
    spans: list[tuple[int, int]] = []
    for start, end in itertools.pairwise(bounds):
        length = end - start
        if length < min_len:
            continue
        pieces = -(-length // max_len)
        edges = np.linspace(start, end, pieces + 1).round().astype(int)
        spans += [(int(a), int(b)) for a, b in itertools.pairwise(edges)]
    return spans

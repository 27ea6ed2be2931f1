"""95% intervals for accuracies measured on a few dozen videos (the demo report, `mugv evaluate`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["score_interval", "wilson_interval"]


def wilson_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% at z = 1.96) of a rate measured on n videos, each one trial
    (exact for the demo's one-object scenes, whose per-video scores are 0 or 1): on ~24
    held-out prompts a measured 0.5 spans about 0.31-0.69."""
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 videos, got {n}")
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def score_interval(scores: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """95% interval of the mean of per-video scores in [0, 1]: Wilson's when every score is 0
    or 1 (one object a video), else the normal interval of the mean (fractions from scenes of
    several objects), clipped to [0, 1]."""
    n = len(scores)
    if n < 1:
        raise ValueError("score_interval needs at least one score")
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        return wilson_interval(mean, n, z)
    if n == 1:
        return (0.0, 1.0)
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1))
    half = z * sd / math.sqrt(n)
    return (max(0.0, mean - half), min(1.0, mean + half))

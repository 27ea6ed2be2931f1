"""Pieces the world-training benchmarks share: a wall-time budget for a fit, clip tensors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


class TimeUp(Exception):
    """Raised from a Trainer's on_step callback when the wall-time budget is spent."""


def fit_within(fit: Callable[[Callable[[Any], None]], Any], minutes: float) -> None:
    """Run ``fit(on_step)`` (e.g. ``trainer.fit``) until it ends or ``minutes`` have passed."""
    end = time.monotonic() + 60 * minutes

    def on_step(out: Any) -> None:
        if time.monotonic() > end:
            raise TimeUp

    try:
        fit(on_step)
    except TimeUp:
        log.info("wall-time budget of %.1f min spent", minutes)


def clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0

"""Pieces the world-training benchmarks share: a wall-time budget for a fit, clip tensors,
encoded world splits and the small MUGDiT configs."""

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


@torch.no_grad()
def encode_world(world, vae, encoder, split: str, count: int, batch: int = 16):
    latents, clips = [], []
    for start in range(0, count, batch):
        items = [world.sample(split, i) for i in range(start, min(start + batch, count))]
        latents.append(vae.encode(torch.stack([clip_tensor(c.clip.frames) for c in items])))
        clips += items
    latents = torch.cat(latents)  # (N, C, t, h, w)
    rows, feats = [], []
    for i, item in enumerate(clips):
        tokens, mask = encoder.encode(item.captions)
        for k in range(len(item.captions)):
            rows.append(i)
            feats.append(tokens[k, mask[k]])
    return latents, rows, feats, clips


def tiny_config(args: Any, text_dim: int, in_channels: int) -> Any:
    """The "tiny" MUGDiT config at the width, heads and depth of ``args``."""
    from mugv.dit.config import dit_config

    return dit_config(
        "tiny",
        text_dim=text_dim,
        in_channels=in_channels,
        hidden_size=args.hidden,
        num_heads=args.heads,
        depth=args.depth,
    )

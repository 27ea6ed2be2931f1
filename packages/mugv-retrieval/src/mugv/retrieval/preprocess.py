"""Clips to model input: uniform temporal sampling, square resize, normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mugv.data import VideoClip
from mugv.retrieval._errors import InputError


def frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread uniformly (segment centres) over `num_available` frames."""
    centres = (np.arange(num_frames) + 0.5) * num_available / num_frames
    return np.minimum(centres.astype(np.int64), num_available - 1)


def clip_to_tensor(clip: VideoClip, num_frames: int, image_size: int) -> torch.Tensor:
    """A clip -> (T, 3, S, S) float in [-1, 1]; raises `InputError` naming the clip."""
    name = getattr(clip, "source", "") or "clip"
    frames = getattr(clip, "frames", None)
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(
            f"{name}: expected a VideoClip with uint8 frames (T, H, W, 3); got "
            f"{type(clip).__name__} with frames {getattr(frames, 'shape', None)}"
        )
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise InputError(f"{name}: the clip has an empty frame array {frames.shape}")
    picked = frames[frame_indices(frames.shape[0], num_frames)]
    x = torch.from_numpy(np.ascontiguousarray(picked)).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    return x * 2.0 - 1.0


def clips_to_tensor(clips: Sequence[VideoClip], num_frames: int, image_size: int) -> torch.Tensor:
    """Clips -> (B, T, 3, S, S); the first bad clip raises `InputError`."""
    return torch.stack([clip_to_tensor(c, num_frames, image_size) for c in clips])

"""Conversions between `mugv.data.VideoClip` uint8 frames and the VAE's [-1, 1] tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mugv.data import VideoClip
from mugv.vae._errors import VAEInputError


def video_to_tensor(clip: VideoClip | np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames (or a VideoClip) -> float32 (3, T, H, W) in [-1, 1]."""
    frames = clip.frames if isinstance(clip, VideoClip) else clip
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '?')} {getattr(frames, 'shape', '?')}"
        raise VAEInputError(f"frames must be a uint8 array (T, H, W, 3); got {got}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, T, H, W)
    return x.float() / 127.5 - 1.0


def clips_to_batch(clips: Sequence[VideoClip]) -> torch.Tensor:
    """Same-sized clips -> (B, 3, T, H, W) in [-1, 1]."""
    shapes = {c.frames.shape for c in clips}
    if len(shapes) != 1:
        raise VAEInputError(f"clips in one batch must share (T, H, W, 3); got {sorted(shapes)}")
    return torch.stack([video_to_tensor(c) for c in clips])


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3), rounded and clipped."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise VAEInputError(f"video must be (3, T, H, W); got {tuple(video.shape)}")
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()

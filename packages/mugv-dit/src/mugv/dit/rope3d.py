"""3D rotary position embedding over (h, w, t), exactly as the MUG-V reference applies it.

With head dim D, each axis gets D/6 complex frequencies f_j = theta^(-6j/D); a token's angles
are concatenated in the order (h, w, t) and rotate *adjacent* (interleaved) channel pairs of q
and k. The time position is the latent frame's index in the source video (clamped to
`max_frames - 1`), so a clip cut from the middle of a video keeps its place in time; the start
token sits at (first frame, 0, 0) and the end token at (last frame, H-1, W-1).
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> Tensor:
    """(D/6,) float64 frequencies shared by the three axes."""
    j = torch.arange(head_dim // 6, dtype=torch.float64)
    return theta ** (-6.0 * j / head_dim)


def video_positions(
    frame_index: Tensor, height: int, width: int, max_frames: int, lengths: Tensor | None = None
) -> Tensor:
    """(B, 2 + T*H*W, 3) integer (h, w, t) positions of [start, video tokens (t, h, w), end].

    frame_index: (B, T) latent frame indices in the source video; H, W: token grid;
    lengths: (B,) real frames per sample (default all T): the end token takes the time of the
    last real one.
    """
    batch, frames = frame_index.shape
    t = frame_index.clamp(0, max_frames - 1).long()  # (B, T)
    hh = (
        torch.arange(height, device=t.device).view(1, 1, height, 1).expand(batch, frames, -1, width)
    )
    ww = torch.arange(width, device=t.device).view(1, 1, 1, width).expand(batch, frames, height, -1)
    tt = t.view(batch, frames, 1, 1).expand(-1, -1, height, width)
    grid = torch.stack([hh, ww, tt], dim=-1).reshape(batch, frames * height * width, 3)
    zeros = torch.zeros_like(t[:, 0])
    start = torch.stack([zeros, zeros, t[:, 0]], dim=-1)  # (B, 3)
    last = t[:, -1] if lengths is None else t.gather(1, (lengths.long() - 1)[:, None])[:, 0]
    end = torch.stack([zeros + height - 1, zeros + width - 1, last], dim=-1)
    return torch.cat([start[:, None], grid, end[:, None]], dim=1)


def rope_angles(positions: Tensor, head_dim: int, theta: float = 10000.0) -> Tensor:
    """(..., 3) positions -> (..., D/2) float64 rotation angles in (h, w, t) order."""
    freqs = rope_frequencies(head_dim, theta).to(positions.device)
    angles = positions.to(torch.float64)[..., None] * freqs  # (..., 3, D/6)
    return angles.flatten(-2)


def rope_rotation(angles: Tensor, dtype: torch.dtype) -> Tensor:
    """e^(i * angles): the complex factors `apply_rope` multiplies x of `dtype` by (complex128
    for float64, else complex64: half-precision x is rotated in float32)."""
    rotation = torch.polar(torch.ones_like(angles), angles)
    return rotation.to(torch.complex128 if dtype == torch.float64 else torch.complex64)


def apply_rope(x: Tensor, rotation: Tensor) -> Tensor:
    """Rotates adjacent channel pairs of x (..., D) by angles broadcastable to (..., D/2).

    `rotation`: the angles, or their `rope_rotation` as the model precomputes once per forward.
    The pair (x0, x1) is the complex number x0 + i x1, so the rotation is one complex product.
    """
    if not rotation.is_complex():
        rotation = rope_rotation(rotation, x.dtype)
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    z = torch.view_as_complex(work.contiguous().unflatten(-1, (-1, 2)))  # (..., D/2)
    return torch.view_as_real(z * rotation).flatten(-2).to(x.dtype)

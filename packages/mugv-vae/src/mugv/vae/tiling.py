"""Spatial tiling with blended overlaps, to bound the memory of the per-frame spatial stage.

Tiles overlap by a quarter of their size; every output pixel is the average of the tiles that
cover it, weighted by a tent that falls towards each tile's border, so seams fade out. The
result is close to, not equal to, the untiled one (GroupNorm and attention see one tile).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    return [*range(0, size - tile, stride), size - tile]


def _tent(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    i = torch.arange(n, device=device, dtype=dtype)
    return torch.minimum(i + 1, n - i) / ((n + 1) / 2)  # (n,), peak 1 in the middle, > 0


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int | None,
    scale: float,
    overlap: int | None = None,
) -> torch.Tensor:
    """Apply ``fn`` ((N, C, h, w) -> (N, C', h*scale, w*scale)) to ``x`` tile by tile.

    ``tile`` is the tile side in ``x`` pixels (None: no tiling); ``overlap`` defaults to a
    quarter tile, rounded to the stride that keeps tile corners on whole output pixels.
    """
    _, _, H, W = x.shape
    if tile is None or (tile >= H and tile >= W):
        return fn(x)
    unit = max(1, round(1 / scale))
    overlap = (tile // 4) // unit * unit if overlap is None else overlap
    if tile % unit or overlap % unit or not 0 <= overlap < tile:
        raise ValueError(
            f"tile={tile} and overlap={overlap} must be multiples of {unit} with overlap < tile"
        )
    out: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    for y in _starts(H, tile, tile - overlap):
        for x0 in _starts(W, tile, tile - overlap):
            piece = fn(x[:, :, y : y + tile, x0 : x0 + tile])  # (N, C', th, tw)
            if out is None:
                shape = (*piece.shape[:2], round(H * scale), round(W * scale))
                out = piece.new_zeros(shape)
                weight = piece.new_zeros(shape[2:])
            th, tw = piece.shape[-2:]
            oy, ox = round(y * scale), round(x0 * scale)
            w = torch.outer(
                _tent(th, piece.device, piece.dtype), _tent(tw, piece.device, piece.dtype)
            )
            out[:, :, oy : oy + th, ox : ox + tw] += piece * w
            weight[oy : oy + th, ox : ox + tw] += w
    return out / weight

"""Classifier-free guidance for velocity models, with optional guidance rescale.

v = v_u + s (v_c - v_u) (Ho & Salimans 2022), where v_u comes from the negative prompt (or the
learned null text). Large s over-saturates; guidance rescale (Lin et al. 2023, "Common
diffusion noise schedules and sample steps are flawed", eq. 15-16) matches the per-sample std
of the guided velocity to the conditional one and blends by `rescale` in [0, 1].

Contrast guidance adds s_c (v_c - mean_j v_j), where v_j are the velocities under *contrast
prompts*: captions that differ from the prompt in what the video must get right (the same
sentence with another shape, say). In score terms v_c - v_j is proportional to the gradient of
log p(c | x_t) - log p(c_j | x_t), the model's own classifier restricted to the label set
{c, c_j}: the push goes towards videos that the prompt explains better than its rivals do,
where CFG's v_c - v_u mixes that with everything the prompt says at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mugv.dit.config import DiTError

__all__ = ["cfg_combine", "contrast_term"]


def cfg_combine(v_cond: Tensor, v_uncond: Tensor, scale: float, rescale: float = 0.0) -> Tensor:
    """Guided velocity (B, ...) from the conditional and unconditional velocities (B, ...)."""
    if v_cond.shape != v_uncond.shape:
        raise DiTError(
            f"v_cond {tuple(v_cond.shape)} and v_uncond {tuple(v_uncond.shape)} must match"
        )
    if not 0.0 <= rescale <= 1.0:
        raise DiTError(f"guidance rescale must be in [0, 1], got {rescale}")
    guided = v_uncond + scale * (v_cond - v_uncond)
    if rescale == 0.0:
        return guided
    dims = tuple(range(1, v_cond.dim()))
    std_cond = v_cond.std(dim=dims, keepdim=True)
    std_guided = guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
    return rescale * guided * (std_cond / std_guided) + (1 - rescale) * guided


def contrast_term(
    v_cond: Tensor,
    v_contrast: Tensor,
    owner: Tensor,
    scale: float,
    weights: Tensor | None = None,
) -> Tensor:
    """scale * (v_cond - the mean of each sample's contrast velocities), shape (B, ...).

    `v_contrast` (N, ...) holds one row per contrast prompt, `owner` (N,) the index in
    [0, B) of the sample it belongs to; every sample needs at least one row. `weights` (N,),
    positive, makes the mean a weighted one (a weight of 2 counts a row twice).
    """
    batch = v_cond.shape[0]
    if v_contrast.shape[1:] != v_cond.shape[1:] or owner.shape != v_contrast.shape[:1]:
        raise DiTError(
            f"v_contrast {tuple(v_contrast.shape)} and owner {tuple(owner.shape)} do not fit "
            f"v_cond {tuple(v_cond.shape)}: one owner index per contrast row"
        )
    counts = torch.bincount(owner, minlength=batch)
    if counts.numel() != batch or bool((counts == 0).any()):
        raise DiTError(f"every sample needs at least one contrast row; counts per sample {counts}")
    if weights is None:
        weights = torch.ones(len(owner), dtype=v_cond.dtype, device=v_cond.device)
    elif weights.shape != owner.shape or not bool((weights > 0).all()):
        raise DiTError(
            f"contrast weights {tuple(weights.shape)} must be positive, one per contrast row "
            f"({tuple(owner.shape)})"
        )
    weights = weights.to(device=v_cond.device, dtype=v_cond.dtype)
    shape = (-1,) + (1,) * (v_cond.dim() - 1)
    total = torch.zeros_like(v_cond).index_add_(0, owner, v_contrast * weights.view(shape))
    norm = torch.zeros(batch, dtype=v_cond.dtype, device=v_cond.device).index_add_(
        0, owner, weights
    )
    return scale * (v_cond - total / norm.view(shape))

"""Classifier-free guidance for velocity models, with optional guidance rescale.

v = v_u + s (v_c - v_u) (Ho & Salimans 2022), where v_u comes from the negative prompt (or the
learned null text). Large s over-saturates; guidance rescale (Lin et al. 2023, "Common
diffusion noise schedules and sample steps are flawed", eq. 15-16) matches the per-sample std
of the guided velocity to the conditional one and blends by `rescale` in [0, 1].
"""

from __future__ import annotations

from torch import Tensor

from mugv.dit.config import DiTError

__all__ = ["cfg_combine"]


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

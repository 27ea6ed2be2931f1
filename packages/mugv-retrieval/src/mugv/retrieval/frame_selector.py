"""Hierarchical frame selector: text-conditioned, differentiable perturbed top-k.

TW-BERT fine-tunes with a selector that keeps ~72% of the frames in two stages (keep 85%,
then 85% again), scoring each frame from its CLS token and the text CLS. Training uses the
perturbed-optimiser top-k (Berthet et al. 2020; Cordonnier et al. 2021): the soft indicator
is the mean of hard top-k indicators of noisy scores, and its gradient is the Monte-Carlo
estimate E[indicator * noise] / sigma. Evaluation takes the hard top-k.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _topk_indicators(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Hard top-k one-hots kept in temporal order: (..., T) -> (..., k, T)."""
    idx = scores.topk(k, dim=-1).indices.sort(dim=-1).values  # (..., k)
    return torch.nn.functional.one_hot(idx, scores.shape[-1]).to(scores.dtype)


class PerturbedTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, k: int, num_samples: int, sigma: float):
        # scores: (B, T) -> soft indicators (B, k, T)
        noise = torch.randn(scores.shape[0], num_samples, scores.shape[1], dtype=scores.dtype)
        indicators = _topk_indicators(scores[:, None, :] + sigma * noise, k)  # (B, S, k, T)
        ctx.save_for_backward(indicators, noise)
        ctx.sigma = sigma
        return indicators.mean(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        indicators, noise = ctx.saved_tensors
        # d E[Y] / d s ~ E[Y (x) Z] / sigma, contracted with the incoming (B, k, T) gradient
        jac = torch.einsum("bskt,bsu->bktu", indicators, noise) / (indicators.shape[1] * ctx.sigma)
        return torch.einsum("bkt,bktu->bu", grad, jac), None, None, None


class FrameSelector(nn.Module):
    """Scores frames from (frame CLS, text CLS) and keeps ceil(keep * T) of them."""

    def __init__(self, hidden: int, keep: float, num_samples: int = 100, sigma: float = 0.05):
        super().__init__()
        self.keep, self.num_samples, self.sigma = keep, num_samples, sigma
        self.score = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(
        self, frame_cls: torch.Tensor, text_cls: torch.Tensor, *frame_tensors: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        # frame_cls: (B, T, C); text_cls: (B, C); frame_tensors: (B, T, ...) each
        t = frame_cls.shape[1]
        k = max(1, math.ceil(self.keep * t))
        paired = torch.cat([frame_cls, text_cls[:, None, :].expand_as(frame_cls)], dim=-1)
        scores = self.score(paired).squeeze(-1)  # (B, T)
        if self.training:
            select = PerturbedTopK.apply(scores, k, self.num_samples, self.sigma)
        else:
            select = _topk_indicators(scores, k)  # (B, k, T)
        out = []
        for x in (frame_cls, *frame_tensors):
            out.append(torch.einsum("bkt,bt...->bk...", select, x))
        return tuple(out)

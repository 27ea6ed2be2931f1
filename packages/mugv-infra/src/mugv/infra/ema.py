"""Exponential moving average of the weights (DiT/MUG-V keep one with decay 0.9999)."""

from __future__ import annotations

import torch
from torch import nn

from mugv.infra._errors import ConfigError


class EMA:
    """fp32 shadow copies of a model's trainable parameters: ema <- decay*ema + (1-decay)*p.

    Each rank keeps the EMA of its own (TP-shard of the) parameters, so it checkpoints and
    reshards like the parameters themselves.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"EMA decay={decay} must be in (0, 1): e.g. 0.9999")
        self.decay = decay
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step from the live parameters (after the optimizer step)."""
        shadow = list(self.shadow.values())
        live = [p.detach().float() for p in self.params.values()]
        torch._foreach_lerp_(shadow, live, 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Writes the EMA weights into `model` (same architecture and parallel layout)."""
        named = dict(model.named_parameters())
        for name, value in self.shadow.items():
            named[name].copy_(value)

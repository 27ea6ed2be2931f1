"""Learning-rate schedules: linear warm-up, then cosine decay to `min_lr`, constant, or the
inverse square root of the Transformer paper ("Noam", used by TSG's cross-entropy stage)."""

from __future__ import annotations

import math


def lr_at(
    step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int, schedule: str
) -> float:
    """Learning rate for optimizer step `step` (0-based); a pure function of the step.

    Warm-up ramps linearly from lr/warmup_steps to lr; cosine then decays to `min_lr` at
    `total_steps`; constant stays at `lr`; inverse_sqrt decays as lr * sqrt(warmup / step)
    (Noam's schedule scaled to peak at `lr`).
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "inverse_sqrt":
        return lr * math.sqrt(max(warmup_steps, 1) / (step + 1))
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))

"""Rectified flow: the MUG-V training objective and its noise-time schedule.

Convention (the reference's, used everywhere in this package): time t in [0, 1] runs from data
to noise, x_t = (1 - t) x0 + t eps, and the model predicts the velocity v = x0 - eps, i.e. the
direction *towards the data*. Along the straight path dx_t/dt = -v, so a sampler moving from
t to t' < t adds (t - t') v.

Training (MUG-V section 3, after SD3): t ~ logit-normal(0, 1), warped by the resolution- and
length-dependent shift t' = s t / (1 + (s - 1) t) with s = sqrt(H W / 512^2) sqrt(T_latent);
the MSE counts only non-conditioning frames; tasks t2i / t2v / i2v / random-frame conditioning
are drawn per sample in one run, with per-task loss weights; the text is dropped (replaced by
the model's learned null embedding) with probability `text_dropout` for classifier-free guidance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mugv.dit.config import DiTError

__all__ = [
    "TASKS",
    "FlowConfig",
    "FlowError",
    "RectifiedFlow",
    "masked_mse",
    "shift_ratio",
    "time_shift",
]

TASKS = ("t2i", "t2v", "i2v", "frames")
"""t2i: latent frame 0 alone, no conditioning; t2v: whole clip, no conditioning; i2v: latent
frame 0 given clean; frames: a random non-empty, non-full subset of latent frames given clean."""

VelocityModel = Callable[..., Tensor]


class FlowError(DiTError):
    """Bad rectified-flow configuration or input; the message names the field and the fix."""


def shift_ratio(height: int, width: int, latent_frames: int, base_pixels: int = 512 * 512) -> float:
    """SD3-style shift for a clip of `height x width` pixels and `latent_frames` latent frames."""
    if height < 1 or width < 1 or latent_frames < 1:
        raise FlowError(
            f"shift_ratio needs positive sizes, got height={height}, width={width}, "
            f"latent_frames={latent_frames}"
        )
    return math.sqrt(height * width / base_pixels) * math.sqrt(latent_frames)


def time_shift(t: Tensor, ratio: float) -> Tensor:
    """Warp t in [0, 1] towards noise (ratio > 1) or data (ratio < 1); 0 and 1 are fixed points.

    Written as r t / (r t + 1 - t) so that t = 1 maps to exactly 1 (x / x); the form
    r t / (1 + (r - 1) t) gives 1 + 2e-16 for some ratios (0.108, the demo's), which puts the
    sampler's first step outside a [lo, 1] interval."""
    return ratio * t / (ratio * t + (1 - t))


def masked_mse(pred: Tensor, target: Tensor, loss_mask: Tensor) -> Tensor:
    """Per-sample mean squared error over the frames where `loss_mask` (B, T) is True -> (B,)."""
    frame_err = (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))  # (B, T)
    weight = loss_mask.to(frame_err.dtype)
    return (frame_err * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)


@dataclass(kw_only=True)
class FlowConfig:
    """How t, tasks and text dropout are drawn, and how the task losses are weighted."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    use_shift: bool = True
    base_pixels: int = 512 * 512
    task_probs: dict[str, float] = field(
        default_factory=lambda: {"t2i": 0.1, "t2v": 0.5, "i2v": 0.3, "frames": 0.1}
    )
    task_weights: dict[str, float] = field(
        default_factory=lambda: {"t2i": 0.5, "t2v": 1.0, "i2v": 1.0, "frames": 1.0}
    )
    text_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.logit_std <= 0:
            raise FlowError(f"FlowConfig.logit_std must be > 0, got {self.logit_std}")
        if self.base_pixels < 1:
            raise FlowError(f"FlowConfig.base_pixels must be >= 1, got {self.base_pixels}")
        if not 0 <= self.text_dropout < 1:
            raise FlowError(f"FlowConfig.text_dropout must be in [0, 1), got {self.text_dropout}")
        for name in ("task_probs", "task_weights"):
            table = getattr(self, name)
            unknown = set(table) - set(TASKS)
            if unknown:
                raise FlowError(
                    f"FlowConfig.{name} has unknown tasks {sorted(unknown)}; use {TASKS}"
                )
            if any(v < 0 for v in table.values()):
                raise FlowError(f"FlowConfig.{name} values must be >= 0, got {table}")
        if sum(self.task_probs.values()) <= 0:
            raise FlowError(
                "FlowConfig.task_probs must give at least one task a positive probability"
            )
        missing = {k for k, p in self.task_probs.items() if p > 0} - set(self.task_weights)
        if missing:
            raise FlowError(
                f"FlowConfig.task_weights lacks weights for sampled tasks {sorted(missing)}"
            )


class RectifiedFlow:
    """Noising, time sampling and the joint-task loss of MUG-V's rectified flow."""

    def __init__(self, config: FlowConfig | None = None) -> None:
        self.config = config or FlowConfig()
        self.tasks = [k for k in TASKS if self.config.task_probs.get(k, 0) > 0]

    @staticmethod
    def add_noise(x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = (1 - t) x0 + t eps, with t (B,) broadcast over (B, C, T, H, W)."""
        t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        return (1 - t) * x0 + t * noise

    @staticmethod
    def velocity(x0: Tensor, noise: Tensor) -> Tensor:
        """The regression target v = x0 - eps."""
        return x0 - noise

    def ratio(self, height: int, width: int, latent_frames: int) -> float:
        """The shift ratio for a pixel size and latent length (1.0 when the shift is off)."""
        if not self.config.use_shift:
            return 1.0
        return shift_ratio(height, width, latent_frames, self.config.base_pixels)

    def sample_t(
        self, batch: int, ratio: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Logit-normal t (B,), warped by `time_shift(., ratio)`."""
        u = torch.randn(batch, generator=generator) * self.config.logit_std + self.config.logit_mean
        return time_shift(torch.sigmoid(u), ratio)

    def sample_tasks(
        self, batch: int, num_frames: int, generator: torch.Generator | None = None
    ) -> list[str]:
        """One task per sample; conditioning tasks need >= 2 latent frames and are skipped otherwise."""
        tasks = self.tasks if num_frames > 1 else [k for k in self.tasks if k in ("t2i", "t2v")]
        if not tasks:
            raise FlowError(
                f"no task in FlowConfig.task_probs can train on {num_frames} latent frame(s); "
                "give t2i or t2v a positive probability"
            )
        probs = torch.tensor([float(self.config.task_probs[k]) for k in tasks])
        idx = torch.multinomial(probs, batch, replacement=True, generator=generator)
        return [tasks[i] for i in idx.tolist()]

    @staticmethod
    def cond_mask_for(
        tasks: list[str], num_frames: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Conditioning frames (B, T) bool: frame 0 for i2v, a random proper subset for frames."""
        mask = torch.zeros(len(tasks), num_frames, dtype=torch.bool)
        for i, task in enumerate(tasks):
            if task == "i2v":
                mask[i, 0] = True
            elif task == "frames":
                count = int(torch.randint(1, num_frames, (), generator=generator))
                mask[i, torch.randperm(num_frames, generator=generator)[:count]] = True
        return mask

    def loss(
        self,
        model: VelocityModel,
        latents: Tensor,
        text: Tensor,
        text_mask: Tensor,
        fps: Tensor,
        *,
        height: int,
        width: int,
        frame_index: Tensor | None = None,
        generator: torch.Generator | None = None,
        fixed_signature: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Joint-task rectified-flow loss on clean latents (B, C, T, h, w).

        `height`, `width` are the clip's pixel size (for the shift). The model runs once on
        the whole batch, as a pipeline schedule needs (one forward per micro-batch and stage):
        t2i samples keep latent frame 0 and, in a batch with videos, the model is told their
        other frames are padding (`num_frames`). Returns the weighted mean loss (scalar,
        differentiable) and, per task present in the batch, its mean unweighted loss
        (detached) under the key `loss/<task>`.

        With `fixed_signature` every video batch passes `cond_mask` and `num_frames` (all
        False / all frames when no sample needs them; the same output), so a compiled model
        meets one call signature per clip length instead of one per mix of tasks.
        """
        if latents.dim() != 5:
            raise FlowError(f"latents must be (B, C, T, h, w), got shape {tuple(latents.shape)}")
        batch, _, num_frames = latents.shape[:3]
        tasks = self.sample_tasks(batch, num_frames, generator)
        drop_text = torch.rand(batch, generator=generator) < self.config.text_dropout
        device = latents.device
        image = torch.tensor([k == "t2i" for k in tasks])  # (B,)
        # t2i trains on latent frame 0 alone (it encodes the first frame as an image); among
        # videos an image is padded to the clip's length, its extra frames masked out.
        frames = 1 if bool(image.all()) else num_frames
        x0 = latents[:, :, :frames]  # (B, C, T, h, w)
        real = torch.where(image, 1, frames)  # (B,) real latent frames per sample
        cond = torch.zeros(batch, frames, dtype=torch.bool)  # (B, T)
        t = torch.zeros(batch)
        noise = torch.zeros_like(x0)
        # Draws in the order of the former per-group forwards (images, then videos), so a
        # seeded generator gives the same t, noise and conditioning as before.
        for group_frames, rows in ((1, image), (frames, ~image)):
            idx = rows.nonzero()[:, 0]
            if len(idx) == 0:
                continue
            cond[idx, :group_frames] = self.cond_mask_for(
                [tasks[i] for i in idx.tolist()], group_frames, generator
            )
            t[idx] = self.sample_t(len(idx), self.ratio(height, width, group_frames), generator)
            shape = (len(idx), *x0.shape[1:2], group_frames, *x0.shape[3:])
            if generator is None:
                group_noise = torch.randn(shape, device=device, dtype=x0.dtype)
            else:  # a seeded CPU generator gives the same noise on any device
                group_noise = torch.randn(shape, generator=generator).to(device, x0.dtype)
            noise[idx.to(device), :, :group_frames] = group_noise
        cond, t = cond.to(device), t.to(device)
        cond5 = cond.view(batch, 1, frames, 1, 1)
        x_t = torch.where(cond5, x0, self.add_noise(x0, noise, t))
        mixed = frames > 1 and (fixed_signature or bool(image.any()))
        conditioned = (fixed_signature and frames > 1) or bool(cond.any())
        pred = model(  # one forward per batch: a pipeline stage runs each micro-batch once
            x_t,
            t.to(x0.dtype),
            text,
            text_mask,
            fps,
            cond_mask=cond if conditioned else None,
            frame_index=None if frame_index is None else frame_index[:, :frames],
            drop_text=drop_text.to(device),
            **({"num_frames": real.to(device)} if mixed else {}),
        )
        in_clip = torch.arange(frames) < real[:, None]  # (B, T)
        per_sample = masked_mse(pred, self.velocity(x0, noise), ~cond & in_clip.to(device))
        weights = torch.tensor([self.config.task_weights[k] for k in tasks], device=device)
        loss = (weights * per_sample).sum() / batch
        logs = {}
        for task in dict.fromkeys(tasks):
            sel = torch.tensor([k == task for k in tasks], device=device)
            logs[f"loss/{task}"] = per_sample[sel].mean().detach()
        return loss, logs

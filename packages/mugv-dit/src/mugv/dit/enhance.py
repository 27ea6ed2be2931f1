"""One-step SDEdit-style enhancement of videos, and the trainer that learns it.

MUG-V refines generated videos with a second, LoRA-tuned video DiT (SPEC "MUG-V inference and
enhancement"): encode the video, noise it to sigma ~ 0.3, take **one** denoising step with low
classifier-free guidance (2.0) with the first latent frame held, decode. SDEdit (Meng et al.
2022) explains why this works: at a moderate noise level the flow forgets fine-scale defects
while keeping layout, colour and motion, and the model's step pulls the sample back to the
data. With x_sigma = (1 - sigma) z + sigma eps and the velocity v = x0 - eps, one Euler step
from t = sigma to 0 gives z' = x_sigma + sigma v.

A DiT trained only on clean data undoes the noise it was given; `EnhanceStep` teaches it to
undo the degradation too, from (degraded, clean) pairs: for x_t = (1 - t) z_deg + t eps it
regresses the velocity whose one step lands on the clean latents,

    v* = (z_clean - x_t) / t = (z_clean - (1 - t) z_deg) / t - eps,

which is the ordinary flow target z - eps when z_deg = z_clean. `degrade` makes the pairs:
Gaussian blur, Gaussian pixel noise, and H.264 compression at a high CRF.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from mugv.dit.guidance import cfg_combine
from mugv.dit.pipeline import LatentCodec, PipelineError
from mugv.dit.rectified_flow import FlowError
from mugv.dit.text_encoder import TextEncoder
from mugv.infra.data import ShuffledBatches
from mugv.infra.parallel import DistInfo
from mugv.infra.trainer import Trainer, TrainerConfig

logger = logging.getLogger(__name__)

__all__ = [
    "DEGRADATIONS",
    "EnhanceConfig",
    "EnhancePairs",
    "EnhanceStep",
    "Enhancer",
    "degrade",
    "psnr",
    "train_enhancer",
]

DEGRADATIONS = ("blur", "noise", "compression")
"""blur: Gaussian blur, strength = sigma in pixels; noise: Gaussian noise, strength = std on
the [-1, 1] scale; compression: H.264 round trip, strength = CRF (0-51)."""


@dataclass(kw_only=True)
class EnhanceConfig:
    """SPEC defaults: noise to sigma 0.3, one step, CFG 2.0, first latent frame held."""

    sigma: float = 0.3
    guidance_scale: float = 2.0
    hold_first_frame: bool = True
    negative_prompt: str | None = None
    fps: float = 8.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.sigma <= 1:
            raise PipelineError(f"EnhanceConfig.sigma must be in (0, 1], got {self.sigma}")
        if self.guidance_scale < 0:
            raise PipelineError(
                f"EnhanceConfig.guidance_scale must be >= 0, got {self.guidance_scale}"
            )
        if not self.fps > 0:
            raise PipelineError(f"EnhanceConfig.fps must be > 0, got {self.fps}")


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-video PSNR (B,) in dB of videos (B, 3, T, H, W) in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float().clamp(-1, 1) - b.float().clamp(-1, 1)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp(min=1e-12))


def _gaussian_blur(video: Tensor, sigma: float) -> Tensor:
    radius = max(1, round(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(video.dtype)
    b, c, t, h, w = video.shape
    frames = video.permute(0, 2, 1, 3, 4).reshape(b * t * c, 1, h, w)  # (B*T*3, 1, H, W)
    frames = F.pad(frames, (radius, radius, radius, radius), mode="replicate")
    frames = F.conv2d(frames, kernel.view(1, 1, 1, -1))
    frames = F.conv2d(frames, kernel.view(1, 1, -1, 1))
    return frames.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def _h264(video: Tensor, crf: int, fps: float) -> Tensor:
    from mugv.data.video import encode_video, read_video

    out = []
    for clip in video:  # (3, T, H, W)
        frames = ((clip.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        data = encode_video(frames.permute(1, 2, 3, 0).numpy(), fps=fps, crf=crf)
        decoded = np.ascontiguousarray(read_video(data).frames)  # (T, H, W, 3)
        out.append(torch.from_numpy(decoded).permute(3, 0, 1, 2).float() / 127.5 - 1.0)
    return torch.stack(out).to(video.dtype)


def degrade(
    video: Tensor,
    kind: str,
    strength: float,
    *,
    generator: torch.Generator | None = None,
    fps: float = 8.0,
) -> Tensor:
    """A degraded copy of videos (B, 3, T, H, W) in [-1, 1]; see `DEGRADATIONS` for strengths."""
    if video.dim() != 5 or video.shape[1] != 3:
        raise PipelineError(f"video must be (B, 3, T, H, W) in [-1, 1], got {tuple(video.shape)}")
    if kind == "blur":
        if not strength > 0:
            raise PipelineError(
                f"blur strength is the Gaussian sigma in pixels (> 0), got {strength}"
            )
        return _gaussian_blur(video, strength)
    if kind == "noise":
        if strength < 0:
            raise PipelineError(
                f"noise strength is a std on the [-1, 1] scale (>= 0), got {strength}"
            )
        noise = torch.randn(video.shape, generator=generator).to(video)
        return (video + strength * noise).clamp(-1, 1)
    if kind == "compression":
        if not 0 <= strength <= 51 or strength != int(strength):
            raise PipelineError(f"compression strength is an H.264 CRF in 0..51, got {strength}")
        return _h264(video, int(strength), fps)
    raise PipelineError(f"unknown degradation {kind!r}; use one of {DEGRADATIONS}")


class Enhancer:
    """Refines videos with one SDEdit step of a MUGDiT (or any model with its signature).

    `text_encoder` is needed only when prompts are given; without prompts the model runs on
    its learned null caption (no guidance, as both branches would be the same).
    """

    def __init__(
        self, model: nn.Module, codec: LatentCodec, text_encoder: TextEncoder | None = None
    ) -> None:
        self.model, self.codec, self.text_encoder = model, codec, text_encoder

    def _text(
        self, prompts: Sequence[str] | None, batch: int, config: EnhanceConfig, device, dtype
    ):
        """Text (B', L, D), mask, drop_text and whether CFG runs (B' = 2B with CFG)."""
        use_cfg = prompts is not None and config.guidance_scale != 1.0
        if prompts is None:
            dim = self.model.dit.text_dim if hasattr(self.model, "dit") else None
            if dim is None:
                raise PipelineError("Enhancer without prompts needs a model with a .dit config")
            text = torch.zeros(batch, 1, dim, device=device, dtype=dtype)
            mask = torch.ones(batch, 1, dtype=torch.bool, device=device)
            return text, mask, torch.ones(batch, dtype=torch.bool, device=device), False
        if len(prompts) != batch or isinstance(prompts, str):
            raise PipelineError(f"give one prompt per video: {batch} videos, prompts={prompts!r}")
        if self.text_encoder is None:
            raise PipelineError("Enhancer got prompts but no text_encoder: pass one, or no prompts")
        negative = config.negative_prompt
        texts = list(prompts) + ([negative or ""] * batch if use_cfg else [])
        text, mask = self.text_encoder.encode(texts)
        drop = torch.zeros(len(texts), dtype=torch.bool, device=device)
        if use_cfg and not negative:
            drop[batch:] = True  # the learned null caption is the unconditional branch
        return text.to(device, dtype), mask.to(device), drop, use_cfg

    @torch.no_grad()
    def enhance_latents(
        self,
        latents: Tensor,
        prompts: Sequence[str] | None = None,
        config: EnhanceConfig | None = None,
        *,
        first_frame: Tensor | None = None,
    ) -> Tensor:
        """One step from sigma to 0 on latents (B, C, t, h, w). The held first latent frame is
        `first_frame` (B, C, 1, h, w), e.g. the encoded i2v reference image, else the input's."""
        config = config or EnhanceConfig()
        param = next(self.model.parameters())
        device, dtype = param.device, param.dtype
        z = latents.to(device, dtype)
        batch, frames = z.shape[0], z.shape[2]
        gen = torch.Generator().manual_seed(config.seed)
        noise = torch.randn(z.shape, generator=gen).to(device, dtype)
        sigma = config.sigma
        x = (1 - sigma) * z + sigma * noise  # (B, C, t, h, w)
        cond_mask = None
        if config.hold_first_frame:
            held = z[:, :, :1] if first_frame is None else first_frame.to(device, dtype)
            if held.shape != z[:, :, :1].shape:
                raise PipelineError(
                    f"first_frame has shape {tuple(held.shape)}, expected {tuple(z[:, :, :1].shape)}"
                )
            x[:, :, :1] = held
            cond_mask = torch.zeros(batch, frames, dtype=torch.bool, device=device)
            cond_mask[:, 0] = True
        text, mask, drop, use_cfg = self._text(prompts, batch, config, device, dtype)
        copies = 2 if use_cfg else 1
        self.model.eval()
        v = self.model(
            x.repeat(copies, 1, 1, 1, 1),
            torch.full((batch * copies,), sigma, device=device, dtype=dtype),
            text,
            mask,
            torch.full((batch * copies,), float(config.fps), device=device, dtype=dtype),
            cond_mask=None if cond_mask is None else cond_mask.repeat(copies, 1),
            drop_text=drop,
        )
        if use_cfg:
            v = cfg_combine(v[:batch], v[batch:], config.guidance_scale)
        out = x + sigma * v  # Euler from t = sigma to 0
        if config.hold_first_frame:
            out[:, :, :1] = x[:, :, :1]
        return out

    @torch.no_grad()
    def __call__(
        self,
        video: Tensor,
        prompts: Sequence[str] | None = None,
        config: EnhanceConfig | None = None,
        *,
        first_frame: Tensor | None = None,
        **overrides: Any,
    ) -> Tensor:
        """Enhanced videos (B, 3, T, H, W) in [-1, 1] from videos of the same shape.

        `first_frame` (B, 3, H, W): the i2v reference image, held as the first latent frame.
        Keyword overrides change single fields of `config` (`sigma=0.2`).
        """
        config = replace(config or EnhanceConfig(), **overrides)
        if video.dim() != 5 or video.shape[1] != 3:
            raise PipelineError(
                f"video must be (B, 3, T, H, W) in [-1, 1], got {tuple(video.shape)}"
            )
        latents = self.codec.encode(video)
        held = None if first_frame is None else self.codec.encode(first_frame.unsqueeze(2))
        out = self.codec.decode(self.enhance_latents(latents, prompts, config, first_frame=held))
        return out[:, :, : video.shape[2]].clamp(-1, 1)


class EnhancePairs(Dataset):
    """(degraded, clean) latent pairs (N, C, T, h, w) with per-item text features (L_i, D)."""

    def __init__(
        self,
        degraded: Tensor,
        clean: Tensor,
        texts: Sequence[Tensor],
        fps: float,
        *,
        height: int,
        width: int,
    ) -> None:
        if degraded.shape != clean.shape or clean.dim() != 5:
            raise FlowError(
                f"degraded {tuple(degraded.shape)} and clean {tuple(clean.shape)} latents must be "
                "equal-shaped (N, C, T, h, w)"
            )
        if len(texts) != clean.shape[0]:
            raise FlowError(f"got {clean.shape[0]} pairs but {len(texts)} text features")
        self.degraded, self.clean, self.texts = degraded, clean, list(texts)
        self.fps, self.height, self.width = float(fps), height, width

    def __len__(self) -> int:
        return self.clean.shape[0]

    def batch(self, indices: list[int]) -> dict[str, Any]:
        length = max(int(self.texts[i].shape[0]) for i in indices)
        text = torch.zeros(len(indices), length, self.texts[indices[0]].shape[1])  # (B, L, D)
        mask = torch.zeros(len(indices), length, dtype=torch.bool)
        for row, i in enumerate(indices):
            n = self.texts[i].shape[0]
            text[row, :n], mask[row, :n] = self.texts[i], True
        return {
            "degraded": self.degraded[indices],
            "clean": self.clean[indices],
            "text": text,
            "text_mask": mask,
            "fps": torch.full((len(indices),), self.fps),
        }


class EnhanceStep:
    """`step_fn(model, batch)` for `mugv.infra.Trainer`: the one-step restoration loss.

    t is drawn uniformly in [sigma - spread, sigma + spread] (clamped to (0, 1]) around the
    enhancement sigma; the text is dropped with probability `text_dropout` so the unconditional
    branch of CFG learns the restoration too; with `hold_first_frame` the first latent frame is
    given clean (t = 0 modulation) and not counted, as at inference with an i2v image.
    """

    def __init__(
        self,
        sigma: float = 0.3,
        *,
        spread: float = 0.1,
        text_dropout: float = 0.1,
        hold_first_frame: bool = True,
    ) -> None:
        if not 0 < sigma <= 1 or spread < 0:
            raise FlowError(
                f"EnhanceStep needs 0 < sigma <= 1 and spread >= 0, got {sigma}, {spread}"
            )
        self.sigma, self.spread = sigma, spread
        self.text_dropout, self.hold_first_frame = text_dropout, hold_first_frame

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        param = next(model.parameters())
        device, dtype = param.device, param.dtype
        deg = batch["degraded"].to(device, dtype)
        clean = batch["clean"].to(device, dtype)
        b, _, frames = clean.shape[:3]
        low = max(self.sigma - self.spread, 1e-3)
        high = min(self.sigma + self.spread, 1.0)
        t = (low + (high - low) * torch.rand(b)).to(device, dtype)
        noise = torch.randn_like(clean)
        t5 = t.view(b, 1, 1, 1, 1)
        x_t = (1 - t5) * deg + t5 * noise
        cond = torch.zeros(b, frames, dtype=torch.bool, device=device)
        if self.hold_first_frame:
            cond[:, 0] = True
            x_t[:, :, :1] = clean[:, :, :1]
        target = (clean - x_t) / t5  # the velocity whose one step lands on the clean latents
        drop = (torch.rand(b) < self.text_dropout).to(device)
        pred = model(
            x_t,
            t,
            batch["text"].to(device, dtype),
            batch["text_mask"].to(device),
            batch["fps"].to(device, dtype),
            cond_mask=cond if cond.any() else None,
            drop_text=drop,
        )
        frame_err = (pred.float() - target.float()).pow(2).mean(dim=(1, 3, 4))  # (B, T)
        keep = (~cond).float()
        loss = ((frame_err * keep).sum(1) / keep.sum(1).clamp(min=1)).mean()
        with torch.no_grad():  # what one step does to the latents, for the log
            step_err = ((x_t + t5 * pred) - clean).float().pow(2).mean()
        return loss, {"latent_mse_after_step": float(step_err)}


def train_enhancer(
    model: nn.Module,
    data: EnhancePairs,
    config: TrainerConfig,
    *,
    info: DistInfo,
    batch_size: int,
    step: EnhanceStep | None = None,
    seed: int = 0,
    model_config: dict[str, Any] | None = None,
) -> Trainer:
    """A `Trainer` that teaches `model` the one-step enhancement (full weights, or adapters
    after `apply_lora`, as MUG-V does); call `.fit()`."""
    batches = ShuffledBatches(
        len(data),
        batch_size,
        data.batch,
        seed=seed,
        data_rank=info.data_rank,
        data_size=info.data_size,
    )
    return Trainer(
        model, step or EnhanceStep(), batches, config, info=info, model_config=model_config
    )

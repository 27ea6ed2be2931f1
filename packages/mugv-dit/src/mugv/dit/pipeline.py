"""Generation: prompt (+ reference image) -> text features -> flow sampling -> VAE decode -> mp4.

MUG-V's inference path (SPEC "MUG-V inference"): encode the prompt and the negative prompt,
start from Gaussian latents, integrate the rectified flow with classifier-free guidance (Euler,
25 steps, scale 4.0 by default), hold the first latent frame at the reference image's latent
for image-to-video, decode with the VAE and write H.264 at the fps that was asked for.
Optional contrast prompts per prompt (`contrasts=`) add contrast guidance
(`mugv.dit.guidance.contrast_term`) inside `GenerationConfig.contrast_interval`.

The pipeline takes any `LatentCodec` (an object with `encode`/`decode`), so mugv-dit does not
depend on mugv-vae; the apps wire the real VAE in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from mugv.data import VideoClip
from mugv.dit.config import DiTError
from mugv.dit.guidance import cfg_combine, contrast_term
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
from mugv.dit.samplers import SAMPLERS
from mugv.dit.text_encoder import TextEncoder
from mugv.infra.meter import fast_bf16

logger = logging.getLogger(__name__)

__all__ = ["GenerationConfig", "LatentCodec", "Pipeline", "PipelineError", "video_to_clips"]


class PipelineError(DiTError):
    """A generation request is impossible (size, length, inputs); the message says the fix."""


@runtime_checkable
class LatentCodec(Protocol):
    """A video autoencoder: video (B, 3, T, H, W) in [-1, 1] <-> normalised latents (B, C, t, h, w).

    An image is a one-frame video (T = 1) and encodes to one latent frame, the same
    representation as a video's first latent frame.
    """

    def encode(self, video: Tensor) -> Tensor: ...

    def decode(self, latents: Tensor) -> Tensor: ...


@dataclass(kw_only=True)
class GenerationConfig:
    """What to generate and how to sample it (defaults: MUG-V's Euler, 25 steps, CFG 4.0)."""

    num_frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    num_steps: int = 25
    sampler: str = "euler"
    guidance_scale: float = 4.0
    guidance_rescale: float = 0.0
    negative_prompt: str | None = None
    seed: int = 0
    # Used only with contrast prompts (`Pipeline.sample_latents(contrasts=)`): the weight of
    # the push away from them, applied while t lies in the interval (t = 1 is pure noise).
    contrast_scale: float = 4.0
    contrast_interval: tuple[float, float] = (0.3, 1.0)
    # "bf16" runs the DiT's forward passes under bf16 autocast (the latents, guidance and
    # sampler steps stay in the model's dtype); "fp32" in the model's dtype; "auto" is bf16
    # where the model's device has fast bf16 products (`mugv.infra.fast_bf16`), else fp32.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "fp32", "bf16"):
            raise PipelineError(
                f"GenerationConfig.precision={self.precision!r}; use 'auto', 'fp32' or 'bf16'"
            )
        if self.sampler not in SAMPLERS:
            raise PipelineError(
                f"GenerationConfig.sampler={self.sampler!r} is unknown; use one of {sorted(SAMPLERS)}"
            )
        for name in ("num_frames", "height", "width", "num_steps"):
            if getattr(self, name) < 1:
                raise PipelineError(
                    f"GenerationConfig.{name} must be >= 1, got {getattr(self, name)}"
                )
        if not self.fps > 0:
            raise PipelineError(f"GenerationConfig.fps must be > 0, got {self.fps}")
        if self.guidance_scale < 0:
            raise PipelineError(
                f"GenerationConfig.guidance_scale must be >= 0, got {self.guidance_scale}"
            )
        if not 0 <= self.guidance_rescale <= 1:
            raise PipelineError(
                f"GenerationConfig.guidance_rescale must be in [0, 1], got {self.guidance_rescale}"
            )
        if self.contrast_scale < 0:
            raise PipelineError(
                f"GenerationConfig.contrast_scale must be >= 0, got {self.contrast_scale}"
            )
        lo, hi = self.contrast_interval
        if not 0 <= lo < hi <= 1:
            raise PipelineError(
                f"GenerationConfig.contrast_interval must be (lo, hi) with 0 <= lo < hi <= 1, "
                f"got {self.contrast_interval}"
            )


def video_to_clips(video: Tensor, fps: float) -> list[VideoClip]:
    """Decoded videos (B, 3, T, H, W) in [-1, 1] -> uint8 `VideoClip`s (T, H, W, 3)."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    frames = frames.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, T, H, W, 3)
    return [VideoClip(frames=np.ascontiguousarray(f), fps=fps) for f in frames]


class Pipeline:
    """Text (+ image) to video with a MUGDiT, a `LatentCodec` and a `TextEncoder`.

    `model(x, timestep, text, text_mask, fps, cond_mask=, frame_index=, drop_text=)` predicts
    the velocity v = x0 - eps. Strides and the RoPE length describe the codec and the model:
    pixel frames must be 1 + temporal_stride * k (or 1 for an image), pixel sizes a multiple of
    spatial_stride * patch, and the latent length at most `max_latent_frames`.
    """

    def __init__(
        self,
        model: nn.Module,
        codec: LatentCodec,
        text_encoder: TextEncoder,
        *,
        latent_channels: int = 24,
        spatial_stride: int = 8,
        temporal_stride: int = 8,
        patch_size: tuple[int, int, int] = (1, 2, 2),
        max_latent_frames: int = 480,
        flow: RectifiedFlow | None = None,
    ) -> None:
        self.model = model
        self.codec = codec
        self.text_encoder = text_encoder
        self.latent_channels = latent_channels
        self.spatial_stride = spatial_stride
        self.temporal_stride = temporal_stride
        self.patch_size = patch_size
        self.max_latent_frames = max_latent_frames
        self.flow = flow or RectifiedFlow(FlowConfig())

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Latent (t, h, w) for a pixel clip, or a `PipelineError` naming the size to use."""
        ts = self.temporal_stride
        if (num_frames - 1) % ts != 0:
            lower = (num_frames - 1) // ts * ts + 1
            raise PipelineError(
                f"num_frames={num_frames} is not 1 + {ts} k (the VAE encodes frame 0 alone, then "
                f"groups of {ts}); use {lower} or {lower + ts}"
            )
        step = self.spatial_stride * max(self.patch_size[1], self.patch_size[2])
        for name, size in (("height", height), ("width", width)):
            if size % step != 0:
                lower, upper = size // step * step, (size // step + 1) * step
                fix = f"{lower} or {upper}" if lower else f"{upper}"
                raise PipelineError(
                    f"{name}={size} is not a multiple of {step} (VAE stride {self.spatial_stride} x "
                    f"patch {self.patch_size[1:]}); use {fix}"
                )
        latent_frames = (num_frames - 1) // ts + 1
        if latent_frames % self.patch_size[0] != 0:
            raise PipelineError(
                f"{latent_frames} latent frames do not divide by the temporal patch {self.patch_size[0]}"
            )
        if latent_frames > self.max_latent_frames:
            raise PipelineError(
                f"num_frames={num_frames} gives {latent_frames} latent frames, longer than the "
                f"3D RoPE table ({self.max_latent_frames}); use at most "
                f"{(self.max_latent_frames - 1) * ts + 1} frames"
            )
        return latent_frames, height // self.spatial_stride, width // self.spatial_stride

    def _model_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        param = next(self.model.parameters())
        return param.dtype, param.device

    def initial_noise(self, batch: int, shape: tuple[int, int, int], seed: int) -> Tensor:
        """Noise (B, C, t, h, w); sample i uses seed + i, so it does not depend on the batch."""
        out = []
        for i in range(batch):
            gen = torch.Generator().manual_seed(seed + i)
            out.append(torch.randn(self.latent_channels, *shape, generator=gen))
        return torch.stack(out)

    @torch.no_grad()
    def sample_latents(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        *,
        image_latents: Tensor | None = None,
        contrasts: Sequence[Sequence[str]] | None = None,
        contrast_weights: Sequence[Sequence[float]] | None = None,
    ) -> Tensor:
        """Sample normalised latents (B, C, t, h, w); `image_latents` (B, C, 1, h, w) is held at frame 0.

        `contrasts[i]` lists prompt i's contrast prompts (at least one each); the model then
        also runs on every contrast prompt while t is in `config.contrast_interval`.
        `contrast_weights[i]`, shaped like `contrasts[i]`, weighs them (default all 1).
        """
        if isinstance(prompts, str) or len(prompts) == 0:
            raise PipelineError("prompts must be a non-empty list of strings; wrap one as [prompt]")
        dtype, device = self._model_dtype_device()
        batch = len(prompts)
        owner = self._contrast_owner(contrasts, batch)
        weights = self._contrast_weights(contrasts, contrast_weights)
        shape = self.latent_shape(config.num_frames, config.height, config.width)
        x = self.initial_noise(batch, shape, config.seed).to(device, dtype)
        cond_mask = None
        if image_latents is not None:
            want = (batch, self.latent_channels, 1, *shape[1:])
            if tuple(image_latents.shape) != want:
                raise PipelineError(
                    f"image_latents has shape {tuple(image_latents.shape)}, expected {want}: one "
                    "encoded image per prompt at the video's size"
                )
            image_latents = image_latents.to(device, dtype)
            x[:, :, :1] = image_latents
            cond_mask = torch.zeros(batch, shape[0], dtype=torch.bool, device=device)
            cond_mask[:, 0] = True

        use_cfg = config.guidance_scale != 1.0
        negative = config.negative_prompt
        copies = 2 if use_cfg else 1
        texts = list(prompts) + ([negative or ""] * batch if use_cfg else [])
        if owner is not None:
            texts += [c for group in contrasts for c in group]  # type: ignore[union-attr]
        text, text_mask = self.text_encoder.encode(texts)
        text, text_mask = text.to(device, dtype), text_mask.to(device)
        drop_text = torch.zeros(len(texts), dtype=torch.bool, device=device)
        if use_cfg and not negative:
            drop_text[batch : 2 * batch] = True  # no negative prompt: the learned null text
        # rows of the model's batch: the prompts, the CFG copies, then one per contrast prompt
        rows = torch.arange(batch, device=device).repeat(copies)
        if owner is not None:
            owner = owner.to(device)
            if weights is not None:
                weights = weights.to(device, dtype)  # once, not at every step
            rows = torch.cat([rows, owner])
        fps = torch.full((len(rows),), float(config.fps), device=device, dtype=dtype)
        lo, hi = config.contrast_interval

        sampler = SAMPLERS[config.sampler](config.num_steps)
        sampler.set_timesteps(
            config.num_steps, ratio=self.flow.ratio(config.height, config.width, shape[0])
        )
        self.model.eval()
        bf16 = config.precision == "bf16" or (config.precision == "auto" and fast_bf16(device))
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        for t in sampler.timesteps:
            inside = lo <= float(t) <= hi
            contrast = owner is not None and config.contrast_scale > 0 and inside
            n = len(rows) if contrast else batch * copies
            timestep = torch.full((n,), float(t), device=device, dtype=dtype)
            with autocast:
                v = self.model(
                    x[rows[:n]],
                    timestep,
                    text[:n],
                    text_mask[:n],
                    fps[:n],
                    cond_mask=None if cond_mask is None else cond_mask[rows[:n]],
                    drop_text=drop_text[:n],
                ).to(dtype)
            v_cond = v[:batch]
            if use_cfg:
                v_guided = cfg_combine(
                    v_cond, v[batch : 2 * batch], config.guidance_scale, config.guidance_rescale
                )
            else:
                v_guided = v_cond
            if contrast:
                v_guided = v_guided + contrast_term(
                    v_cond, v[batch * copies :], owner, config.contrast_scale, weights
                )
            x = sampler.step(v_guided, t, x)
            if image_latents is not None:
                x[:, :, :1] = image_latents
        return x

    @staticmethod
    def _contrast_owner(contrasts: Sequence[Sequence[str]] | None, batch: int) -> Tensor | None:
        """The prompt index of every contrast prompt, flattened in order (None without any)."""
        if contrasts is None:
            return None
        if isinstance(contrasts, str) or len(contrasts) != batch:
            raise PipelineError(
                f"contrasts must hold one list of contrast prompts per prompt ({batch}), got "
                f"{'a string' if isinstance(contrasts, str) else len(contrasts)}"
            )
        owner = []
        for i, group in enumerate(contrasts):
            if (
                isinstance(group, str)
                or len(group) == 0
                or not all(isinstance(c, str) and c.strip() for c in group)
            ):
                raise PipelineError(
                    f"contrasts[{i}] must be a non-empty list of non-empty strings, got {group!r}"
                )
            owner += [i] * len(group)
        return torch.tensor(owner)

    @staticmethod
    def _contrast_weights(
        contrasts: Sequence[Sequence[str]] | None,
        weights: Sequence[Sequence[float]] | None,
    ) -> Tensor | None:
        """The flattened weight of every contrast prompt (None: all 1)."""
        if weights is None:
            return None
        if contrasts is None or len(weights) != len(contrasts):
            raise PipelineError(
                "contrast_weights needs contrasts and one list of weights per prompt, shaped "
                "like contrasts"
            )
        flat = []
        for i, (group, w) in enumerate(zip(contrasts, weights)):
            if len(w) != len(group) or not all(float(x) > 0 for x in w):
                raise PipelineError(
                    f"contrast_weights[{i}] must hold one positive weight per contrast prompt "
                    f"({len(group)}), got {list(w)}"
                )
            flat += [float(x) for x in w]
        return torch.tensor(flat)

    @torch.no_grad()
    def __call__(
        self,
        prompts: Sequence[str],
        *,
        image: Tensor | None = None,
        config: GenerationConfig | None = None,
        contrasts: Sequence[Sequence[str]] | None = None,
        contrast_weights: Sequence[Sequence[float]] | None = None,
        **overrides: object,
    ) -> Tensor:
        """Videos (B, 3, T, H, W) in [-1, 1]; `image` (B, 3, H, W) in [-1, 1] makes it i2v.

        Keyword overrides change single fields of `config` (`num_steps=10`, `seed=3`);
        `contrasts` and `contrast_weights` as in `sample_latents`.
        """
        config = replace(config or GenerationConfig(), **overrides)
        image_latents = None
        if image is not None:
            want = (len(prompts), 3, config.height, config.width)
            if image.dim() != 4 or tuple(image.shape) != want:
                raise PipelineError(
                    f"image has shape {tuple(image.shape)}, expected {want} (one RGB image in "
                    "[-1, 1] per prompt at the requested height and width)"
                )
            image_latents = self.codec.encode(image.unsqueeze(2))  # (B, C, 1, h, w)
        latents = self.sample_latents(
            prompts,
            config,
            image_latents=image_latents,
            contrasts=contrasts,
            contrast_weights=contrast_weights,
        )
        video = self.codec.decode(latents)  # (B, 3, T, H, W)
        logger.info("generated %d video(s) of shape %s", len(prompts), tuple(video.shape[1:]))
        return video

    def generate_mp4(
        self,
        prompts: Sequence[str],
        out_dir: str | os.PathLike[str],
        *,
        image: Tensor | None = None,
        config: GenerationConfig | None = None,
        contrasts: Sequence[Sequence[str]] | None = None,
        crf: int = 18,
        **overrides: object,
    ) -> list[Path]:
        """Generate and write one H.264 mp4 per prompt (`000.mp4`, ...) at the requested fps."""
        from mugv.data.video import write_video

        config = replace(config or GenerationConfig(), **overrides)
        video = self(prompts, image=image, config=config, contrasts=contrasts)
        out = Path(out_dir)
        return [
            write_video(out / f"{i:03d}.mp4", clip, crf=crf)
            for i, clip in enumerate(video_to_clips(video, config.fps))
        ]

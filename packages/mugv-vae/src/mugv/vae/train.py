"""Training the VAE on `mugv.infra`'s Trainer: one step function for joint image/video batches.

A batch is a dict: ``"video"`` (B, 3, T, H, W) in [-1, 1] and/or ``"image"`` (B', 3, H, W),
the images encoded as static 8-frame groups exactly as image-to-video conditioning is. With a
discriminator, its hinge loss is added to the same backward pass on a detached reconstruction,
while the generator's adversarial term sees the discriminator frozen; AdamW updates each
parameter from its own gradient, so one optimizer serves both players.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from mugv.vae._errors import VAEConfigError, VAEInputError
from mugv.vae.losses import (
    LossConfig,
    PatchDiscriminator3D,
    adaptive_weight,
    feature_loss,
    hinge_d_loss,
    kl_loss,
    pixel_weight,
    reconstruction_loss,
)
from mugv.vae.model import VideoVAE

logger = logging.getLogger(__name__)


class VAETrainModule(nn.Module):
    """The VAE, an optional 3D patch discriminator and the count of steps taken."""

    def __init__(self, vae: VideoVAE, discriminator: PatchDiscriminator3D | None = None) -> None:
        super().__init__()
        self.vae = vae
        self.discriminator = discriminator
        self.register_buffer("steps_taken", torch.zeros((), dtype=torch.long))


Stage = Literal["joint", "spatial", "temporal"]
STAGES: tuple[str, ...] = ("joint", "spatial", "temporal")


def _reconstruct(
    vae: VideoVAE, video: torch.Tensor, config: LossConfig, stage: str
) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, torch.Tensor]]:
    """(B, 3, T, H, W) -> (reconstruction or None when no pixel term needs it, loss, terms).

    ``spatial``: each frame through the 2D autoencoder alone. ``temporal``: the spatial
    encoder's features (no gradient: the stage is frozen) through the temporal stage, scored
    on the features and, when pixel terms are weighted, on pixels through the spatial
    decoder. ``joint``: end to end.
    """
    B, T = video.shape[0], video.shape[2]
    if stage == "spatial":
        frames = rearrange(video, "B C T H W -> (B T) C H W")
        recon = vae.spatial_decoder(vae.spatial_encoder(frames))  # (B T, 3, H, W)
        return rearrange(recon, "(B T) C H W -> B C T H W", B=B), video.new_zeros(()), {}
    with torch.set_grad_enabled(stage == "joint" and torch.is_grad_enabled()):
        feats = vae.spatial_features(video)  # (B, C_mid, 8t, h, w)
    posterior = vae.temporal_posterior(feats)
    rec_feats = vae.temporal_decode(posterior.sample(), T)  # (B, C_mid, T, h, w)
    terms = {"kl": kl_loss(posterior, video[0].numel())}
    loss = config.kl_weight * terms["kl"]
    if config.feature_weight > 0:
        terms["feature"] = feature_loss(rec_feats, feats[:, :, feats.shape[2] - T :])
        loss = loss + config.feature_weight * terms["feature"]
    if pixel_weight(config) == 0:
        return None, loss, terms
    frames = vae.spatial_decode(rearrange(rec_feats, "B C T h w -> (B T) C h w"))
    return rearrange(frames, "(B T) C H W -> B C T H W", B=B), loss, terms


def _video_terms(
    module: VAETrainModule,
    video: torch.Tensor,
    config: LossConfig,
    perceptual: Callable[[torch.Tensor], torch.Tensor] | None,
    use_gan: bool,
    stage: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    recon, loss, terms = _reconstruct(module.vae, video, config, stage)
    if recon is not None:
        pixel = reconstruction_loss(recon, video, config, perceptual)
        loss = loss + pixel["rec"]
        terms |= pixel
    metrics = {k: float(v.detach()) for k, v in terms.items()}
    if use_gan and recon is not None:
        disc = module.discriminator
        disc.requires_grad_(False)
        g_loss = -disc(recon).mean()
        disc.requires_grad_(True)
        last = module.vae.spatial_decoder.conv_out.weight
        d_weight = config.disc_weight * adaptive_weight(terms["rec"], g_loss, last)
        d_loss = hinge_d_loss(disc(video), disc(recon.detach()))
        loss = loss + d_weight * g_loss + d_loss
        metrics |= {"g_loss": float(g_loss.detach()), "d_loss": float(d_loss.detach())}
    return loss, metrics


def _some_frames(video: torch.Tensor, count: int | None) -> torch.Tensor:
    """``count`` random frames of each (B, 3, T, H, W) clip, as (B, 3, count, H, W)."""
    if count is None or count >= video.shape[2]:
        return video
    index = torch.rand(video.shape[0], video.shape[2]).argsort(dim=1)[:, :count]  # (B, count)
    index = index.to(video.device)[:, None, :, None, None].expand(
        -1, video.shape[1], -1, *video.shape[3:]
    )
    return video.gather(2, index)


def make_step_fn(
    config: LossConfig,
    perceptual: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    stage: Stage = "joint",
    frames_per_clip: int | None = None,
) -> Callable[[VAETrainModule, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]:
    """``step_fn(module, batch) -> (loss, metrics)`` for `mugv.infra.Trainer`.

    ``perceptual`` maps (N, 3, H, W) frames in [-1, 1] to features (e.g. a pretrained VGG
    trunk); it is used only when ``config.perceptual_weight > 0``. ``stage`` and
    ``frames_per_clip`` are `VAETrainConfig`'s.
    """
    if stage not in STAGES:
        raise VAEConfigError(f"stage={stage!r}: use one of {STAGES}")

    def step_fn(
        module: VAETrainModule, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict]:
        if not isinstance(batch, dict) or not {"video", "image"} & set(batch):
            raise VAEInputError(
                f"a VAE training batch is a dict with 'video' and/or 'image'; got {type(batch)}"
            )
        use_gan = (
            module.discriminator is not None
            and config.disc_weight > 0
            and int(module.steps_taken) >= config.disc_start
        )
        module.steps_taken += 1
        losses: list[torch.Tensor] = []
        metrics: dict[str, float] = {}
        if "video" in batch:
            video = batch["video"]
            if stage == "spatial":
                video = _some_frames(video, frames_per_clip)
            loss, metrics = _video_terms(module, video, config, perceptual, use_gan, stage)
            losses.append(loss)
        if "image" in batch:
            image = batch["image"][:, :, None]  # (B', 3, 1, H, W): a one-frame video
            img_loss, img_metrics = _video_terms(module, image, config, perceptual, False, stage)
            losses.append(config.image_weight * img_loss)
            metrics |= {f"image_{k}": v for k, v in img_metrics.items()}
        loss = torch.stack(losses).sum()
        return loss, metrics

    return step_fn


@dataclass(frozen=True, kw_only=True)
class VAETrainConfig:
    """A VAE run: which stage it trains, the loss weights and an optional discriminator.

    MUG-V's VAE is two-stage by design (SPEC, "MUG-V video VAE"): a spatial image autoencoder,
    then a temporal stage over its features. ``stage="spatial"`` trains only the 2D autoencoder
    on frames (``frames_per_clip`` random frames of each clip; images as they are);
    ``"temporal"`` freezes it and trains the temporal stage (score it with
    ``LossConfig.feature_weight`` and/or the pixel terms); ``"joint"`` trains everything end
    to end (also the fine-tuning pass after the two stages).
    """

    stage: Stage = "joint"
    frames_per_clip: int | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator_channels: int = 32
    discriminator_layers: int = 3

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise VAEConfigError(f"VAETrainConfig.stage={self.stage!r}: use one of {STAGES}")
        if self.frames_per_clip is not None and self.frames_per_clip < 1:
            raise VAEConfigError(
                f"VAETrainConfig.frames_per_clip={self.frames_per_clip}: use >= 1, or None for "
                "every frame"
            )


def trainable_parameters(vae: VideoVAE, stage: Stage) -> list[str]:
    """Names of the parameters ``stage`` trains; `train_vae` freezes the others."""
    spatial = ("spatial_encoder.", "spatial_decoder.")
    names = [n for n, _ in vae.named_parameters()]
    if stage == "spatial":
        return [n for n in names if n.startswith(spatial)]
    if stage == "temporal":
        return [n for n in names if not n.startswith(spatial)]
    return names


def train_vae(
    vae: VideoVAE,
    data: Iterable[dict[str, torch.Tensor]],
    trainer_config: Any,
    *,
    info: Any,
    config: VAETrainConfig | None = None,
    perceptual: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> VideoVAE:
    """Train ``vae`` in place with `mugv.infra.Trainer` (needs the ``[train]`` extra).

    ``trainer_config`` is a `mugv.infra.TrainerConfig`; ``info`` what `init_distributed` or
    `single_process` returned. Resumes from ``trainer_config.checkpoint_dir`` if it holds a
    checkpoint. Returns the trained VAE (latent statistics not yet computed: see
    `compute_latent_stats`). Parameters outside ``config.stage`` are frozen
    (``requires_grad=False``) and stay so afterwards.
    """
    from mugv.infra.trainer import Trainer

    config = config or VAETrainConfig()
    trainable = set(trainable_parameters(vae, config.stage))
    for name, param in vae.named_parameters():
        param.requires_grad_(name in trainable)
    disc = None
    if config.loss.disc_weight > 0:
        disc = PatchDiscriminator3D(config.discriminator_channels, config.discriminator_layers)
    module = VAETrainModule(vae, disc).to(info.device)
    logger.info(
        "training %d of the VAE's %d parameters (stage %s)%s for %d steps",
        sum(p.numel() for p in vae.parameters() if p.requires_grad),
        sum(p.numel() for p in vae.parameters()),
        config.stage,
        " with a 3D patch discriminator" if disc is not None else "",
        trainer_config.steps,
    )
    trainer = Trainer(
        module,
        make_step_fn(
            config.loss, perceptual, stage=config.stage, frames_per_clip=config.frames_per_clip
        ),
        data,
        trainer_config,
        info=info,
        model_config={"vae": vae.config.to_dict()},
    )
    trainer.fit(on_step)
    return vae

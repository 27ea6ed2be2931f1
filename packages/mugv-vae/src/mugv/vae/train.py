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
from typing import Any

import torch
from torch import nn

from mugv.vae._errors import VAEInputError
from mugv.vae.losses import (
    LossConfig,
    PatchDiscriminator3D,
    adaptive_weight,
    hinge_d_loss,
    kl_loss,
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


def _video_terms(
    module: VAETrainModule,
    video: torch.Tensor,
    config: LossConfig,
    perceptual: Callable[[torch.Tensor], torch.Tensor] | None,
    use_gan: bool,
) -> tuple[torch.Tensor, dict[str, float]]:
    recon, posterior = module.vae(video)  # (B, 3, T, H, W)
    terms = reconstruction_loss(recon, video, config, perceptual)
    kl = kl_loss(posterior, video[0].numel())
    loss = terms["rec"] + config.kl_weight * kl
    metrics = {k: float(v.detach()) for k, v in terms.items()} | {"kl": float(kl.detach())}
    if use_gan:
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


def make_step_fn(
    config: LossConfig, perceptual: Callable[[torch.Tensor], torch.Tensor] | None = None
) -> Callable[[VAETrainModule, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]:
    """``step_fn(module, batch) -> (loss, metrics)`` for `mugv.infra.Trainer`.

    ``perceptual`` maps (N, 3, H, W) frames in [-1, 1] to features (e.g. a pretrained VGG
    trunk); it is used only when ``config.perceptual_weight > 0``.
    """

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
            loss, metrics = _video_terms(module, batch["video"], config, perceptual, use_gan)
            losses.append(loss)
        if "image" in batch:
            image = batch["image"][:, :, None]  # (B', 3, 1, H, W): a one-frame video
            img_loss, img_metrics = _video_terms(module, image, config, perceptual, False)
            losses.append(config.image_weight * img_loss)
            metrics |= {f"image_{k}": v for k, v in img_metrics.items()}
        loss = torch.stack(losses).sum()
        return loss, metrics

    return step_fn


@dataclass(frozen=True, kw_only=True)
class VAETrainConfig:
    """A VAE run: the loss weights and whether to add a 3D patch discriminator."""

    loss: LossConfig = field(default_factory=LossConfig)
    discriminator_channels: int = 32
    discriminator_layers: int = 3


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
    `compute_latent_stats`).
    """
    from mugv.infra.trainer import Trainer

    config = config or VAETrainConfig()
    disc = None
    if config.loss.disc_weight > 0:
        disc = PatchDiscriminator3D(config.discriminator_channels, config.discriminator_layers)
    module = VAETrainModule(vae, disc).to(info.device)
    logger.info(
        "training a %d-parameter VAE%s for %d steps",
        sum(p.numel() for p in vae.parameters()),
        " with a 3D patch discriminator" if disc is not None else "",
        trainer_config.steps,
    )
    trainer = Trainer(
        module,
        make_step_fn(config.loss, perceptual),
        data,
        trainer_config,
        info=info,
        model_config={"vae": vae.config.to_dict()},
    )
    trainer.fit(on_step)
    return vae

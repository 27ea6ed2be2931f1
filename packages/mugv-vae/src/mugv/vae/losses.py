"""VAE training losses: L1 + SSIM reconstruction, optional perceptual term, KL, adaptive GAN.

The authors released no VAE training code; this is the standard recipe SPEC names (LDM-style
KL-regularised autoencoder with an optional patch discriminator whose weight is set by the ratio
of gradient norms at the decoder's last layer, Esser et al. 2021, "Taming Transformers" eq. 7).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from mugv.vae._errors import VAEConfigError
from mugv.vae.temporal import DiagonalGaussian


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype):
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)  # (size, size)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004) of frames in [-1, 1]: (N, C, H, W) pairs -> (N,).

    Computed on the [0, 1] scale with a Gaussian window and 'valid' borders; windows shrink to
    the frame for frames smaller than ``window``.
    """
    a, b = (a + 1) / 2, (b + 1) / 2
    C = a.shape[1]
    window = min(window, a.shape[-1], a.shape[-2])
    w = _gaussian_window(window, sigma, a.device, a.dtype).expand(C, 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, groups=C)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1], on the [0, 1] scale, over all elements."""
    mse = F.mse_loss((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


class PatchDiscriminator3D(nn.Module):
    """A 3D PatchGAN: strided Conv3d + GroupNorm + LeakyReLU, one logit per space-time patch.

    (B, 3, T, H, W) -> (B, 1, T', H', W'); space halves ``layers`` times, time at most twice.
    """

    def __init__(self, channels: int = 64, layers: int = 3, groups: int = 8) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv3d(3, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        width = channels
        for i in range(layers):
            out = channels * 2 ** min(i + 1, 3)
            stride = (2 if i < 2 else 1, 2, 2)
            blocks += [
                nn.Conv3d(width, out, 3, stride=stride, padding=1, bias=False),
                nn.GroupNorm(groups, out),
                nn.LeakyReLU(0.2),
            ]
            width = out
        blocks.append(nn.Conv3d(width, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights of the VAE objective; ``disc_weight`` 0 turns the GAN off.

    ``mse_weight`` adds the squared error PSNR measures (L1 alone plateaus on flat content).
    ``feature_weight`` scores the temporal stage against the spatial encoder's features (mean
    squared error over their variance), the cheap target of two-stage training: with every
    pixel weight 0 the spatial decoder is not run at all.
    """

    l1_weight: float = 1.0
    mse_weight: float = 0.0
    ssim_weight: float = 0.2
    feature_weight: float = 0.0
    perceptual_weight: float = 0.0
    kl_weight: float = 1e-6
    disc_weight: float = 0.0
    disc_start: int = 0
    image_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "l1_weight",
            "mse_weight",
            "ssim_weight",
            "feature_weight",
            "perceptual_weight",
            "kl_weight",
            "disc_weight",
        ):
            if getattr(self, name) < 0:
                raise VAEConfigError(f"LossConfig.{name} must be >= 0; got {getattr(self, name)}")
        if self.disc_start < 0:
            raise VAEConfigError(f"LossConfig.disc_start must be >= 0; got {self.disc_start}")


def reconstruction_loss(
    recon: torch.Tensor,
    target: torch.Tensor,
    config: LossConfig,
    perceptual: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """L1 + MSE + (1 - SSIM) (+ perceptual) between (B, 3, T, H, W) videos; returns each term."""
    frames_r = rearrange(recon, "B C T H W -> (B T) C H W")
    frames_t = rearrange(target, "B C T H W -> (B T) C H W")
    terms = {
        "l1": (recon - target).abs().mean(),
        "mse": F.mse_loss(recon, target),
        "ssim": 1 - ssim(frames_r, frames_t).mean(),
    }
    rec = (
        config.l1_weight * terms["l1"]
        + config.mse_weight * terms["mse"]
        + config.ssim_weight * terms["ssim"]
    )
    if perceptual is not None and config.perceptual_weight > 0:
        terms["perceptual"] = (perceptual(frames_r) - perceptual(frames_t)).abs().mean()
        rec = rec + config.perceptual_weight * terms["perceptual"]
    terms["rec"] = rec
    return terms


def pixel_weight(config: LossConfig) -> float:
    """The total weight of the terms that need decoded pixels (0: the decoder can be skipped)."""
    return (
        config.l1_weight
        + config.mse_weight
        + config.ssim_weight
        + config.perceptual_weight
        + config.disc_weight
    )


def feature_loss(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of (B, C, T, h, w) features over the target's variance (scale-free)."""
    return F.mse_loss(recon, target) / target.detach().var().clamp(min=1e-8)


def kl_loss(posterior: DiagonalGaussian, num_pixels: int) -> torch.Tensor:
    """KL to N(0, I) per input pixel value, averaged over the batch (LDM's normalisation)."""
    return posterior.kl().mean() / num_pixels


def adaptive_weight(
    rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """||d rec / d last|| / ||d g / d last||: balances the GAN term against reconstruction."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())

"""Per-channel latent statistics computed from data, streamed, and stored in the model.

The reference hard-codes 24 means and stds; we compute them over a dataset with Chan et al.'s
parallel update of (count, mean, M2) in float64, so any number of batches (or ranks) combine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from einops import rearrange

from mugv.vae._errors import VAEConfigError
from mugv.vae.model import VideoVAE


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _wire_device() -> torch.device:
    """Where a collective's tensors must live: NCCL moves GPU tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum (CPU) tensors over all ranks, in place."""
    if not _distributed():
        return
    for t in tensors:
        moved = t.to(_wire_device())
        dist.all_reduce(moved)
        t.copy_(moved)


class RunningStats:
    """Streaming per-channel mean and variance of (B, C, ...) tensors."""

    def __init__(self, channels: int) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().cpu().transpose(0, 1).reshape(x.shape[1], -1)  # (C, N)
        n = x.shape[1]
        mean = x.mean(1)
        m2 = ((x - mean[:, None]) ** 2).sum(1)
        self._merge(torch.tensor(float(n), dtype=torch.float64), mean, m2)

    def _merge(self, n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total

    def all_reduce(self) -> None:
        """Merge the statistics of every rank (call on all ranks; no-op when not distributed)."""
        if not _distributed():
            return
        packed = torch.cat([self.count[None], self.mean, self.m2]).to(_wire_device())
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, packed)
        gathered = [p.cpu() for p in gathered]
        C = self.mean.numel()
        self.count.zero_(), self.mean.zero_(), self.m2.zero_()
        for p in gathered:
            if p[0] > 0:
                self._merge(p[0], p[1 : 1 + C], p[1 + C :])

    @property
    def std(self) -> torch.Tensor:
        return (self.m2 / self.count.clamp(min=1)).sqrt()


@torch.no_grad()
def compute_latent_stats(
    vae: VideoVAE,
    videos: Iterable[torch.Tensor],
    *,
    eps: float = 1e-6,
    weight_power: float = 0.0,
    weight_clips: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per latent channel of ``vae``'s posterior means over ``videos``.

    Each item is (B, 3, T, H, W) in [-1, 1]. Sets ``vae.latent_mean``/``latent_std`` (saved
    with the checkpoint) and returns them; ranks' statistics are merged when distributed.
    With ``weight_power > 0`` the normalisation is then reweighted by `weight_latent_channels`
    on the first ``weight_clips`` clips, and the returned std is the divisor ``encode`` uses.
    """
    if weight_power < 0 or weight_clips < 1:
        raise VAEConfigError(
            f"compute_latent_stats: weight_power must be >= 0 (0 = plain standardisation) and "
            f"weight_clips >= 1; got {weight_power} and {weight_clips}"
        )
    stats = RunningStats(vae.latent_channels)
    kept: list[torch.Tensor] = []  # the first weight_clips clips' latents, for the weighting
    room = weight_clips if weight_power else 0
    for video in videos:
        z = vae.posterior(video).mean
        stats.update(z)
        if room > 0:
            kept.append(z[:room])
            room -= len(kept[-1])
    stats.all_reduce()
    mean, std = stats.mean.float(), stats.std.float().clamp(min=eps)
    vae.latent_mean.copy_(mean)
    vae.latent_std.copy_(std)
    if weight_power:
        weight_latent_channels(vae, [vae.normalize(z) for z in kept], power=weight_power)
    return vae.latent_mean.clone(), vae.latent_std.clone()


@torch.no_grad()
def decoder_sensitivity(
    vae: VideoVAE, latents: Iterable[torch.Tensor], *, sigma: float = 0.1, seed: int = 0
) -> torch.Tensor:
    """How much each normalised latent channel moves the decoded video, (C,) float64.

    For every batch of normalised latents (B, C, t, h, w), as ``encode`` gives them, channel c
    alone gets Gaussian noise of std ``sigma`` and the mean squared change of the decoded
    pixels, over ``sigma**2``, is averaged over the batches (and ranks when distributed). With
    a small ``sigma`` this is the squared norm of the decoder's Jacobian column per pixel:
    the share of the picture the channel carries. The noise is seeded, so every rank and every
    rerun measures the same thing.
    """
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros(vae.latent_channels, dtype=torch.float64)
    count = torch.zeros((), dtype=torch.float64)
    for z in latents:
        base = vae.decode(z)
        for c in range(vae.latent_channels):
            noise = torch.randn(z[:, c].shape, generator=gen).to(z) * sigma
            moved = z.clone()
            moved[:, c] += noise
            total[c] += float(((vae.decode(moved) - base).double() ** 2).mean()) * len(z)
        count += len(z)
    _all_reduce_sum(total, count)
    if count == 0:
        raise VAEConfigError("decoder_sensitivity needs at least one batch of latents")
    return total / count / sigma**2


@torch.no_grad()
def weight_latent_channels(
    vae: VideoVAE,
    latents: Iterable[torch.Tensor],
    *,
    power: float = 0.25,
    sigma: float = 0.1,
    floor: float = 1e-4,
) -> torch.Tensor:
    """Reweight ``vae``'s latent normalisation by what each channel does to the picture.

    Call right after `compute_latent_stats` (``latents``: standardised latents of a few clips).
    After it, channel c of ``encode``'s output has std ``w_c`` proportional to
    ``decoder_sensitivity_c ** power`` (floored at ``floor`` times the largest sensitivity),
    with ``mean(w**2) = 1`` so the latents' total variance is unchanged; ``decode`` undoes it,
    so reconstructions do not change. Returns ``w``.

    Why: a whitened latent hands the diffusion model 24 channels of equal variance, but the
    decoder does not use them equally. On the synthetic world's VAE one channel carries ~70%
    of the decoded picture and 16 of the 24 move it by under 1% each, so an unweighted MSE
    spends two thirds of a small DiT's effort on channels nobody sees. ``power = 0.5`` would
    make the DiT's loss the decoded-pixel error; 0.25 goes half way in the log domain, which
    scored best in `mugv-dit`'s world benchmark (the invisible channels still need to be
    plausible for the decoder).
    """
    if power < 0:
        raise VAEConfigError(f"weight_latent_channels: power must be >= 0; got {power}")
    sens = decoder_sensitivity(vae, latents, sigma=sigma)
    sens = sens.clamp(min=floor * float(sens.max().clamp(min=1e-30)))
    w = sens**power
    w = w / w.square().mean().sqrt()
    vae.latent_std.div_(w.to(vae.latent_std))
    return w.float()


@torch.no_grad()
def fit_scaling_factor(vae: VideoVAE, videos: Iterable[torch.Tensor]) -> VideoVAE:
    """A copy of ``vae`` whose ``spatial.scaling_factor`` is 1 / std of its spatial features.

    How SD chose 0.18215: after the spatial stage is trained (and before the temporal one),
    the features it hands on get unit variance, so the temporal stage starts at the scale its
    initialisation expects instead of spending its first steps growing or shrinking weights.
    Each item of ``videos`` is (B, 3, T, H, W) in [-1, 1]; ranks' statistics are merged.
    """
    stats = RunningStats(1)
    scale = vae.config.spatial.scaling_factor
    for video in videos:
        feats = vae.spatial_features(video) / scale  # (B, C_mid, T', h, w), unscaled
        stats.update(feats.reshape(1, 1, -1))
    stats.all_reduce()
    std = float(stats.std.clamp(min=1e-6))
    spatial = dataclasses.replace(vae.config.spatial, scaling_factor=1.0 / std)
    model = VideoVAE(dataclasses.replace(vae.config, spatial=spatial)).to(vae.latent_mean.device)
    model.load_state_dict(vae.state_dict())
    return model.train(vae.training)


@torch.no_grad()
def fit_linear_shortcut(vae: VideoVAE, videos: Iterable[torch.Tensor]) -> VideoVAE:
    """Start ``vae``'s temporal stage (in place) as the PCA codec of its spatial features.

    Needs ``TemporalConfig.linear_shortcut``. Each 8-frame group at each latent position is a
    vector of ``C_mid x 8`` spatial features; the top ``latent_channels`` principal components
    of those vectors over ``videos`` (each (B, 3, T, H, W) in [-1, 1]; ranks' statistics are
    merged) become the encoder shortcut (projection, whitened to unit variance) and the decoder
    shortcut (the transpose, re-scaled, plus the mean). The quant convs start as identities and
    both conv stacks' output convs at zero, so the untrained temporal stage *is* that codec and
    training only adds the nonlinear part. Call after the spatial stage is trained and its
    scaling factor fitted. Returns ``vae``.
    """
    enc, dec = vae.temporal_encoder, vae.temporal_decoder
    if enc.shortcut is None:
        raise VAEConfigError(
            "fit_linear_shortcut needs TemporalConfig.linear_shortcut=True (the CPU presets "
            "have it; 'reference' does not)"
        )
    g, latent = vae.config.group_frames, vae.latent_channels
    dim = enc.shortcut.in_channels
    if latent > dim:
        raise VAEConfigError(
            f"fit_linear_shortcut: {latent} latent channels exceed the {dim} values of a "
            "feature group"
        )
    count = torch.zeros((), dtype=torch.float64)
    total = torch.zeros(dim, dtype=torch.float64)
    outer = torch.zeros(dim, dim, dtype=torch.float64)
    for video in videos:
        feats = vae.spatial_features(video)  # (B, C_mid, 8t, h, w)
        x = rearrange(feats, "B C (t g) h w -> (B t h w) (C g)", g=g).double().cpu()
        count += x.shape[0]
        total += x.sum(0)
        outer += x.T @ x
    _all_reduce_sum(count, total, outer)
    if count < 2:
        raise VAEConfigError("fit_linear_shortcut needs at least two feature groups of data")
    mean = total / count
    cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
    variances, vectors = torch.linalg.eigh(cov)  # ascending
    top = vectors[:, -latent:].flip(1).T  # (latent, dim), largest variance first
    std = variances[-latent:].flip(0).clamp(min=1e-12).sqrt()  # (latent,)
    project = top / std[:, None]  # latents of unit variance
    enc.shortcut.weight.copy_(project.view(latent, dim, 1, 1, 1))
    enc.shortcut.bias.copy_(-(project @ mean))
    dec.shortcut.weight.copy_((top.T * std).view(dim, latent, 1, 1, 1))
    dec.shortcut.bias.copy_(mean)
    for conv in (vae.quant_conv, vae.post_quant_conv):
        n = conv.weight.shape[0]
        conv.weight.copy_(torch.eye(n).view(n, n, 1, 1, 1))
        conv.bias.zero_()
    vae.quant_conv.bias[latent:].fill_(vae.config.temporal.init_logvar)
    for out in (enc.conv_out, dec.conv_out):
        out.weight.zero_()
        out.bias.zero_()
    return vae


@torch.no_grad()
def fit_temporal_start(vae: VideoVAE, videos: Callable[[], Iterable[torch.Tensor]]) -> VideoVAE:
    """Everything between the two training stages: `fit_scaling_factor`, then (configs with a
    linear shortcut) `fit_linear_shortcut` on the rescaled features.

    ``videos()`` yields (B, 3, T, H, W) batches in [-1, 1]; it is called once per pass, so the
    clips are read twice instead of held in memory. Returns the rescaled copy of ``vae``, in
    training mode. Deterministic given the data: a resumed temporal stage can refit it.
    """
    vae = fit_scaling_factor(vae.eval(), videos())
    if vae.config.temporal.linear_shortcut:
        fit_linear_shortcut(vae, videos())
    return vae.train()

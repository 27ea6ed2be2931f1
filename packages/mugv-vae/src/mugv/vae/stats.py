"""Per-channel latent statistics computed from data, streamed, and stored in the model.

The reference hard-codes 24 means and stds; we compute them over a dataset with Chan et al.'s
parallel update of (count, mean, M2) in float64, so any number of batches (or ranks) combine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
import torch.distributed as dist

from mugv.vae.model import VideoVAE


class RunningStats:
    """Streaming per-channel mean and variance of (B, C, ...) tensors."""

    def __init__(self, channels: int) -> None:
        self.count = torch.zeros((), dtype=torch.float64)
        self.mean = torch.zeros(channels, dtype=torch.float64)
        self.m2 = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, N)
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
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        packed = torch.cat([self.count[None], self.mean, self.m2])
        gathered = [torch.empty_like(packed) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, packed)
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
    vae: VideoVAE, videos: Iterable[torch.Tensor], *, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per latent channel of ``vae``'s posterior means over ``videos``.

    Each item is (B, 3, T, H, W) in [-1, 1]. Sets ``vae.latent_mean``/``latent_std`` (saved
    with the checkpoint) and returns them; ranks' statistics are merged when distributed.
    """
    stats = RunningStats(vae.latent_channels)
    for video in videos:
        stats.update(vae.posterior(video).mean)
    stats.all_reduce()
    mean, std = stats.mean.float(), stats.std.float().clamp(min=eps)
    vae.latent_mean.copy_(mean)
    vae.latent_std.copy_(std)
    return mean, std


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

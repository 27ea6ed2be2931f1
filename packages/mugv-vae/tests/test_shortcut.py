"""The temporal stage's linear shortcut and its PCA start (`fit_linear_shortcut`)."""

import dataclasses

import numpy as np
import pytest
import torch
from einops import rearrange

from mugv.vae import (
    CONFIGS,
    VAEConfigError,
    VideoVAE,
    fit_linear_shortcut,
    fit_scaling_factor,
    fit_temporal_start,
)


def _vae(shortcut: bool) -> VideoVAE:
    torch.manual_seed(0)
    config = CONFIGS["tiny"]
    temporal = dataclasses.replace(config.temporal, linear_shortcut=shortcut)
    return VideoVAE(dataclasses.replace(config, temporal=temporal)).eval()


def _videos() -> list[torch.Tensor]:
    # smooth moving blobs: feature groups with a few dominant directions, like real video
    g = torch.Generator().manual_seed(3)
    t = torch.arange(16.0)[:, None, None]
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    out = []
    for _ in range(4):
        cx, cy, vx, r = (torch.rand(4, generator=g) * torch.tensor([20, 20, 1.0, 6]) + 4).tolist()
        blob = torch.exp(-((x - cx - vx * t) ** 2 + (y - cy) ** 2) / r**2)  # (T, H, W)
        colour = torch.rand(3, generator=g)[:, None, None, None] * 2 - 1
        out.append((colour * blob)[None] + 0.05 * torch.randn(1, 3, 16, 32, 32, generator=g))
    return out


def test_fit_linear_shortcut_starts_the_temporal_stage_as_the_pca_codec():
    vae = _vae(True)
    videos = _videos()
    fit_linear_shortcut(vae, videos)
    with torch.no_grad():
        feats = torch.cat([vae.spatial_features(v) for v in videos])  # (B, C, 16, h, w)
        posterior = vae.temporal_posterior(feats)
        decoded = vae.temporal_decode(posterior.mean, 16)
    # reference: PCA in float64 with numpy on the same (C x 8)-value feature groups
    x = rearrange(feats, "B C (t g) h w -> (B t h w) (C g)", g=8).double().numpy()
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    top = vt[: vae.latent_channels]
    expected = (x - mean) @ top.T @ top + mean
    got = rearrange(decoded, "B C (t g) h w -> (B t h w) (C g)", g=8).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(x).max())
    # latents are the whitened principal coordinates: zero mean, unit variance per channel
    z = rearrange(posterior.mean, "B C t h w -> (B t h w) C").double()
    np.testing.assert_allclose(z.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0).numpy(), 1, rtol=1e-3)
    # the reconstruction keeps the variance the top components carry, and no more
    kept = (s[: vae.latent_channels] ** 2).sum() / (s**2).sum()
    residual = ((got - x) ** 2).sum() / ((x - mean) ** 2).sum()
    assert residual == pytest.approx(1 - kept, rel=1e-3)
    # posterior std starts at exp(init_logvar / 2)
    torch.testing.assert_close(
        posterior.logvar, torch.full_like(posterior.logvar, vae.config.temporal.init_logvar)
    )


def test_the_fitted_shortcut_still_trains_the_conv_stacks():
    vae = _vae(True).train()
    fit_linear_shortcut(vae, _videos())
    recon, posterior = vae(_videos()[0])
    (recon.square().mean() + posterior.kl().mean()).backward()
    # the zeroed output convs get gradients, so the nonlinear residual grows from there
    assert vae.temporal_encoder.conv_out.weight.grad.abs().sum() > 0
    assert vae.temporal_decoder.conv_out.weight.grad.abs().sum() > 0


def test_fit_linear_shortcut_needs_the_shortcut():
    with pytest.raises(VAEConfigError, match="linear_shortcut=True"):
        fit_linear_shortcut(_vae(False), _videos())


def test_reference_has_no_shortcut_and_cpu_presets_do():
    assert not CONFIGS["reference"].temporal.linear_shortcut
    assert all(
        CONFIGS[name].temporal.linear_shortcut for name in ("small", "narrow", "narrow4x", "tiny")
    )


@pytest.mark.parametrize("shortcut", [False, True])
def test_fit_temporal_start_is_the_scale_then_the_pca_start(shortcut):
    videos, calls = _videos(), []

    def read():
        calls.append(1)
        return iter(videos)

    got = fit_temporal_start(_vae(shortcut), read)
    expected = fit_scaling_factor(_vae(shortcut), videos)
    if shortcut:
        fit_linear_shortcut(expected, videos)
    assert got.training and got.config == expected.config
    assert got.config.spatial.scaling_factor != CONFIGS["tiny"].spatial.scaling_factor
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(got.state_dict()[name], value, msg=name)
    assert len(calls) == (2 if shortcut else 1)  # read again, not held in memory

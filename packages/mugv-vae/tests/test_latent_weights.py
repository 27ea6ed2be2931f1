"""Latent channels weighted by what they do to the picture (`weight_latent_channels`)."""

import pytest
import torch

from mugv.vae import (
    CONFIGS,
    VAEConfigError,
    VideoVAE,
    compute_latent_stats,
    decoder_sensitivity,
    weight_latent_channels,
)


def _vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(CONFIGS["tiny"]).eval()


def _videos() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    base = torch.rand(4, 3, 3, 4, 4, generator=g) * 2 - 1
    video = torch.nn.functional.interpolate(base, size=(9, 16, 16), mode="trilinear")
    return [video[:2], video[2:]]


def test_sensitivity_follows_the_decoders_use_of_each_channel():
    vae = _vae()
    z = torch.randn(2, vae.latent_channels, 2, 2, 2, generator=torch.Generator().manual_seed(2))
    z[:, 1] = 0  # channel 1 sits at its mean, so rescaling it leaves the base decode alone
    before = decoder_sensitivity(vae, [z], sigma=1e-2)
    assert (before > 0).all()
    # the decoder sees channel 1 twice as strongly: its sensitivity must grow ~4x, no other's
    vae.latent_std[1] *= 2
    after = decoder_sensitivity(vae, [z], sigma=1e-2)
    assert 3.8 < float(after[1] / before[1]) < 4.2, (after[1], before[1])
    others = torch.arange(vae.latent_channels) != 1
    torch.testing.assert_close(after[others], before[others], rtol=1e-6, atol=0)
    # a channel the decoder ignores carries nothing
    with torch.no_grad():
        vae.post_quant_conv.weight[:, 2] = 0
    assert float(decoder_sensitivity(vae, [z], sigma=1e-2)[2]) == 0.0


def test_weighted_stats_scale_channels_and_keep_reconstructions():
    videos = _videos()
    plain, weighted = _vae(), _vae()
    with torch.no_grad():
        for vae in (plain, weighted):  # a channel the decoder cannot see: floored, not 0 or inf
            vae.post_quant_conv.weight[:, 2] = 0
    compute_latent_stats(plain, videos)
    mean, std = compute_latent_stats(weighted, videos, weight_power=0.25, weight_clips=3)
    assert torch.equal(mean, plain.latent_mean) and torch.isfinite(std).all()

    # the weights are sensitivity ** 0.25 on the first 3 clips, with mean(w^2) = 1
    kept = [plain.encode(videos[0]), plain.encode(videos[1][:1])]
    sens = decoder_sensitivity(plain, kept)
    sens = sens.clamp(min=1e-4 * float(sens.max()))
    w = sens**0.25 / (sens**0.5).mean().sqrt()
    torch.testing.assert_close(plain.latent_std / weighted.latent_std, w.float(), rtol=1e-5, atol=0)
    assert float(w[2]) == pytest.approx(
        float((1e-4 * sens.max()) ** 0.25 / (sens**0.5).mean().sqrt())
    )

    # encode's channels now have std w over the stats clips; decoding undoes it exactly
    z = torch.cat([weighted.encode(v) for v in videos])
    flat = z.transpose(0, 1).reshape(weighted.latent_channels, -1)
    torch.testing.assert_close(flat.std(1, unbiased=False), w.float(), rtol=1e-3, atol=1e-6)
    for video in videos:
        torch.testing.assert_close(
            weighted.decode(weighted.encode(video)),
            plain.decode(plain.encode(video)),
            rtol=0,
            atol=1e-5,
        )


def test_bad_weighting_arguments_name_the_field():
    vae = _vae()
    with pytest.raises(VAEConfigError, match="weight_power"):
        compute_latent_stats(vae, _videos(), weight_power=-1)
    with pytest.raises(VAEConfigError, match="power"):
        weight_latent_channels(vae, [], power=-0.5)
    with pytest.raises(VAEConfigError, match="at least one batch"):
        decoder_sensitivity(vae, [])


def _latents(rank):
    return torch.randn(2, 4, 2, 2, 2, generator=torch.Generator().manual_seed(10 + rank))


def _ranks_sensitivity():
    import torch.distributed as dist

    return decoder_sensitivity(_vae(), [_latents(dist.get_rank())]).tolist()


@pytest.mark.distributed
def test_sensitivity_merges_across_ranks():
    from mugv.infra.spawn import run_ranks

    results = run_ranks(_ranks_sensitivity, world_size=2)
    # every rank draws the same seeded noise, so the merged figure is the mean of the ranks'
    alone = [decoder_sensitivity(_vae(), [_latents(r)]) for r in range(2)]
    for got in results:
        torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), sum(alone) / 2)

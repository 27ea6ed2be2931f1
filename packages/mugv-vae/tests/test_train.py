import pytest
import torch

from mugv.vae import (
    CONFIGS,
    LossConfig,
    VAEConfigError,
    VAETrainConfig,
    VAETrainModule,
    VideoVAE,
    compute_latent_stats,
    make_step_fn,
    train_vae,
)
from mugv.vae.losses import feature_loss
from mugv.vae.train import _some_frames

infra = pytest.importorskip("mugv.infra")


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    # a fixed pair of smooth clips: the VAE must learn to reconstruct them
    base = torch.rand(2, 3, 2, 4, 4, generator=g) * 2 - 1
    video = torch.nn.functional.interpolate(base, size=(8, 16, 16), mode="trilinear")
    while True:
        yield {"video": video, "image": video[:, :, 0]}


def test_train_vae_on_the_infra_trainer(tmp_path):
    from mugv.infra.trainer import TrainerConfig

    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS["tiny"])
    video = next(_batches())["video"]
    with torch.no_grad():
        before = (vae(video, sample=False)[0] - video).abs().mean().item()
    losses = []
    with infra.single_process(seed=0) as info:
        train_vae(
            vae,
            _batches(),
            TrainerConfig(steps=30, lr=3e-3, log_every=10, checkpoint_dir=str(tmp_path / "ckpt")),
            info=info,
            config=VAETrainConfig(
                loss=LossConfig(disc_weight=0.1, disc_start=20),
                discriminator_channels=8,
                discriminator_layers=2,
            ),
            on_step=lambda out: losses.append(out.metrics["l1"]),
        )
    assert len(losses) == 30
    with torch.no_grad():
        after = (vae(video, sample=False)[0] - video).abs().mean().item()
    assert after < 0.6 * before, (before, after)
    mean, std = compute_latent_stats(vae.eval(), [video])
    assert torch.equal(vae.latent_mean, mean) and (std > 0).all()
    z = vae.encode(video)
    flat = z.transpose(0, 1).reshape(vae.latent_channels, -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(vae.latent_channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        flat.std(1, unbiased=False), torch.ones(vae.latent_channels), atol=1e-3, rtol=0
    )


def _snapshot(vae, prefix):
    return {n: p.detach().clone() for n, p in vae.named_parameters() if n.startswith(prefix)}


def _changed(vae, before):
    params = dict(vae.named_parameters())
    return {n for n, p in before.items() if not torch.equal(params[n], p)}


def _clips():
    """Two smooth 8-frame clips whose content moves: there is something for time to encode."""
    g = torch.Generator().manual_seed(3)
    base = torch.rand(2, 3, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(base, size=(8, 16, 16), mode="trilinear")


def _run_stage(vae, stage, loss, steps, frames_per_clip=None):
    from mugv.infra.trainer import TrainerConfig

    video = _clips()
    metrics = []
    with infra.single_process(seed=0) as info:
        train_vae(
            vae,
            iter(lambda: {"video": video}, None),
            TrainerConfig(steps=steps, lr=3e-3, log_every=100),
            info=info,
            config=VAETrainConfig(stage=stage, loss=loss, frames_per_clip=frames_per_clip),
            on_step=lambda out: metrics.append(out.metrics),
        )
    return video, metrics


def test_spatial_stage_trains_the_image_autoencoder_alone():
    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS["tiny"])
    frames = _clips().transpose(1, 2).flatten(0, 1)  # (16, 3, 16, 16)
    with torch.no_grad():
        before = (vae.spatial_decoder(vae.spatial_encoder(frames)) - frames).abs().mean().item()
    temporal = _snapshot(vae, "temporal_") | _snapshot(vae, "quant_conv")
    spatial = _snapshot(vae, "spatial_")
    _, metrics = _run_stage(vae, "spatial", LossConfig(mse_weight=1.0), steps=40, frames_per_clip=3)
    assert not _changed(vae, temporal)
    assert _changed(vae, spatial) == set(spatial)
    assert "kl" not in metrics[0] and {"l1", "mse", "ssim"} <= set(metrics[0])
    assert all(not p.requires_grad for n, p in vae.named_parameters() if n in temporal)
    with torch.no_grad():
        after = (vae.spatial_decoder(vae.spatial_encoder(frames)) - frames).abs().mean().item()
    assert after < 0.6 * before, (before, after)


def test_temporal_stage_learns_the_features_and_skips_the_decoder():
    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS["tiny"])
    calls = []
    vae.spatial_decoder.register_forward_hook(lambda *args: calls.append(1))
    spatial = _snapshot(vae, "spatial_")
    temporal = _snapshot(vae, "temporal_")
    loss = LossConfig(l1_weight=0, ssim_weight=0, feature_weight=1.0)
    video, metrics = _run_stage(vae, "temporal", loss, steps=40)
    assert not calls, "no pixel term is weighted: the spatial decoder must not run"
    assert not _changed(vae, spatial)
    assert _changed(vae, temporal) == set(temporal)
    assert set(metrics[0]) == {"kl", "feature"}
    first, last = metrics[0]["feature"], metrics[-1]["feature"]
    assert last < 0.5 * first, (first, last)
    # the logged term is the model's feature error over the features' variance
    with torch.no_grad():
        feats = vae.spatial_features(video)
        recon = vae.temporal_decode(vae.temporal_posterior(feats).mean, 8)
        expected = ((recon - feats) ** 2).mean() / feats.var()
    assert expected.item() < 0.5 * first


def test_temporal_stage_with_pixel_terms_backpropagates_through_the_frozen_decoder():
    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS["tiny"])
    module = VAETrainModule(vae)
    vae.spatial_encoder.requires_grad_(False)
    vae.spatial_decoder.requires_grad_(False)
    step = make_step_fn(LossConfig(mse_weight=1.0, feature_weight=0.5), stage="temporal")
    loss, metrics = step(module, {"video": _clips()})
    loss.backward()
    assert {"feature", "mse", "l1", "kl", "rec"} <= set(metrics)
    assert all(p.grad is not None for n, p in vae.named_parameters() if n.startswith("temporal_"))
    assert vae.post_quant_conv.weight.grad.abs().sum() > 0


def test_feature_loss_is_scale_free():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 8, 3, 3, generator=g), torch.randn(2, 4, 8, 3, 3, generator=g)
    torch.testing.assert_close(feature_loss(10 * a, 10 * b), feature_loss(a, b))
    assert feature_loss(b, b).item() == 0.0


def test_some_frames_are_distinct_frames_of_each_clip():
    video = torch.arange(2 * 8, dtype=torch.float32).view(2, 1, 8, 1, 1).expand(2, 3, 8, 2, 2)
    picked = _some_frames(video, 3)
    assert picked.shape == (2, 3, 3, 2, 2)
    for b in range(2):
        values = picked[b, 0, :, 0, 0].tolist()
        assert len(set(values)) == 3 and all(8 * b <= v < 8 * (b + 1) for v in values)
        assert (picked[b] == picked[b, :1, :, :1, :1]).all()  # whole frames, every channel
    assert _some_frames(video, None) is video and _some_frames(video, 8) is video


def test_stage_validation():
    with pytest.raises(VAEConfigError, match="stage"):
        VAETrainConfig(stage="both")
    with pytest.raises(VAEConfigError, match="frames_per_clip"):
        VAETrainConfig(frames_per_clip=0)
    with pytest.raises(VAEConfigError, match="stage"):
        make_step_fn(LossConfig(), stage="pixels")
    with pytest.raises(VAEConfigError, match="feature_weight"):
        LossConfig(feature_weight=-1)

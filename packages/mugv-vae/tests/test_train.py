import pytest
import torch

from mugv.vae import CONFIGS, LossConfig, VAETrainConfig, VideoVAE, compute_latent_stats, train_vae

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

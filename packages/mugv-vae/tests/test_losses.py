import math

import pytest
import torch

from mugv.vae import (
    LossConfig,
    PatchDiscriminator3D,
    VAEConfigError,
    VAETrainModule,
    make_step_fn,
    psnr,
    ssim,
)
from mugv.vae.losses import adaptive_weight
from mugv.vae.temporal import DiagonalGaussian


def _ssim_reference(a, b, window=11, sigma=1.5):
    """SSIM in float64 with explicit window sums (Wang et al. 2004)."""
    a, b = ((a.double() + 1) / 2)[0, 0], ((b.double() + 1) / 2)[0, 0]
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    w = torch.outer(g, g) / g.sum() ** 2
    H, W = a.shape
    vals = []
    for i in range(H - window + 1):
        for j in range(W - window + 1):
            pa, pb = a[i : i + window, j : j + window], b[i : i + window, j : j + window]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            c1, c2 = 0.01**2, 0.03**2
            vals.append(
                (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return torch.stack(vals).mean()


def test_ssim_matches_reference():
    torch.manual_seed(0)
    a = torch.rand(1, 1, 16, 16) * 2 - 1
    b = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    assert ssim(a, b).item() == pytest.approx(_ssim_reference(a, b).item(), abs=1e-5)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)


def test_psnr():
    a = torch.zeros(1, 3, 4, 4)
    assert psnr(a, a + 0.2) == pytest.approx(10 * math.log10(1 / 0.01))


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    moments = torch.randn(2, 8, 3, 2, 2)
    post = DiagonalGaussian(moments)
    q = torch.distributions.Normal(post.mean, (0.5 * post.logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(post.mean), torch.ones_like(post.mean))
    ref = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    torch.testing.assert_close(post.kl(), ref)


def test_adaptive_weight_is_gradient_ratio():
    w = torch.randn(3, requires_grad=True)
    rec, g = (2 * w).sum(), (0.5 * w).sum()
    assert adaptive_weight(rec, g, w).item() == pytest.approx(4.0, rel=1e-3)


def test_loss_config_validation():
    with pytest.raises(VAEConfigError, match="kl_weight"):
        LossConfig(kl_weight=-1)


def test_gan_step_trains_both_players_from_their_own_losses(tiny_vae, video):
    """Discriminator grads come only from its hinge loss; generator grads include -D(recon)."""
    torch.manual_seed(0)
    disc = PatchDiscriminator3D(channels=8, layers=2, groups=4)
    module = VAETrainModule(tiny_vae.train(), disc)
    step = make_step_fn(LossConfig(disc_weight=0.5))
    batch = {"video": video[:1, :, 1:9], "image": video[:1, :, 0]}
    rng = torch.get_rng_state()
    loss, metrics = step(module, batch)
    loss.backward()
    assert {"l1", "ssim", "kl", "g_loss", "d_loss", "image_l1"} <= set(metrics)
    assert all(p.grad is not None for p in module.parameters())
    # recompute the discriminator's own loss: its gradients must match exactly
    disc_grads = [p.grad.clone() for p in disc.parameters()]
    module.zero_grad()
    torch.set_rng_state(rng)  # the same posterior sample as in the step
    with torch.no_grad():
        recon, _ = tiny_vae(batch["video"])
    from mugv.vae.losses import hinge_d_loss

    hinge_d_loss(disc(batch["video"]), disc(recon)).backward()
    for a, b in zip(disc_grads, disc.parameters()):
        torch.testing.assert_close(a, b.grad)

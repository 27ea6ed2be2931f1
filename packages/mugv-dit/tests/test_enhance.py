"""Enhancer: degradations, PSNR, the one-step SDEdit maths, its training target, and a short
real Trainer run after which one step restores degraded latents."""

import math

import numpy as np
import pytest
import torch
from test_pipeline import PoolCodec
from torch import nn

from mugv.dit import DiTConfig, MUGDiT
from mugv.dit.enhance import (
    EnhanceConfig,
    EnhancePairs,
    Enhancer,
    EnhanceStep,
    degrade,
    psnr,
    train_enhancer,
)
from mugv.dit.pipeline import PipelineError
from mugv.infra import single_process
from mugv.infra.trainer import TrainerConfig

CONFIG = DiTConfig(hidden_size=24, num_heads=2, depth=1, text_dim=16, text_len=8)


def _video(seed=0, frames=9, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 1, size // 8, size // 8, generator=g) * 2 - 1
    video = base.repeat_interleave(8, 3).repeat_interleave(8, 4).repeat(1, 1, frames, 1, 1)
    return video * 0.8  # piecewise-constant blocks: sharp edges for blur and H.264 to hurt


def test_psnr_matches_numpy():
    a, b = _video(0), _video(1)
    mse = np.mean((a.numpy() - b.numpy()) ** 2)
    assert float(psnr(a, b)[0]) == pytest.approx(10 * math.log10(4 / mse), rel=1e-5)


def test_degradations_hurt_and_keep_the_shape():
    video = _video()
    g = torch.Generator().manual_seed(0)
    blurred = degrade(video, "blur", 1.5)
    noisy = degrade(video, "noise", 0.2, generator=g)
    compressed = degrade(video, "compression", 45)
    for out in (blurred, noisy, compressed):
        assert out.shape == video.shape and out.abs().max() <= 1
        assert 10 < float(psnr(out, video)) < 40
    # blur keeps flat areas and the mean, softens edges; noise has the asked std
    assert float(blurred[0, :, 0, 12, 12].sub(video[0, :, 0, 12, 12]).abs().max()) < 0.2
    assert float((noisy - video).std()) == pytest.approx(0.2, rel=0.1)
    assert float(psnr(degrade(video, "compression", 20), video)) > float(psnr(compressed, video))
    constant = torch.full((1, 3, 2, 16, 16), 0.25)
    torch.testing.assert_close(degrade(constant, "blur", 2.0), constant)
    with pytest.raises(PipelineError, match="unknown degradation"):
        degrade(video, "rain", 1.0)
    with pytest.raises(PipelineError, match="CRF"):
        degrade(video, "compression", 60)


class ExactVelocity(nn.Module):
    """Knows the clean latents and the noise: predicts v = z - eps exactly (a flow oracle)."""

    def __init__(self, z, eps):
        super().__init__()
        self.z, self.eps = z, eps
        self.weight = nn.Parameter(torch.zeros(()))
        self.dit = CONFIG

    def forward(self, x, timestep, text, text_mask, fps, cond_mask=None, drop_text=None, **_):
        copies = x.shape[0] // self.z.shape[0]
        return (self.z - self.eps).repeat(copies, 1, 1, 1, 1)


def test_one_step_with_the_exact_velocity_returns_the_clean_latents():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 24, 3, 4, 4, generator=g)
    config = EnhanceConfig(sigma=0.3, seed=7, hold_first_frame=False)
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(7))
    enhancer = Enhancer(ExactVelocity(z, eps), PoolCodec())
    torch.testing.assert_close(enhancer.enhance_latents(z, None, config), z, rtol=0, atol=1e-6)


def test_untrained_mugdit_step_is_the_noised_input_with_frame_0_held():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 24, 3, 4, 4, generator=g)
    with single_process(seed=0):
        enhancer = Enhancer(MUGDiT(CONFIG), PoolCodec())  # untrained: predicts v = 0
        out = enhancer.enhance_latents(z, None, EnhanceConfig(sigma=0.25, seed=3))
    eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(3))
    expected = 0.75 * z + 0.25 * eps
    expected[:, :, 0] = z[:, :, 0]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_enhancer_on_pixels_with_prompts_and_cfg():
    from mugv.dit.text_encoder import HFTextEncoder

    video = _video().repeat(2, 1, 1, 1, 1)
    with single_process(seed=0):
        model = MUGDiT(DiTConfig(hidden_size=24, num_heads=2, depth=1, text_dim=384, text_len=16))
        enhancer = Enhancer(model, PoolCodec(), HFTextEncoder(max_length=16))
        out = enhancer(video, ["a red circle", "a blue square"], guidance_scale=2.0)
        assert out.shape == video.shape
        with pytest.raises(PipelineError, match="one prompt per video"):
            enhancer(video, ["only one"])
        with pytest.raises(PipelineError, match="no text_encoder"):
            Enhancer(model, PoolCodec())(video, ["a", "b"])
    with pytest.raises(PipelineError, match="sigma"):
        EnhanceConfig(sigma=0)


def test_training_target_is_the_flow_velocity_on_clean_inputs():
    """With degraded == clean, EnhanceStep's loss is the flow loss ||v - (z - eps)||^2."""
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(2, 24, 2, 4, 4, generator=g, dtype=torch.float64)
    batch = {
        "degraded": clean,
        "clean": clean,
        "text": torch.randn(2, 3, 16, generator=g, dtype=torch.float64),
        "text_mask": torch.ones(2, 3, dtype=torch.bool),
        "fps": torch.full((2,), 8.0, dtype=torch.float64),
    }
    with single_process(seed=0):
        model = MUGDiT(CONFIG).double()
        torch.manual_seed(4)
        loss, _ = EnhanceStep(0.3, spread=0.1, text_dropout=0.0, hold_first_frame=False)(
            model, batch
        )
        torch.manual_seed(4)
        t = 0.2 + 0.2 * torch.rand(2)
        eps = torch.randn_like(clean)
    # the untrained model predicts 0, so the loss is the mean of (z - eps)^2
    assert float(loss) == pytest.approx(float((clean - eps).pow(2).mean()), rel=1e-6)
    assert t.min() >= 0.2 and t.max() <= 0.4


def test_trained_enhancer_restores_degraded_latents():
    """Toy world: clean latents are one of 4 patterns (a video prior is low-dimensional);
    degraded = a washed-out copy (half contrast, shifted) plus noise. SDEdit's own noise
    destroys per-element detail, so restoring needs the prior, as with real videos."""
    g = torch.Generator().manual_seed(0)
    n = 32
    patterns = torch.randn(4, 24, 2, 4, 4, generator=g)
    clean = patterns[torch.arange(n) % 4]
    degraded = 0.5 * clean + 0.3 + 0.2 * torch.randn(clean.shape, generator=g)
    text = torch.zeros(3, 16)
    data = EnhancePairs(degraded, clean, [text] * n, 8.0, height=32, width=32)
    config = EnhanceConfig(sigma=0.3, hold_first_frame=False, seed=1)
    with single_process(seed=0) as info:
        model = MUGDiT(CONFIG)
        enhancer = Enhancer(model, PoolCodec())
        before = (enhancer.enhance_latents(degraded, None, config) - clean).pow(2).mean()
        trainer = train_enhancer(
            model,
            data,
            TrainerConfig(steps=300, lr=1e-2, warmup_steps=10, log_every=1000),
            info=info,
            batch_size=8,
            step=EnhanceStep(0.3, hold_first_frame=False),
        )
        trainer.fit()
        after = (enhancer.enhance_latents(degraded, None, config) - clean).pow(2).mean()
    input_err = (degraded - clean).pow(2).mean()
    assert float(after) < 0.6 * float(input_err) < float(before), (before, after, input_err)

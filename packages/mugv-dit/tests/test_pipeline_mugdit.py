"""Integration: the real MUGDiT (tiny config, local Megatron spec on CPU) with the real MiniLM
in the rectified-flow step, the Trainer and the generation pipeline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mugv.dit.config import dit_config
from mugv.dit.model import MUGDiT
from mugv.dit.pipeline import GenerationConfig, Pipeline
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
from mugv.dit.text_encoder import HFTextEncoder
from mugv.dit.train import DiTStep, LatentTextDataset, collate_latents, train_dit
from mugv.infra.parallel import single_process
from mugv.infra.trainer import TrainerConfig

C = 24


class PoolCodec:
    """A codec double (mugv-dit does not depend on mugv-vae): 8x pooling, MUG-V frame grouping."""

    proj = torch.linspace(-1, 1, 3 * C).view(C, 3)

    def encode(self, video):  # (B, 3, T, H, W) -> (B, C, t, H/8, W/8)
        rest = video[:, :, 1:]
        groups = [video[:, :, :1]] + [
            rest[:, :, i : i + 8].mean(2, keepdim=True) for i in range(0, rest.shape[2], 8)
        ]
        return torch.einsum(
            "ck,bkthw->bcthw", self.proj, nn.functional.avg_pool3d(torch.cat(groups, 2), (1, 8, 8))
        )

    def decode(self, latents):  # (B, C, t, h, w) -> (B, 3, 1 + 8 (t - 1), 8h, 8w)
        rgb = torch.einsum("kc,bcthw->bkthw", torch.linalg.pinv(self.proj), latents)
        frames = torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(8, dim=2)], 2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4).tanh()


@pytest.fixture(scope="module")
def encoder():
    return HFTextEncoder(max_length=16)


@pytest.fixture
def dist():
    with single_process(seed=0) as info:
        yield info


def make_model(perturb: bool = True) -> MUGDiT:
    """A tiny MUGDiT; `perturb` jitters every weight, since the DiT init zeroes the output
    layer and the gates (a fresh model predicts v = 0, which would make CFG checks vacuous)."""
    torch.manual_seed(0)
    model = MUGDiT(dit_config("tiny", text_dim=384)).eval()
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


def test_flow_step_backward_with_mugdit(dist, encoder):
    model = make_model()
    text, mask = encoder.encode(
        ["a red circle moves left", "a blue square", "a green star moves up", "x"]
    )
    batch = {
        "latents": torch.randn(4, C, 3, 4, 4),
        "text": text,
        "text_mask": mask,
        "fps": torch.full((4,), 8.0),
        "height": 32,
        "width": 32,
    }
    torch.manual_seed(0)
    loss, logs = DiTStep(RectifiedFlow(FlowConfig(task_probs={"t2i": 1, "i2v": 1, "frames": 1})))(
        model, batch
    )
    assert torch.isfinite(loss) and logs
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_train_dit_overfits_a_few_clips(dist, encoder):
    model = make_model(perturb=False)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(4, C, 1, 1, 1, generator=g).expand(-1, -1, 2, 4, 4).contiguous()
    tokens, mask = encoder.encode(["a red circle", "a blue square", "a green star", "a grey cube"])
    ds = LatentTextDataset(
        latents, [tokens[i, mask[i]] for i in range(4)], 8.0, height=32, width=32
    )
    flow = RectifiedFlow(FlowConfig(use_shift=False))
    step = DiTStep(flow)
    batch = collate_latents([ds[i] for i in range(4)])

    def eval_loss() -> float:
        torch.manual_seed(7)
        with torch.no_grad():
            return step(model, batch)[0].item()

    initial = eval_loss()
    config = TrainerConfig(steps=40, lr=2e-3, schedule="constant", ema_decay=0.99, log_every=1000)
    train_dit(model, ds, config, info=dist, batch_size=4, flow=flow).fit()
    assert eval_loss() < 0.6 * initial


def test_pipeline_with_mugdit_i2v_seeds_batches(dist, encoder, tmp_path):
    model = make_model()
    pipe = Pipeline(model, PoolCodec(), encoder, flow=RectifiedFlow(FlowConfig()))
    cfg = GenerationConfig(
        num_frames=17, height=32, width=32, num_steps=3, negative_prompt="blurry", seed=3
    )
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    ref = pipe.codec.encode(image.unsqueeze(2))
    prompts = ["a red circle moves left", "a blue square moves up"]
    a = pipe.sample_latents(prompts, cfg, image_latents=ref)
    b = pipe.sample_latents(prompts, cfg, image_latents=ref)
    assert torch.equal(a, b)
    assert torch.equal(a[:, :, :1], ref)
    single = pipe.sample_latents(
        prompts[1:], GenerationConfig(**{**vars(cfg), "seed": 4}), image_latents=ref[1:]
    )
    torch.testing.assert_close(a[1:], single, atol=1e-4, rtol=1e-4)
    t2v = pipe.sample_latents(prompts, cfg)
    assert not torch.allclose(t2v[:, :, :1], ref)
    paths = pipe.generate_mp4(prompts[:1], tmp_path, config=cfg)
    assert paths[0].stat().st_size > 0


def test_cfg_scale_one_equals_conditional_forward(dist, encoder):
    model = make_model()
    pipe = Pipeline(model, PoolCodec(), encoder)
    cfg = GenerationConfig(
        num_frames=9, height=32, width=32, num_steps=1, guidance_scale=1.0, seed=0
    )
    out = pipe.sample_latents(["a red circle"], cfg)
    x = pipe.initial_noise(1, (2, 4, 4), 0)
    text, mask = encoder.encode(["a red circle"])
    with torch.no_grad():
        v = model(
            x,
            torch.ones(1),
            text,
            mask,
            torch.full((1,), 8.0),
            drop_text=torch.zeros(1, dtype=torch.bool),
        )
    assert v.abs().mean() > 1e-3
    torch.testing.assert_close(out, x + v, atol=1e-5, rtol=1e-5)
    guided = pipe.sample_latents(
        ["a red circle"], GenerationConfig(**{**vars(cfg), "guidance_scale": 4.0})
    )
    assert not torch.allclose(guided, out)


def test_bf16_sampling_is_the_fp32_sampling_in_bf16_precision(dist, encoder, monkeypatch):
    """precision="bf16" runs the real MUGDiT under autocast (the result moves by bf16 rounding,
    not more) and hands back latents in the model's dtype; "auto" is one or the other as
    `fast_bf16` says."""
    model = make_model()
    pipe = Pipeline(model, PoolCodec(), encoder)
    cfg = GenerationConfig(num_frames=9, height=32, width=32, num_steps=4, seed=1)
    prompts = ["a red circle moves left", "a blue square"]
    fp32 = pipe.sample_latents(prompts, cfg)
    bf16 = pipe.sample_latents(prompts, GenerationConfig(**{**vars(cfg), "precision": "bf16"}))
    assert bf16.dtype == fp32.dtype == torch.float32
    assert not torch.equal(bf16, fp32)  # autocast did run
    error = (bf16 - fp32).norm() / fp32.norm()
    assert error < 0.02, f"bf16 sampling is {error:.3f} (relative) away from fp32"
    from mugv.dit import pipeline

    auto = GenerationConfig(**{**vars(cfg), "precision": "auto"})
    for fast, want in ((True, bf16), (False, fp32)):
        monkeypatch.setattr(pipeline, "fast_bf16", lambda device, fast=fast: fast)
        assert torch.equal(pipe.sample_latents(prompts, auto), want)


@pytest.mark.parametrize("negative", ["blurry", None])
def test_contrast_guidance_with_mugdit_batches_like_singles(dist, encoder, negative):
    """The real MUGDiT with packed text of different lengths: a batch of two prompts with one
    and three contrast prompts (i2v) equals each prompt sampled alone, and the push changes
    the result; with a negative prompt or the learned null caption (which keeps its own
    length whatever the batch's texts)."""
    model = make_model()
    pipe = Pipeline(model, PoolCodec(), encoder)
    cfg = GenerationConfig(
        num_frames=17, height=32, width=32, num_steps=4, seed=3, negative_prompt=negative
    )
    ref = pipe.codec.encode(torch.rand(2, 3, 1, 32, 32) * 2 - 1)
    prompts = ["a red circle moves left", "a large blue square moves up quickly"]
    contrasts = [
        ["a red square moves left"],
        ["a large blue circle moves up quickly", "a blue triangle", "a large blue diamond"],
    ]
    both = pipe.sample_latents(prompts, cfg, image_latents=ref, contrasts=contrasts)
    for i in range(2):
        alone = pipe.sample_latents(
            prompts[i : i + 1],
            GenerationConfig(**{**vars(cfg), "seed": 3 + i}),
            image_latents=ref[i : i + 1],
            contrasts=contrasts[i : i + 1],
        )
        torch.testing.assert_close(both[i : i + 1], alone, atol=1e-4, rtol=1e-4)
    plain = pipe.sample_latents(prompts, cfg, image_latents=ref)
    assert torch.equal(both[:, :, :1], ref)
    assert (both - plain).abs().max() > 1e-3

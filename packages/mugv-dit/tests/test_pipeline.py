"""Pipeline: sizes, CFG wiring, i2v frame holding, seeds, batches and the real mp4 writer.

These unit tests use test doubles with the real interfaces (a MUGDiT-signature velocity model
and a pooling codec); the real MUGDiT and MiniLM run in test_pipeline_mugdit.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mugv.data.video import read_video
from mugv.dit.pipeline import GenerationConfig, LatentCodec, Pipeline, PipelineError, video_to_clips
from mugv.dit.samplers import SAMPLERS
from mugv.dit.text_encoder import HFTextEncoder

C = 24


class TextAwareModel(nn.Module):
    """A MUGDiT-signature double: velocity pulls x towards a text- and fps-dependent target."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[dict] = []

    def forward(
        self, x, timestep, text, text_mask, fps, cond_mask=None, frame_index=None, drop_text=None
    ):
        self.calls.append(dict(b=x.shape[0], cond=cond_mask, drop=drop_text, t=timestep))
        pooled = (text * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True)  # (B, D)
        pooled = torch.where(drop_text[:, None], torch.zeros_like(pooled), pooled)
        target = pooled[:, :C].view(-1, C, 1, 1, 1) * self.scale
        t = timestep.view(-1, 1, 1, 1, 1)
        return (target - x) / t.clamp(min=0.05)  # x0-prediction style velocity


class PoolCodec:
    """A codec double: 8x spatial mean-pool + the MUG-V temporal grouping (frame 0, then 8s)."""

    proj = torch.linspace(-1, 1, 3 * C).view(C, 3)

    def encode(self, video):  # (B, 3, T, H, W) -> (B, C, t, H/8, W/8)
        first = video[:, :, :1]
        rest = video[:, :, 1:]
        groups = [first] + [
            rest[:, :, i : i + 8].mean(2, keepdim=True) for i in range(0, rest.shape[2], 8)
        ]
        pooled = nn.functional.avg_pool3d(torch.cat(groups, 2), (1, 8, 8))
        return torch.einsum("ck,bkthw->bcthw", self.proj, pooled)

    def decode(self, latents):  # (B, C, t, h, w) -> (B, 3, 1 + 8 (t - 1), 8h, 8w)
        rgb = torch.einsum("kc,bcthw->bkthw", torch.linalg.pinv(self.proj), latents)
        frames = torch.cat([rgb[:, :, :1], rgb[:, :, 1:].repeat_interleave(8, dim=2)], 2)
        return frames.repeat_interleave(8, dim=3).repeat_interleave(8, dim=4).tanh()


@pytest.fixture(scope="module")
def encoder():
    return HFTextEncoder(max_length=16)


@pytest.fixture
def pipe(encoder):
    return Pipeline(TextAwareModel(), PoolCodec(), encoder, max_latent_frames=8)


def test_codec_double_satisfies_protocol():
    assert isinstance(PoolCodec(), LatentCodec)


@pytest.mark.parametrize(
    ("frames", "height", "width", "match"),
    [
        (16, 32, 32, r"not 1 \+ 8 k.*use 9 or 17"),
        (17, 40, 32, r"height=40 is not a multiple of 16 .*; use 32 or 48"),
        (17, 32, 8, r"width=8 is not a multiple of 16 .*; use 16$"),
        (73, 32, 32, "longer than the 3D RoPE table"),
    ],
)
def test_impossible_sizes(pipe, frames, height, width, match):
    with pytest.raises(PipelineError, match=match):
        pipe.latent_shape(frames, height, width)


def test_latent_shape(pipe):
    assert pipe.latent_shape(17, 32, 48) == (3, 4, 6)
    assert pipe.latent_shape(1, 16, 16) == (1, 2, 2)
    assert pipe.latent_shape(57, 16, 16) == (8, 2, 2)


def test_cfg_batches_cond_and_negative(pipe):
    cfg = GenerationConfig(num_frames=9, height=32, width=32, num_steps=3)
    pipe.sample_latents(["a red circle"], cfg)
    call = pipe.model.calls[-1]
    assert call["b"] == 2 and call["drop"].tolist() == [False, True]  # null text without negative
    pipe.sample_latents(
        ["a red circle"],
        GenerationConfig(num_frames=9, height=32, width=32, num_steps=3, negative_prompt="blurry"),
    )
    assert pipe.model.calls[-1]["drop"].tolist() == [False, False]
    pipe.sample_latents(
        ["a red circle"],
        GenerationConfig(num_frames=9, height=32, width=32, num_steps=3, guidance_scale=1.0),
    )
    assert pipe.model.calls[-1]["b"] == 1
    assert len(pipe.model.calls) == 9


def test_guidance_changes_result(pipe):
    base = dict(num_frames=9, height=32, width=32, num_steps=4)
    plain = pipe.sample_latents(["a red circle"], GenerationConfig(**base, guidance_scale=1.0))
    guided = pipe.sample_latents(["a red circle"], GenerationConfig(**base, guidance_scale=4.0))
    assert not torch.allclose(plain, guided)


def test_seeds_reproduce_and_batches_match_singles(pipe):
    cfg = GenerationConfig(num_frames=9, height=32, width=32, num_steps=4, seed=7)
    batch = pipe.sample_latents(["a red circle", "a blue square"], cfg)
    again = pipe.sample_latents(["a red circle", "a blue square"], cfg)
    assert torch.equal(batch, again)
    single = pipe.sample_latents(
        ["a blue square"], GenerationConfig(num_frames=9, height=32, width=32, num_steps=4, seed=8)
    )
    torch.testing.assert_close(batch[1:], single, atol=1e-5, rtol=1e-5)
    other = pipe.sample_latents(
        ["a red circle", "a blue square"],
        GenerationConfig(num_frames=9, height=32, width=32, num_steps=4, seed=9),
    )
    assert not torch.allclose(batch, other)


@pytest.mark.parametrize("sampler", ["euler", "heun", "multistep"])
def test_i2v_holds_first_frame_exactly(pipe, sampler):
    torch.manual_seed(0)
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    latents_ref = pipe.codec.encode(image.unsqueeze(2))
    cfg = GenerationConfig(num_frames=17, height=32, width=32, num_steps=3, sampler=sampler)
    latents = pipe.sample_latents(["a", "b"], cfg, image_latents=latents_ref)
    assert torch.equal(latents[:, :, :1], latents_ref)
    assert (
        pipe.model.calls[-1]["cond"][:, 0].all() and not pipe.model.calls[-1]["cond"][:, 1:].any()
    )
    video = pipe(["a", "b"], image=image, config=cfg)
    assert video.shape == (2, 3, 17, 32, 32)
    with pytest.raises(PipelineError, match="image has shape"):
        pipe(["a"], image=image, config=cfg)


@pytest.mark.parametrize("i2v", [False, True])
def test_contrast_guidance_equals_a_float64_loop(pipe, i2v):
    """Batched contrast guidance (prompts with 1 and 2 contrast prompts, CFG, i2v) against a
    per-prompt loop in float64 that calls the model once per text."""
    prompts = ["a red circle", "a blue square"]
    contrasts = [["a red square"], ["a blue circle", "a blue triangle"]]
    cfg = GenerationConfig(
        num_frames=17, height=32, width=32, num_steps=6, contrast_scale=3.0, seed=5
    )
    image_latents = None
    if i2v:
        torch.manual_seed(0)
        image_latents = pipe.codec.encode(torch.rand(2, 3, 1, 32, 32) * 2 - 1)
    got = pipe.sample_latents(prompts, cfg, image_latents=image_latents, contrasts=contrasts)

    model = pipe.model.double()
    try:
        shape = pipe.latent_shape(17, 32, 32)
        sampler = SAMPLERS["euler"](6)
        sampler.set_timesteps(6, ratio=pipe.flow.ratio(32, 32, shape[0]))
        x = pipe.initial_noise(2, shape, 5).double()
        cond = None
        if i2v:
            x[:, :, :1] = image_latents.double()
            cond = torch.zeros(1, shape[0], dtype=torch.bool)
            cond[:, 0] = True

        def velocity(i, text, t, drop=False):
            tokens, mask = pipe.text_encoder.encode([text])
            return model(
                x[i : i + 1],
                torch.full((1,), float(t), dtype=torch.float64),
                tokens.double(),
                mask,
                torch.full((1,), 8.0, dtype=torch.float64),
                cond_mask=cond,
                drop_text=torch.tensor([drop]),
            )[0]

        inside = 0
        for t in sampler.timesteps:
            v = []
            for i, prompt in enumerate(prompts):
                vc, vu = velocity(i, prompt, t), velocity(i, "", t, drop=True)
                guided = vu + 4.0 * (vc - vu)
                if 0.3 <= float(t) <= 1.0:
                    rival = torch.stack([velocity(i, c, t) for c in contrasts[i]]).mean(0)
                    guided = guided + 3.0 * (vc - rival)
                    inside += i == 0
                v.append(guided)
            x = sampler.step(torch.stack(v), t, x)
            if i2v:
                x[:, :, :1] = image_latents.double()
    finally:
        model.float()
    assert 0 < inside < len(sampler.timesteps)  # the interval leaves some steps out
    torch.testing.assert_close(got.double(), x, atol=1e-4, rtol=1e-4)


def test_contrast_prompts_run_only_inside_the_interval(pipe):
    cfg = GenerationConfig(num_frames=9, height=32, width=32, num_steps=8)
    pipe.model.calls.clear()
    pipe.sample_latents(["a red circle"], cfg, contrasts=[["a red square", "a red diamond"]])
    for call in pipe.model.calls:
        t = float(call["t"][0])
        assert call["b"] == (4 if 0.3 <= t <= 1.0 else 2)
        assert call["drop"].tolist()[:2] == [False, True]
    assert {c["b"] for c in pipe.model.calls} == {2, 4}
    base = pipe.sample_latents(["a red circle"], cfg)
    off = pipe.sample_latents(
        ["a red circle"],
        GenerationConfig(num_frames=9, height=32, width=32, num_steps=8, contrast_scale=0.0),
        contrasts=[["a red square"]],
    )
    torch.testing.assert_close(off, base)


@pytest.mark.parametrize(
    ("contrasts", "match"),
    [
        ([["a red square"]], r"one list of contrast prompts per prompt \(2\), got 1"),
        ("a red square", "got a string"),
        ([["a red square"], []], r"contrasts\[1\] must be a non-empty list"),
        ([["a red square"], [" "]], r"contrasts\[1\] must be a non-empty list"),
    ],
)
def test_bad_contrasts(pipe, contrasts, match):
    cfg = GenerationConfig(num_frames=9, height=32, width=32, num_steps=2)
    with pytest.raises(PipelineError, match=match):
        pipe.sample_latents(["a red circle", "a blue square"], cfg, contrasts=contrasts)


def test_contrast_weights_equal_repeated_contrast_prompts(pipe):
    cfg = GenerationConfig(num_frames=9, height=32, width=32, num_steps=4, contrast_scale=2.0)
    weighted = pipe.sample_latents(
        ["a red circle"],
        cfg,
        contrasts=[["a red square", "a red circle moving left"]],
        contrast_weights=[[2.0, 1.0]],
    )
    repeated = pipe.sample_latents(
        ["a red circle"],
        cfg,
        contrasts=[["a red square", "a red square", "a red circle moving left"]],
    )
    torch.testing.assert_close(weighted, repeated)
    for contrasts, weights, match in (
        (None, [[1.0]], "contrast_weights needs contrasts"),
        ([["a red square"]], [[1.0, 2.0]], r"contrast_weights\[0\] must hold one positive"),
        ([["a red square"]], [[0.0]], r"contrast_weights\[0\] must hold one positive"),
    ):
        with pytest.raises(PipelineError, match=match):
            pipe.sample_latents(
                ["a red circle"], cfg, contrasts=contrasts, contrast_weights=weights
            )


def test_call_to_mp4(pipe, tmp_path):
    paths = pipe.generate_mp4(
        ["a red circle", "a blue square"],
        tmp_path,
        num_frames=9,
        height=32,
        width=32,
        num_steps=2,
        fps=12.0,
    )
    assert [p.name for p in paths] == ["000.mp4", "001.mp4"]
    clip = read_video(paths[1])
    assert clip.frames.shape == (9, 32, 32, 3) and abs(clip.fps - 12.0) < 1e-3


def test_video_to_clips_range():
    video = torch.stack([torch.full((3, 2, 4, 4), -1.0), torch.full((3, 2, 4, 4), 1.0)])
    clips = video_to_clips(video, 8.0)
    assert clips[0].frames.max() == 0 and clips[1].frames.min() == 255 and clips[1].fps == 8.0


def test_config_errors():
    with pytest.raises(PipelineError, match="sampler='rk4' is unknown"):
        GenerationConfig(sampler="rk4")
    with pytest.raises(PipelineError, match="guidance_rescale"):
        GenerationConfig(guidance_rescale=1.5)
    with pytest.raises(PipelineError, match="contrast_scale must be >= 0"):
        GenerationConfig(contrast_scale=-1.0)
    with pytest.raises(PipelineError, match="contrast_interval must be"):
        GenerationConfig(contrast_interval=(0.8, 0.2))
    with pytest.raises(PipelineError, match="precision='fp16'; use 'auto', 'fp32' or 'bf16'"):
        GenerationConfig(precision="fp16")

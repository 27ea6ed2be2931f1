"""Rectified-flow objective: noising, target sign, t sampling, shift, masking and joint tasks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mugv.dit.rectified_flow import (
    FlowConfig,
    FlowError,
    RectifiedFlow,
    masked_mse,
    shift_ratio,
    time_shift,
)


class RecordingModel(nn.Module):
    """Test double with MUGDiT's signature: a per-channel linear map, recording its inputs."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv3d(channels, channels, 1)
        self.calls: list[dict] = []

    def forward(
        self,
        x,
        timestep,
        text,
        text_mask,
        fps,
        cond_mask=None,
        frame_index=None,
        drop_text=None,
        num_frames=None,
    ):
        self.calls.append(
            dict(
                x=x.clone(),
                t=timestep,
                cond=cond_mask,
                drop=drop_text,
                index=frame_index,
                frames=num_frames,
            )
        )
        return self.proj(x)


def test_add_noise_and_velocity_sign():
    x0, eps = torch.randn(2, 4, 3, 4, 4), torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([0.0, 1.0])
    xt = RectifiedFlow.add_noise(x0, eps, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], eps[1])
    t = torch.tensor([0.3, 0.7])
    h = 1e-3
    fd = (RectifiedFlow.add_noise(x0, eps, t - h) - RectifiedFlow.add_noise(x0, eps, t)) / h
    torch.testing.assert_close(fd, RectifiedFlow.velocity(x0, eps), atol=1e-3, rtol=1e-3)  # -dx/dt


def test_shift_formula():
    assert shift_ratio(512, 512, 1) == 1.0
    assert math.isclose(shift_ratio(720, 1280, 14), math.sqrt(720 * 1280 / 512**2) * math.sqrt(14))
    assert math.isclose(shift_ratio(64, 64, 3), 0.125 * math.sqrt(3))
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    torch.testing.assert_close(time_shift(t, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(time_shift(t, 1.0), t)
    with pytest.raises(FlowError, match="positive"):
        shift_ratio(0, 64, 1)


def test_logit_normal_t():
    flow = RectifiedFlow()
    t = flow.sample_t(200_000, generator=torch.Generator().manual_seed(0))
    assert t.min() > 0 and t.max() < 1
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean()) < 0.01 and abs(logit.std() - 1) < 0.01
    shifted = flow.sample_t(200_000, ratio=4.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, time_shift(t, 4.0))
    assert flow.ratio(1024, 1024, 4) == 4.0
    assert RectifiedFlow(FlowConfig(use_shift=False)).ratio(1024, 1024, 4) == 1.0


def test_masked_mse_ignores_conditioning_frames():
    pred, target = torch.zeros(2, 4, 3, 2, 2), torch.ones(2, 4, 3, 2, 2)
    target[:, :, 0] = 100.0  # a huge error on frame 0 only
    mask = torch.tensor([[False, True, True], [True, True, True]])
    loss = masked_mse(pred, target, mask)
    torch.testing.assert_close(loss, torch.tensor([1.0, (100.0**2 + 2) / 3]))


def test_loss_masks_conditioning_frames_and_keeps_them_clean():
    torch.manual_seed(0)
    model = RecordingModel()
    flow = RectifiedFlow(FlowConfig(task_probs={"i2v": 1.0}, text_dropout=0.0))
    latents = torch.randn(3, 4, 3, 4, 4)
    text, mask, fps = (
        torch.randn(3, 5, 8),
        torch.ones(3, 5, dtype=torch.bool),
        torch.full((3,), 8.0),
    )
    loss, logs = flow.loss(model, latents, text, mask, fps, height=32, width=32)
    call = model.calls[-1]
    assert call["cond"][:, 0].all() and not call["cond"][:, 1:].any()
    assert torch.equal(call["x"][:, :, 0], latents[:, :, 0])  # conditioning frame given clean
    assert set(logs) == {"loss/i2v"}
    assert torch.isfinite(loss)


def test_conditioning_frame_prediction_does_not_enter_loss():
    class Shifted(RecordingModel):
        def __init__(self, bump: float) -> None:
            super().__init__()
            self.bump = bump

        def forward(self, x, *args, **kwargs):
            out = super().forward(x, *args, **kwargs).clone()
            out[:, :, 0] += self.bump
            return out

    flow = RectifiedFlow(FlowConfig(task_probs={"i2v": 1.0}, text_dropout=0.0))
    latents = torch.randn(2, 4, 3, 4, 4)
    text, mask, fps = (
        torch.randn(2, 5, 8),
        torch.ones(2, 5, dtype=torch.bool),
        torch.full((2,), 8.0),
    )
    losses = []
    for bump in (0.0, 1000.0):
        torch.manual_seed(0)
        model = Shifted(bump)
        losses.append(
            flow.loss(
                model,
                latents,
                text,
                mask,
                fps,
                height=32,
                width=32,
                generator=torch.Generator().manual_seed(3),
            )[0]
        )
    torch.testing.assert_close(losses[0], losses[1])


def test_joint_tasks_weights_and_logging():
    torch.manual_seed(0)
    model = RecordingModel()
    cfg = FlowConfig(
        task_probs={"t2i": 1.0, "t2v": 1.0, "i2v": 1.0, "frames": 1.0},
        task_weights={"t2i": 0.5, "t2v": 1.0, "i2v": 1.0, "frames": 1.0},
        text_dropout=0.5,
    )
    flow = RectifiedFlow(cfg)
    b = 32
    latents = torch.randn(b, 4, 4, 4, 4)
    text, mask, fps = (
        torch.randn(b, 5, 8),
        torch.ones(b, 5, dtype=torch.bool),
        torch.full((b,), 8.0),
    )
    loss, logs = flow.loss(
        model,
        latents,
        text,
        mask,
        fps,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
    )
    assert set(logs) == {"loss/t2i", "loss/t2v", "loss/i2v", "loss/frames"}
    (call,) = model.calls  # one forward for the whole batch (a pipeline stage needs that)
    g = torch.Generator().manual_seed(0)
    tasks = flow.sample_tasks(b, 4, g)
    image = torch.tensor([k == "t2i" for k in tasks])
    assert call["x"].shape[2] == 4  # t2i keeps frame 0, its other frames are padding
    assert torch.equal(call["frames"], torch.where(image, 1, 4))
    per_row = call["cond"].sum(1)
    assert per_row[image].max() == 0  # images have no conditioning frame
    assert per_row.min() == 0 and per_row.max() < 4  # some t2v rows; never all frames conditioned
    assert 0 < call["drop"].float().mean() < 1
    # The total is the task-weighted mean of the per-task losses.
    counts = {}
    for k in tasks:
        counts[k] = counts.get(k, 0) + 1
    expected = sum(cfg.task_weights[k] * n * logs[f"loss/{k}"] for k, n in counts.items()) / b
    torch.testing.assert_close(loss.detach(), expected)


def test_single_frame_latents_only_use_image_tasks():
    flow = RectifiedFlow()
    assert set(flow.sample_tasks(64, 1)) <= {"t2i", "t2v"}
    with pytest.raises(FlowError, match="t2i or t2v"):
        RectifiedFlow(FlowConfig(task_probs={"i2v": 1.0})).sample_tasks(4, 1)


def test_config_errors():
    with pytest.raises(FlowError, match="unknown tasks"):
        FlowConfig(task_probs={"t2x": 1.0})
    with pytest.raises(FlowError, match="text_dropout"):
        FlowConfig(text_dropout=1.5)
    with pytest.raises(FlowError, match="lacks weights"):
        FlowConfig(task_probs={"t2v": 1.0}, task_weights={"t2i": 1.0})


def test_frame_index_reaches_the_model():
    model = RecordingModel()
    flow = RectifiedFlow(FlowConfig(task_probs={"t2i": 1.0, "t2v": 1.0}, text_dropout=0.0))
    b = 16
    latents = torch.randn(b, 4, 3, 2, 2)
    text, mask, fps = (
        torch.randn(b, 5, 8),
        torch.ones(b, 5, dtype=torch.bool),
        torch.full((b,), 8.0),
    )
    index = torch.arange(b)[:, None] * 10 + torch.arange(3)  # clip i starts at latent frame 10 i
    flow.loss(
        model,
        latents,
        text,
        mask,
        fps,
        height=32,
        width=32,
        frame_index=index,
        generator=torch.Generator().manual_seed(0),
    )
    for call in model.calls:
        assert call["index"].shape == (call["x"].shape[0], call["x"].shape[2])
        assert torch.all(call["index"][:, 0] % 10 == 0)

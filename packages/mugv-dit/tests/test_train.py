"""The DiT training step on precomputed latents: padding, joint-task logs, learning, EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mugv.dit.rectified_flow import FlowConfig, FlowError, RectifiedFlow
from mugv.dit.train import DiTStep, LatentTextDataset, collate_latents, train_dit
from mugv.infra.parallel import single_process
from mugv.infra.trainer import TrainerConfig


class TinyVelocityNet(nn.Module):
    """A MUGDiT-signature double: a small conv net conditioned on t and pooled text."""

    def __init__(self, channels: int = 4, text_dim: int = 8) -> None:
        super().__init__()
        self.inp = nn.Conv3d(channels + 1, 32, 3, padding=1)
        self.text = nn.Linear(text_dim, 32)
        self.out = nn.Conv3d(32, channels, 3, padding=1)

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
        # Padding frames (after num_frames) are zeroed, as the convs' own zero padding would be.
        b, _, frames = x.shape[:3]
        count = torch.full((b,), frames) if num_frames is None else num_frames
        real = (torch.arange(frames) < count[:, None]).float().view(b, 1, frames, 1, 1)
        t = timestep.view(-1, 1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        pooled = (text * text_mask[..., None]).sum(1) / text_mask.sum(1, keepdim=True)
        pooled = torch.where(drop_text[:, None], torch.zeros_like(pooled), pooled)
        h = self.inp(torch.cat([x, t], 1) * real) + self.text(pooled).view(x.shape[0], -1, 1, 1, 1)
        return self.out(torch.nn.functional.gelu(h) * real) * real


def make_dataset(n: int = 16) -> LatentTextDataset:
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(4, 8, generator=g)
    labels = torch.arange(n) % 4
    base = torch.randn(4, 4, 1, 1, 1, generator=g)
    latents = base[labels].expand(-1, -1, 3, 4, 4).contiguous() + 0.05 * torch.randn(
        n, 4, 3, 4, 4, generator=g
    )
    texts = [codes[k].expand(2 + int(k), 8) for k in labels]
    return LatentTextDataset(latents, texts, 8.0, height=32, width=32)


def test_collate_pads_text():
    ds = make_dataset()
    batch = collate_latents([ds[0], ds[3]])
    assert batch["latents"].shape == (2, 4, 3, 4, 4)
    assert batch["text"].shape == (2, 5, 8) and batch["text_mask"].sum(1).tolist() == [2, 5]
    assert torch.all(batch["text"][0, 2:] == 0) and batch["height"] == 32
    rounded = collate_latents([ds[0], ds[3]], text_length=8)  # one shape for a compiled model
    assert rounded["text"].shape == (2, 8, 8) and rounded["text_mask"].sum(1).tolist() == [2, 5]
    torch.testing.assert_close(rounded["text"][:, :5], batch["text"])


def test_step_fn_on_infra_trainer_learns_logs_tasks_and_keeps_ema():
    ds = make_dataset(32)
    with single_process(seed=0) as info:
        model = TinyVelocityNet()
        flow = RectifiedFlow(FlowConfig(use_shift=False))
        config = TrainerConfig(
            steps=120, lr=3e-3, schedule="constant", ema_decay=0.9, log_every=1000
        )
        trainer = train_dit(model, ds, config, info=info, batch_size=16, flow=flow)
        batch = collate_latents([ds[i] for i in range(len(ds))])
        step = DiTStep(flow)

        def eval_loss() -> float:
            torch.manual_seed(123)
            with torch.no_grad():
                return step(model, batch)[0].item()

        initial = eval_loss()
        seen: set[str] = set()
        trainer.fit(
            on_step=lambda out: seen.update(k for k in out.metrics if k.startswith("loss/"))
        )
        final = eval_loss()
    assert final < 0.5 * initial, (initial, final)
    assert seen == {"loss/t2i", "loss/t2v", "loss/i2v", "loss/frames"}
    assert trainer.step == 120
    for name, p in model.named_parameters():
        assert not torch.equal(trainer.ema.shadow[name], p.detach())


def test_bad_inputs():
    with pytest.raises(FlowError, match="latents must be"):
        LatentTextDataset(
            torch.zeros(2, 4, 4, 4), [torch.zeros(2, 8)] * 2, 8.0, height=32, width=32
        )
    with pytest.raises(FlowError, match="one per item"):
        LatentTextDataset(torch.zeros(2, 4, 1, 4, 4), [torch.zeros(2, 8)], 8.0, height=32, width=32)

"""Preference optimisation: Diffusion-DPO for rectified flow against a float64 hand-written
reference, the absolute-label terms, frozen reference, conditioning frames, and short real
Trainer runs (LoRA with EMA, full fine-tuning) that learn a preference."""

import math

import numpy as np
import pytest
import torch
from _mugdit_reference import randomize
from test_pipeline import PoolCodec
from torch import nn

from mugv.data.preference import CorrectnessLabel, PreferencePair
from mugv.data.video import write_video
from mugv.dit import DiTConfig, MUGDiT
from mugv.dit.lora import LoRAConfig, apply_lora
from mugv.dit.preference import (
    DPOStep,
    PreferenceConfig,
    PreferenceLatents,
    dpo_loss,
    train_preference,
    unlikelihood_loss,
)
from mugv.dit.rectified_flow import FlowConfig, FlowError, RectifiedFlow
from mugv.dit.text_encoder import HFTextEncoder
from mugv.infra import single_process
from mugv.infra.trainer import TrainerConfig

CONFIG = DiTConfig(hidden_size=24, num_heads=2, depth=1, text_dim=16, text_len=8)
FLOW = RectifiedFlow(FlowConfig(base_pixels=32 * 32))


def test_dpo_loss_equals_the_paper_formula_in_float64():
    g = torch.Generator().manual_seed(0)
    errs = [torch.rand(5, generator=g, dtype=torch.float64) for _ in range(4)]
    beta = 7.0
    loss, logit = dpo_loss(*errs, beta)
    for i in range(5):
        ew, el, rw, rl = (float(e[i]) for e in errs)
        # -log sigmoid(z) = log(1 + exp(-z)), z = -beta/2 [(ew - rw) - (el - rl)]
        z = -beta / 2 * ((ew - rw) - (el - rl))
        assert float(logit[i]) == pytest.approx(z, rel=1e-12)
        assert float(loss[i]) == pytest.approx(math.log1p(math.exp(-z)), rel=1e-12)
    # sign: fitting the winner better than the reference does lowers the loss below log 2
    better, _ = dpo_loss(
        torch.tensor([0.1]), torch.tensor([0.5]), torch.tensor([0.3]), torch.tensor([0.3]), beta
    )
    assert float(better) < math.log(2)


def test_unlikelihood_is_bounded_and_saturates():
    ref = torch.full((3,), 0.5, dtype=torch.float64)
    err = torch.tensor([0.5, 0.6, 5.0], dtype=torch.float64, requires_grad=True)
    ul = unlikelihood_loss(err, ref, beta=100.0)
    assert float(ul[0]) == pytest.approx(0.5) and 0 < float(ul[2]) < float(ul[1]) < 0.5
    ul.sum().backward()
    assert err.grad[0] < 0 and abs(float(err.grad[2])) < 1e-50  # no push once clearly worse


def _copy(model):
    """A second MUGDiT with the same weights (the SFT checkpoint loaded again)."""
    other = MUGDiT(model.dit).to(next(model.parameters()).dtype)
    other.load_state_dict(model.state_dict())
    return other


def _models():
    model = MUGDiT(CONFIG).double()
    randomize(model, seed=1)
    reference = MUGDiT(CONFIG).double()
    randomize(reference, seed=2)
    return model, reference


def _batch(pairs=3, singles=4, frames=2):
    g = torch.Generator().manual_seed(5)
    text = torch.randn(pairs, 4, 16, generator=g, dtype=torch.float64)
    stext = torch.randn(singles, 4, 16, generator=g, dtype=torch.float64)
    shape = (24, frames, 4, 4)
    return {
        "fps": 8.0,
        "height": 32,
        "width": 32,
        "pairs": {
            "latents_w": torch.randn(pairs, *shape, generator=g, dtype=torch.float64),
            "latents_l": torch.randn(pairs, *shape, generator=g, dtype=torch.float64),
            "text": text,
            "text_mask": torch.ones(pairs, 4, dtype=torch.bool),
        },
        "singles": {
            "latents": torch.randn(singles, *shape, generator=g, dtype=torch.float64),
            "correct": torch.tensor([True, False, True, False][:singles]),
            "text": stext,
            "text_mask": torch.ones(singles, 4, dtype=torch.bool),
        },
    }


def _hand_err(model, x0, t, eps, text, fps, first_frame_given=False, guidance=1.0):
    """Velocity MSE of one sample, written out: x_t = (1-t) x0 + t eps, v = x0 - eps; with
    guidance w the velocity is u + w (c - u), u the null-text branch's."""
    x_t = (1 - t) * x0 + t * eps
    cond = None
    if first_frame_given:
        x_t[:, 0] = x0[:, 0]
        cond = torch.tensor([[True] + [False] * (x0.shape[1] - 1)])

    def branch(null_text):
        return model(
            x_t[None],
            torch.tensor([t], dtype=torch.float64),
            text[None],
            torch.ones(1, text.shape[0], dtype=torch.bool),
            torch.tensor([fps], dtype=torch.float64),
            cond_mask=cond,
            drop_text=torch.tensor([null_text]),
        )[0]

    pred = branch(False)
    if guidance != 1.0:
        uncond = branch(True)
        pred = uncond + guidance * (pred - uncond)
    diff = (pred - (x0 - eps)) ** 2
    return float(diff[:, 1:].mean() if first_frame_given else diff.mean())


@pytest.mark.parametrize(
    ("first_frame_given", "draws", "guidance"),
    [(False, 1, 1.0), (True, 1, 1.0), (False, 3, 1.0), (True, 2, 3.5)],
)
def test_step_equals_a_hand_written_float64_reference(first_frame_given, draws, guidance):
    cfg = PreferenceConfig(
        beta=300.0,
        sft_weight=0.7,
        unlikelihood_weight=1.3,
        draws=draws,
        guidance_scale=guidance,
        condition_first_frame=first_frame_given,
    )
    batch = _batch()
    with single_process(seed=0):
        model, reference = _models()
        step = DPOStep(reference, cfg, FLOW)
        torch.manual_seed(11)
        loss, logs = step(model, batch)
        # replay the RNG stream: pairs draw (t, eps) `draws` times each, shared by winner and
        # loser, draw-major (draw d of pair i is number d * pairs + i); then the singles alike
        torch.manual_seed(11)
        p, s = batch["pairs"], batch["singles"]
        ratio = FLOW.ratio(32, 32, 2)
        t_pairs = FLOW.sample_t(3 * draws, ratio).double()
        eps_pairs = torch.randn_like(p["latents_w"].repeat(draws, 1, 1, 1, 1))
        t_single = FLOW.sample_t(4 * draws, ratio).double()
        eps_single = torch.randn_like(s["latents"].repeat(draws, 1, 1, 1, 1))

        def mean_err(m, x0, text, t, eps, i, n):
            """The error of sample i (of n) averaged over its draws."""
            rows = [d * n + i for d in range(draws)]
            return np.mean(
                [
                    _hand_err(m, x0, float(t[r]), eps[r], text, 8.0, first_frame_given, guidance)
                    for r in rows
                ]
            )

        with torch.no_grad():
            dpo = []
            for i in range(3):
                e = {}
                for name, m in (("m", model), ("r", reference)):
                    for which in ("w", "l"):
                        x0 = p[f"latents_{which}"][i]
                        e[name + which] = mean_err(m, x0, p["text"][i], t_pairs, eps_pairs, i, 3)
                z = -150.0 * ((e["mw"] - e["rw"]) - (e["ml"] - e["rl"]))
                dpo.append(math.log1p(math.exp(-z)))
            sft, bad = [], []
            for i in range(4):
                args = (s["latents"][i], s["text"][i], t_single, eps_single, i, 4)
                em, er = mean_err(model, *args), mean_err(reference, *args)
                if bool(s["correct"][i]):
                    sft.append(em)
                else:
                    bad.append(1 / (1 + math.exp(150.0 * (em - er))))
        expected = np.mean(dpo) + 0.7 * np.mean(sft) + 1.3 * np.mean(bad)
    assert float(loss) == pytest.approx(expected, rel=1e-9)
    assert logs["loss/dpo"] == pytest.approx(np.mean(dpo), rel=1e-9)
    assert set(logs) == {"loss/dpo", "dpo/accuracy", "dpo/margin", "loss/sft", "loss/unlikelihood"}


def test_more_draws_lower_the_variance_of_the_dpo_logit():
    """The point of `draws`: the logit's spread over the RNG falls about as 1 / sqrt(draws)."""
    batch = {k: v for k, v in _batch(pairs=1).items() if k != "singles"}
    with single_process(seed=0):
        model, reference = _models()
        spread = {}
        for draws in (1, 8):
            step = DPOStep(reference, PreferenceConfig(beta=300.0, draws=draws), FLOW)
            margins = []
            for seed in range(24):
                torch.manual_seed(seed)
                with torch.no_grad():
                    margins.append(step(model, batch)[1]["dpo/margin"])
            spread[draws] = float(np.std(margins))
    assert 0 < spread[8] < 0.6 * spread[1]


def test_draws_must_be_a_positive_int():
    with pytest.raises(FlowError, match="draws must be an int >= 1"):
        PreferenceConfig(draws=0)


def test_guidance_scale_below_one_fails():
    with pytest.raises(FlowError, match="guidance_scale must be >= 1"):
        PreferenceConfig(guidance_scale=0.5)


def test_reference_is_frozen_and_equal_models_give_log_2():
    batch = _batch()
    with single_process(seed=0):
        model, _ = _models()
        reference = _copy(model)
        step = DPOStep(reference, PreferenceConfig(sft_weight=0, unlikelihood_weight=1), FLOW)
        assert not reference.training and not any(p.requires_grad for p in reference.parameters())
        loss, _ = step(model, {k: v for k, v in batch.items() if k != "singles"})
        assert float(loss) == pytest.approx(math.log(2), rel=1e-12)
        loss.backward()
        assert all(p.grad is None for p in reference.parameters())
        assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
        with pytest.raises(FlowError, match="separate frozen copy"):
            DPOStep(model, flow=FLOW)(model, batch)


class FirstFrameOffset(nn.Module):
    """Adds a large constant to frame 0 of a model's velocity."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, *args, **kwargs):
        out = self.model(x, *args, **kwargs).clone()
        out[:, :, 0] += 100.0
        return out


def test_conditioning_frame_is_not_in_the_loss():
    batch = _batch()
    cfg = PreferenceConfig(condition_first_frame=True)
    with single_process(seed=0):
        model, reference = _models()
        step = DPOStep(reference, cfg, FLOW)
        torch.manual_seed(3)
        plain, _ = step(model, batch)
        torch.manual_seed(3)
        shifted, _ = step(FirstFrameOffset(model), batch)
        torch.testing.assert_close(shifted, plain, rtol=1e-12, atol=0)
        step = DPOStep(reference, PreferenceConfig(), FLOW)
        torch.manual_seed(3)
        plain, _ = step(model, batch)
        torch.manual_seed(3)
        assert float(step(FirstFrameOffset(model), batch)[0]) > float(plain) + 1


def _toy_preferences(n=16):
    """Winners are +1 latents, losers -1, both with one prompt's features: a clear preference."""
    g = torch.Generator().manual_seed(0)
    text = torch.randn(3, 16, generator=g)
    noise = 0.1 * torch.randn(n, 24, 2, 4, 4, generator=g)
    return PreferenceLatents(
        height=32,
        width=32,
        fps=8.0,
        latents_w=1 + noise,
        latents_l=-1 + noise,
        pair_texts=[text] * n,
    )


def _preference_margin(model, reference, data, lora):
    """Mean DPO logit on a fixed draw: > 0 when the model prefers winners more than the ref."""
    step = DPOStep(None if lora else reference, PreferenceConfig(beta=50.0), FLOW)
    state = torch.get_rng_state()
    torch.manual_seed(99)
    batch = next(iter(train_preference_batches(data)))
    with torch.no_grad():
        _, logs = step(model, batch)
    torch.set_rng_state(state)
    return logs["dpo/margin"]


def train_preference_batches(data):
    from mugv.dit.preference import _PreferenceBatches

    return _PreferenceBatches(data, data.num_pairs, 0)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_trainer_learns_the_preference_with_ema(lora):
    data = _toy_preferences()
    with single_process(seed=0) as info:
        model = MUGDiT(CONFIG)
        randomize(model, seed=3, scale=0.1)
        reference = _copy(model)
        if lora:
            apply_lora(model, LoRAConfig(rank=4, alpha=4.0))
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        ref_before = {n: p.detach().clone() for n, p in reference.named_parameters()}
        trainer = train_preference(
            model,
            data,
            TrainerConfig(steps=25, lr=2e-2 if lora else 3e-3, ema_decay=0.9, log_every=100),
            info=info,
            reference=None if lora else reference,
            preference=PreferenceConfig(beta=50.0),
            flow=FLOW,
            pair_batch=4,
        )
        trainer.fit()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert set(trainer.ema.shadow) == trainable
        if lora:
            assert trainable and all("lora_" in n for n in trainable)
            for n, p in model.named_parameters():
                if n in frozen:
                    torch.testing.assert_close(p, frozen[n], rtol=0, atol=0)
        for n, p in reference.named_parameters():
            torch.testing.assert_close(p, ref_before[n], rtol=0, atol=0)
        margin = _preference_margin(model, reference, data, lora)
        trainer.ema.copy_to(model)
        ema_margin = _preference_margin(model, reference, data, lora)
    assert margin > 2 and ema_margin > 1, (margin, ema_margin)  # 0 before training


def test_from_labels_encodes_winners_losers_and_labelled_samples(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        frames = np.full((9, 32, 32, 3), 40 * i, dtype=np.uint8)
        frames[:, 8:16, 8:16] = rng.integers(0, 255, 3, dtype=np.uint8)
        paths.append(str(write_video(tmp_path / f"{i}.mp4", frames, fps=8.0, crf=0)))
    labels = [
        PreferencePair(prompt="a red circle", video_a=paths[0], video_b=paths[1], choice="b"),
        PreferencePair(prompt="a blue square", video_a=paths[2], video_b=paths[3], choice="a"),
        PreferencePair(prompt="a tie", video_a=paths[0], video_b=paths[3], choice="tie"),
        CorrectnessLabel(prompt="a red circle", video=paths[2], correct=False),
    ]
    codec = PoolCodec()
    data = PreferenceLatents.from_labels(
        labels, codec, HFTextEncoder(max_length=16), height=32, width=32
    )
    assert data.num_pairs == 2 and data.num_singles == 1 and data.fps == pytest.approx(8.0)
    assert data.latents_w.shape == (2, 24, 2, 4, 4)
    from mugv.data.video import read_video

    def enc(p):
        v = torch.from_numpy(read_video(p).frames).permute(3, 0, 1, 2).float() / 127.5 - 1
        return codec.encode(v[None])[0]

    torch.testing.assert_close(data.latents_w[0], enc(paths[1]))  # choice "b" wins
    torch.testing.assert_close(data.latents_l[1], enc(paths[3]))
    assert data.correct.tolist() == [False] and data.pair_texts[0].shape[1] == 384
    with pytest.raises(FlowError, match="no pair"):
        PreferenceLatents.from_labels(
            labels[2:3], codec, HFTextEncoder(max_length=16), height=32, width=32
        )

"""Muon: the Newton-Schulz orthogonalisation against the SVD, one step against a float64
reference written from the definition, and the Trainer's Muon path (config errors, learning,
checkpoint resume)."""

import math
import shutil

import pytest
import torch
from _infra_models import TinyRegressor, regression_data, regression_step, tiny_config

from mugv.infra import ConfigError, ShuffledBatches, Trainer, TrainerConfig, single_process
from mugv.infra.muon import Muon, orthogonalize

LAYERS = r"(^|\.)layers\."


@pytest.mark.parametrize("shape", [(48, 16), (16, 48), (24, 24)])
def test_orthogonalize_approximates_the_polar_factor(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    got = orthogonalize(x, steps=5)
    assert got.shape == x.shape and got.dtype == x.dtype
    for m, o in zip(x, got):
        u, _, vh = torch.linalg.svd(m, full_matrices=False)
        polar = u @ vh  # the exact orthogonalisation
        s = torch.linalg.svdvals(o)
        assert s.min() > 0.6 and s.max() < 1.25  # the quintic's band after 5 steps
        cosine = (o * polar).sum() / (o.norm() * polar.norm())
        assert cosine > 0.97
        # singular vectors are kept: o = U S' V^T with S' diagonal
        inner = u.T @ o @ vh.T
        assert torch.allclose(inner, torch.diag(torch.diagonal(inner)), atol=1e-6)
    # one batched call equals one call per matrix
    assert torch.allclose(got[1], orthogonalize(x[1], steps=5), atol=1e-12)


def test_muon_step_matches_the_definition():
    g = torch.Generator().manual_seed(1)
    w0 = torch.randn(12, 20, generator=g, dtype=torch.float64)
    grads = [torch.randn(12, 20, generator=g, dtype=torch.float64) for _ in range(3)]
    w = torch.nn.Parameter(w0.clone())
    opt = Muon([w], lr=0.01, momentum=0.9, ns_steps=5, weight_decay=0.1)
    ref, buf = w0.clone(), torch.zeros_like(w0)
    for grad in grads:
        w.grad = grad.clone()
        opt.step()
        buf = 0.9 * buf + 0.1 * grad  # EMA momentum, then the Nesterov look-ahead
        update = 0.1 * grad + 0.9 * buf
        ref = ref * (1 - 0.01 * 0.1) - 0.01 * 0.2 * math.sqrt(20) * orthogonalize(update)
    torch.testing.assert_close(w.detach(), ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], buf, rtol=0, atol=1e-12)


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="2-D weight matrices"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def _trainer(info, tmp_path, steps, **overrides):
    model = TinyRegressor(tiny_config())
    x, y = regression_data(32)
    data = ShuffledBatches(32, 8, lambda idx: (x[idx], y[idx]))
    config = TrainerConfig(
        **{
            "steps": steps,
            "lr": 3e-3,
            "optimizer": "muon",
            "muon_params": LAYERS,
            "checkpoint_dir": str(tmp_path),
            **overrides,
        }
    )
    return Trainer(model, regression_step, data, config, info=info)


def test_trainer_muon_learns_and_splits_the_parameters(tmp_path):
    losses = []
    with single_process(seed=0) as info:
        trainer = _trainer(info, tmp_path, 30)
        _, muon = trainer.sync.optimizers
        muon_ids = {id(p) for group in muon.param_groups for p in group["params"]}
        for name, p in trainer.model.named_parameters():
            want = p.dim() == 2 and ".layers." in f".{name}" and name.endswith("weight")
            assert (id(p) in muon_ids) == want, name
        assert muon_ids and len(muon_ids) < len(list(trainer.model.parameters()))
        trainer.fit(lambda out: losses.append(out.loss.item()))
    assert losses[-1] < 0.5 * losses[0]


def test_trainer_muon_resumes_bitwise(tmp_path):
    """A run resumed from its step-3 checkpoint (Muon momentum included) ends where the
    uninterrupted run did."""
    with single_process(seed=0) as info:
        straight = _trainer(info, tmp_path, 6, checkpoint_every=3)
        straight.fit()
        want = {k: p.detach().clone() for k, p in straight.model.named_parameters()}
    shutil.rmtree(tmp_path / "step_00000006")
    with single_process(seed=0) as info:
        resumed = _trainer(info, tmp_path, 6, checkpoint_every=3)
        assert resumed.fit() == 6
        got = dict(resumed.model.named_parameters())
    for k, v in want.items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"optimizer": "sgd"}, "optimizer"),
        ({"optimizer": "muon", "data_parallel": "megatron"}, "optimizer"),
        ({"muon_ns_steps": 0}, "muon_ns_steps"),
        ({"muon_params": "blocks.("}, "muon_params"),
    ],
)
def test_muon_config_rules(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^TrainerConfig\.{field}="):
        TrainerConfig(steps=10, **kwargs)


def test_muon_params_matching_nothing_says_what_to_set(tmp_path):
    with single_process(seed=0) as info, pytest.raises(ConfigError, match="muon_params"):
        _trainer(info, tmp_path, 2, muon_params=r"(^|\.)no_such_module\.")

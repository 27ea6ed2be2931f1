"""Muon: the Newton-Schulz orthogonalisation against the SVD, one step against a float64
reference written from the definition, and the Trainer's Muon path (config errors, learning,
checkpoint resume, DP=2 == DP=1, the TP=2 refusal)."""

import functools
import math
import shutil
from typing import Any

import pytest
import torch
from _infra_models import TinyRegressor, regression_batches, regression_step, tiny_config

from mugv.infra import ConfigError, ParallelConfig, Trainer, TrainerConfig, single_process
from mugv.infra.checkpoint import gather_full
from mugv.infra.data_parallel import muon_matrices
from mugv.infra.muon import Muon, orthogonalize
from mugv.infra.parallel import DistInfo, dist_info
from mugv.infra.spawn import run_ranks

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


@pytest.mark.parametrize("shape", [(96, 24), (24, 72)])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_short_side_iteration_equals_the_direct_one(shape, steps):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, *shape, generator=g, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    decaying = u @ torch.diag_embed(torch.logspace(0, -6, u.shape[-1], dtype=x.dtype)) @ vh
    # a flat spectrum, and a momentum-like one spanning 1e6: G_0 squares that to 1e12, below
    # float32's resolution, so those directions carry ~1e-3 relative error (bf16's rounding,
    # which the GPU path accepts, is 4e-3); a flat spectrum stays at float32's rounding
    for m, tol in ((x, 1e-5), (decaying, 2e-3)):
        direct = orthogonalize(m, steps, gram=False)
        assert torch.allclose(orthogonalize(m, steps, gram=True), direct, atol=1e-12)
        assert torch.allclose(orthogonalize(m, steps), direct, atol=1e-12)  # auto: gram
        f32 = orthogonalize(m.float(), steps, gram=True)
        assert (f32.double() - direct).abs().max() < tol * direct.abs().max()


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


@pytest.mark.parametrize("bf16", [False, True])
def test_muon_bf16_switch_picks_the_iteration_dtype(bf16):
    """`bf16=False` steps a float32 matrix by the float32 iteration exactly; `bf16=True` by the
    bf16 iteration (what GPUs and fast-bf16 CPUs run), within bf16's rounding of it."""
    g = torch.Generator().manual_seed(2)
    w0 = torch.randn(24, 40, generator=g)
    grad = torch.randn(24, 40, generator=g)
    w = torch.nn.Parameter(w0.clone())
    opt = Muon([w], lr=0.01, momentum=0.9, ns_steps=5, bf16=bf16)
    w.grad = grad.clone()
    opt.step()
    update = 0.1 * grad + 0.9 * (0.1 * grad)  # Nesterov look-ahead from a zero buffer
    scale = 0.01 * 0.2 * math.sqrt(40)
    want = w0 - scale * orthogonalize(update, 5, torch.bfloat16 if bf16 else torch.float32)
    torch.testing.assert_close(w.detach(), want, rtol=0, atol=1e-6)
    fp32 = w0 - scale * orthogonalize(update, 5, torch.float32)
    moved = (w.detach() - fp32).norm() / (w0 - fp32).norm()
    assert (moved > 1e-3) if bf16 else (moved < 1e-5)
    assert moved < 0.1


def _agreement_rank() -> bool:
    """Rank 0 finds bf16 fast, rank 1 does not: the wrapper's choice must be the same on both."""
    import torch.distributed as dist

    from mugv.infra import data_parallel

    rank = dist.get_rank()
    data_parallel.fast_bf16 = lambda device: rank == 0  # this spawned process only
    return data_parallel._agreed_fast_bf16(torch.device("cpu"))


@pytest.mark.distributed
def test_ranks_agree_on_the_newton_schulz_dtype():
    assert run_ranks(_agreement_rank, world_size=2) == [False, False]


def test_muon_rejects_vectors():
    with pytest.raises(ValueError, match="2-D weight matrices"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def _trainer(info, tmp_path, steps, **overrides):
    model = TinyRegressor(tiny_config())
    data = regression_batches(32, 8, info)
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
        muon_ids = {id(p) for group in trainer.sync.muon.param_groups for p in group["params"]}
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


def _data_parallel_run(info: DistInfo, batch: int, steps: int = 6) -> dict[str, Any]:
    """`steps` Muon steps on this rank's share of each global batch: the full weights after
    ("params") and how far the run moved the Muon matrices ("moved"). In float64, so the
    comparison can be tight: Adam and the Newton-Schulz iteration both blow float32 rounding in
    near-zero gradient directions up towards steps of order lr."""
    f64 = torch.float64
    model = TinyRegressor(tiny_config(params_dtype=f64, pipeline_dtype=f64)).to(f64)
    data = regression_batches(32, batch, info, dtype=f64)
    config = TrainerConfig(
        steps=steps, lr=3e-3, grad_clip=0.5, optimizer="muon", muon_params=LAYERS
    )
    # noise=0: the step's noise is drawn per replica, which would part DP=2 from DP=1
    trainer = Trainer(model, functools.partial(regression_step, noise=0.0), data, config, info=info)
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    trainer.fit()
    moved = max(
        (params[n].detach() - before[n]).abs().max().item() for n in muon_matrices(params, LAYERS)
    )
    return {
        "params": gather_full({n: p.detach() for n, p in params.items()}, params),
        "moved": moved,
    }


def _rank_run(batch: int, steps: int = 6) -> dict[str, Any] | str:
    try:
        return _data_parallel_run(dist_info(), batch, steps)
    except ConfigError as err:
        return str(err)


@pytest.mark.distributed
def test_muon_dp2_with_half_batches_matches_dp1():
    """Both replicas orthogonalise the same all-reduced gradient: their weights stay equal to
    each other and to one process stepping on the whole batch."""
    with single_process(seed=0) as info:
        want = _data_parallel_run(info, batch=8)
    ranks = run_ranks(_rank_run, world_size=2, batch=4)
    for name, value in want["params"].items():
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
        assert torch.allclose(ranks[0]["params"][name], value, rtol=1e-9, atol=1e-10), name
    assert ranks[0]["moved"] > 1e-3  # the Muon steps did move its matrices


@pytest.mark.distributed
def test_muon_refuses_tensor_parallel_shards():
    errors = run_ranks(_rank_run, world_size=2, parallel=ParallelConfig(tensor=2), batch=8, steps=1)
    for err in errors:
        assert isinstance(err, str) and "tensor_parallel > 1" in err, err

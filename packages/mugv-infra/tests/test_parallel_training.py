"""Parallelism is exact: TP=2 == TP=1 and DP=2 (half batch each) == DP=1, on Megatron layers;
a checkpoint saved at TP=2 loads at TP=1, and one saved by a single process loads at TP=2;
data-parallel replicas draw different noise, the tensor-parallel ranks of one replica the
same."""

import functools
import random

import numpy as np
import pytest
import torch
from _infra_models import (
    TinyRegressor,
    regression_batches,
    regression_data,
    regression_step,
    tiny_config,
)
from safetensors.torch import load_file

from mugv.infra import (
    ParallelConfig,
    ShuffledBatches,
    Trainer,
    TrainerConfig,
    manual_seed,
    single_process,
)
from mugv.infra.checkpoint import gather_full
from mugv.infra.parallel import DistInfo, dist_info
from mugv.infra.spawn import run_ranks

STEPS = 10


def _train(info: DistInfo, *, batch: int, noise: float, ckpt: str | None = None) -> dict:
    """10 steps of the tiny Megatron model; per-step loss, grad norm and full (gathered) grads."""
    model = TinyRegressor(tiny_config())
    data = regression_batches(80, batch, info)
    config = TrainerConfig(
        steps=STEPS,
        micro_batches=2,
        lr=5e-3,
        warmup_steps=2,
        grad_clip=0.5,  # active: the norm must be the global one
        ema_decay=0.8,
        checkpoint_dir=ckpt,
    )
    step_fn = functools.partial(regression_step, noise=noise)
    trainer = Trainer(model, step_fn, data, config, info=info)
    params = dict(model.named_parameters())
    record = {"loss": [], "grad_norm": [], "grads": []}

    def on_step(out):
        record["loss"].append(out.loss.item())
        record["grad_norm"].append(out.grad_norm.item())
        record["grads"].append(gather_full({n: p.grad for n, p in params.items()}, params))

    trainer.fit(on_step)
    record["params"] = gather_full({n: p.detach() for n, p in params.items()}, params)
    record["ema"] = gather_full(trainer.ema.shadow, params)
    opt, like = trainer.sync.optimizer_tensors()
    record["exp_avg"] = gather_full(opt, like)
    if ckpt is not None:
        trainer.export(f"{ckpt}/export")  # collective: TP shards gathered, rank 0 writes
    return record


def _rank_train(**kwargs):
    return _train(dist_info(), **kwargs)


def _close(a, b, rtol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, rtol=rtol, atol=rtol * b.abs().max().item())


def _close_params(a, b):
    """Weights after 10 AdamW steps: Adam rescales the key-bias gradients, which are exactly
    zero in exact arithmetic (softmax ignores a shift shared by all keys) and so pure rounding
    noise, to steps of size ~lr; hence an absolute floor well under lr=5e-3."""
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def _resumable(info: DistInfo, ckpt: str) -> tuple[TinyRegressor, Trainer]:
    """A fresh tiny model and a Trainer on ``ckpt``, ready to `resume()` a `_train` run."""
    model = TinyRegressor(tiny_config())
    x, y = regression_data(80)
    data = ShuffledBatches(80, 8, lambda idx: (x[idx], y[idx]))
    config = TrainerConfig(steps=STEPS, ema_decay=0.8, checkpoint_dir=ckpt)
    return model, Trainer(model, regression_step, data, config, info=info)


@pytest.fixture(scope="module")
def reference():
    with single_process(seed=0) as info:
        return _train(info, batch=8, noise=0.0)


@pytest.mark.distributed
def test_tp2_matches_tp1_and_checkpoint_loads_at_tp1(reference, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    ranks = run_ranks(
        _rank_train, world_size=2, parallel=ParallelConfig(tensor=2), batch=8, noise=0.0, ckpt=ckpt
    )
    tp2 = ranks[0]
    assert _close(tp2["loss"], reference["loss"])
    assert _close(tp2["grad_norm"], reference["grad_norm"])
    for step in range(STEPS):
        for name, grad in reference["grads"][step].items():
            assert _close(tp2["grads"][step][name], grad), f"step {step + 1} grad {name}"
    for name, value in reference["params"].items():
        assert _close_params(tp2["params"][name], value), name

    exported = load_file(f"{ckpt}/export/model.safetensors")  # full EMA weights from TP=2
    for name, value in tp2["ema"].items():
        assert torch.equal(exported[name], value), name

    # The TP=2 checkpoint resumes in a TP=1 process: the same global tensors come back.
    with single_process(seed=1) as info:
        model, trainer = _resumable(info, ckpt)
        assert trainer.resume() == STEPS
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), tp2["params"][name]), name
            assert torch.equal(trainer.ema.shadow[name], tp2["ema"][name]), name
        opt, _ = trainer.sync.optimizer_tensors()
        for name, value in tp2["exp_avg"].items():
            assert torch.equal(opt[name], value), name


def _rank_resume(ckpt: str) -> dict:
    model, trainer = _resumable(dist_info(), ckpt)
    params = dict(model.named_parameters())
    return {"step": trainer.resume(), "params": gather_full(params, params)}


@pytest.mark.distributed
def test_single_process_checkpoint_loads_at_tp2(reference, tmp_path):
    """A lone process saves without DCP's collectives; the files are the same kind."""
    ckpt = str(tmp_path / "ckpt")
    with single_process(seed=0) as info:
        alone = _train(info, batch=8, noise=0.0, ckpt=ckpt)
    tp2 = run_ranks(_rank_resume, world_size=2, parallel=ParallelConfig(tensor=2), ckpt=ckpt)
    for rank in tp2:
        assert rank["step"] == STEPS
        for name, value in alone["params"].items():
            assert torch.equal(rank["params"][name], value), name


@pytest.mark.distributed
def test_dp2_with_half_batches_matches_dp1(reference):
    ranks = run_ranks(_rank_train, world_size=2, batch=4, noise=0.0)
    mean_loss = [(a + b) / 2 for a, b in zip(ranks[0]["loss"], ranks[1]["loss"])]
    assert _close(mean_loss, reference["loss"])
    assert _close(ranks[0]["grad_norm"], reference["grad_norm"])
    for rank in ranks:
        for name, value in reference["params"].items():
            assert _close_params(rank["params"][name], value), name
    for name in reference["params"]:  # replicas stay identical
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name])


def _drawing_step(model, batch):
    """The regression loss plus one draw of each default generator (torch, Python, NumPy),
    reported as metrics: a step function may draw its noise from any of them."""
    draws = {"draw": float(torch.rand(())), "py": random.random(), "np": float(np.random.rand())}
    return regression_step(model, batch), draws


def _draws(info: DistInfo, steps: int, ckpt: str | None = None) -> list[tuple[float, ...]]:
    manual_seed(0)  # every run builds the same model from the same shared stream
    model = TinyRegressor(tiny_config())
    x, y = regression_data(80)
    data = ShuffledBatches(
        80, 4, lambda idx: (x[idx], y[idx]), data_rank=info.data_rank, data_size=info.data_size
    )
    config = TrainerConfig(steps=steps, checkpoint_dir=ckpt, checkpoint_every=2 if ckpt else 0)
    trainer = Trainer(model, _drawing_step, data, config, info=info)
    draws = []
    trainer.fit(lambda out: draws.append(tuple(out.metrics[k] for k in ("draw", "py", "np"))))
    return draws


def _rank_draws(ckpt: str) -> dict:
    info = dist_info()
    whole = _draws(info, 4)
    _draws(info, 2, ckpt)  # stops after step 2 with a checkpoint
    resumed = _draws(info, 4, ckpt)  # steps 3 and 4 from it
    return {"whole": whole, "resumed": resumed}


@pytest.mark.distributed
@pytest.mark.parametrize("layout", ["data", "tensor"])
def test_replicas_draw_apart_and_model_parallel_ranks_alike(layout, tmp_path):
    parallel = ParallelConfig(tensor=2) if layout == "tensor" else ParallelConfig()
    ranks = run_ranks(_rank_draws, world_size=2, parallel=parallel, ckpt=str(tmp_path / "ckpt"))
    first, second = (r["whole"] for r in ranks)
    if layout == "data":  # two replicas: their noise must differ at every step, every generator
        assert all(x != y for a, b in zip(first, second) for x, y in zip(a, b))
    else:  # one replica split over TP: both ranks must see the same noise
        assert first == second
    for rank in ranks:  # the forked streams are checkpointed: resume is bitwise
        assert rank["resumed"] == rank["whole"][2:]

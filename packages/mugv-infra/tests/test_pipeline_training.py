"""Pipeline parallelism is exact: PP=2 (Megatron-Core's 1F1B schedule over gloo p2p, 4
micro-batches per step) matches PP=1 in loss, metrics, grad norm and weights; a PP=2
checkpoint loads at PP=1; the export holds every stage's weights."""

import pytest
import torch
from _infra_models import (
    TinyRegressor,
    init_by_name,
    noisy_regression_step,
    regression_data,
    tiny_config,
)
from megatron.core import parallel_state
from safetensors.torch import load_file

from mugv.infra import (
    ConfigError,
    ParallelConfig,
    ShuffledBatches,
    Trainer,
    TrainerConfig,
    manual_seed,
    single_process,
)
from mugv.infra.parallel import DistInfo, dist_info
from mugv.infra.pipeline import global_names
from mugv.infra.spawn import run_ranks

STEPS = 4


def _config(ckpt: str | None) -> TrainerConfig:
    return TrainerConfig(
        steps=STEPS,
        micro_batches=4,  # 1F1B warm-up, steady state and cool-down on the first stage
        lr=5e-3,
        warmup_steps=1,
        grad_clip=0.5,  # active: the norm must be the one over both stages
        ema_decay=0.8,
        checkpoint_dir=ckpt,
    )


def _train(info: DistInfo, ckpt: str | None = None) -> dict:
    model = TinyRegressor(tiny_config())
    names = global_names(model)
    init_by_name(model, names)
    # Stages draw differently: the Trainer must hand every stage the first stage's stream.
    manual_seed(7 + parallel_state.get_pipeline_model_parallel_rank())
    x, y = regression_data(64)
    data = ShuffledBatches(64, 4, lambda idx: (x[idx], y[idx]), seed=3)
    trainer = Trainer(model, noisy_regression_step, data, _config(ckpt), info=info)
    record = {"loss": [], "grad_norm": [], "metrics": []}

    def on_step(out):
        record["loss"].append(out.loss.item())
        record["grad_norm"].append(out.grad_norm.item())
        record["metrics"].append(out.metrics["target_mean"])

    trainer.fit(on_step)
    record["params"] = {names[n]: p.detach().clone() for n, p in model.named_parameters()}
    record["ema"] = {names[n]: v.clone() for n, v in trainer.ema.shadow.items()}
    opt, _ = trainer.sync.optimizer_tensors()
    record["exp_avg"] = {k: v.clone() for k, v in opt.items()}
    if ckpt is not None:
        trainer.export(f"{ckpt}/export")  # collective: stages gathered, rank 0 writes
    return record


def _rank_train(ckpt: str) -> dict:
    info = dist_info()
    try:
        Trainer(torch.nn.Linear(2, 2), noisy_regression_step, [], _config(None), info=info)
        refused = None
    except ConfigError as err:
        refused = str(err)
    return {"refused": refused, **_train(info, ckpt)}


def _key_bias(name: str, value: torch.Tensor) -> torch.Tensor:
    """Mask of the key entries of a fused QKV bias. Their gradient is exactly zero in exact
    arithmetic (softmax ignores a shift shared by all keys), so what the stages compute there is
    rounding noise, which Adam scales up to steps of ~lr: they are compared by that bound."""
    free = torch.zeros_like(value, dtype=torch.bool)
    if name.endswith("linear_qkv.bias"):
        per_head = free.view(4, 3, -1)  # (heads, q/k/v, head dim): Megatron's fused layout
        per_head[:, 1] = True
    return free


def _close(a, b, rtol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, rtol=rtol, atol=rtol * b.abs().max().item())


@pytest.mark.distributed
def test_pp2_matches_pp1_and_checkpoint_loads_at_pp1(tmp_path):
    with single_process(seed=0) as info:
        reference = _train(info)
    ckpt = str(tmp_path / "ckpt")
    ranks = run_ranks(_rank_train, world_size=2, parallel=ParallelConfig(pipeline=2), ckpt=ckpt)

    assert all(
        r["refused"].startswith("ParallelConfig.pipeline > 1 needs a Megatron") for r in ranks
    )
    for rank in ranks:  # the last stage's loss and metrics reach every stage
        assert _close(rank["loss"], reference["loss"])
        assert _close(rank["metrics"], reference["metrics"])
        assert _close(rank["grad_norm"], reference["grad_norm"])
    first, last = ranks[0]["params"], ranks[1]["params"]
    assert "embed.weight" in first and "head.weight" in last
    assert "block.layers.1.mlp.linear_fc1.weight" in last  # whole-model layer numbers
    assert not set(first) & set(last)
    pp2 = {**first, **last}
    assert set(pp2) == set(reference["params"])
    for name, value in reference["params"].items():
        free = _key_bias(name, value)
        assert torch.allclose(pp2[name][~free], value[~free], rtol=1e-5, atol=1e-5), name
        # Adam moves each entry by at most ~lr per step, noise or not.
        assert torch.all((pp2[name][free] - value[free]).abs() <= 2 * 5e-3 * STEPS), name

    exported = load_file(f"{ckpt}/export/model.safetensors")  # EMA weights of both stages
    ema = {**ranks[0]["ema"], **ranks[1]["ema"]}
    assert set(exported) >= set(ema)
    for name, value in ema.items():
        assert torch.equal(exported[name], value), name

    # The PP=2 checkpoint resumes in a PP=1 process: the same whole-model tensors come back.
    exp_avg = {**ranks[0]["exp_avg"], **ranks[1]["exp_avg"]}
    with single_process(seed=1) as info:
        model = TinyRegressor(tiny_config())
        x, y = regression_data(64)
        data = ShuffledBatches(64, 4, lambda idx: (x[idx], y[idx]))
        trainer = Trainer(model, noisy_regression_step, data, _config(ckpt), info=info)
        assert trainer.resume() == STEPS
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), pp2[name]), name
            assert torch.equal(trainer.ema.shadow[name], ema[name]), name
        opt, _ = trainer.sync.optimizer_tensors()
        assert set(opt) == set(exp_avg)
        for name, value in exp_avg.items():
            assert torch.equal(opt[name], value), name

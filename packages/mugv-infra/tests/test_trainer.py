import itertools
import json
import math
import re

import pytest
import torch
from _infra_models import TinyRegressor, regression_data, regression_step, tiny_config
from safetensors.torch import load_file

from mugv.infra import (
    EMA,
    PEAK_BF16_FLOPS,
    CheckpointError,
    ConfigError,
    DistributedError,
    ShuffledBatches,
    ThroughputMeter,
    Trainer,
    TrainerConfig,
    complete_checkpoints,
    fast_bf16,
    latest_checkpoint,
    lr_at,
    meter,
    peak_flops,
    single_process,
)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"micro_batches": 0}, "micro_batches"),
        ({"lr": 0.0}, "lr"),
        ({"min_lr": 1.0}, "min_lr"),
        ({"warmup_steps": 20}, "warmup_steps"),
        ({"schedule": "linear"}, "schedule"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"grad_clip": 0.0}, "grad_clip"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"precision": "fp16"}, "precision"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"checkpoint_every": 5}, "checkpoint_every"),  # without checkpoint_dir
        ({"async_checkpoint": True}, "async_checkpoint"),  # without checkpoint_dir
        ({"keep_last": 0, "checkpoint_dir": "x"}, "keep_last"),
        ({"log_every": 0}, "log_every"),
    ],
)
def test_trainer_config_rule(kwargs, field):
    with pytest.raises(ConfigError, match=rf"^TrainerConfig\.{field}=") as err:
        TrainerConfig(**{"steps": 10, **kwargs})
    assert "\n" not in str(err.value)


def test_lr_schedules():
    kw = {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 4, "total_steps": 14}
    cos = [lr_at(s, schedule="cosine", **kw) for s in range(14)]
    assert cos[:4] == [0.25, 0.5, 0.75, 1.0]
    assert cos[4] == 1.0 and math.isclose(cos[9], 0.55)  # half way down the cosine
    assert all(a >= b for a, b in itertools.pairwise(cos[3:]))
    assert math.isclose(lr_at(14, schedule="cosine", **kw), 0.1)
    assert [lr_at(s, schedule="constant", **kw) for s in (3, 8, 13)] == [1.0, 1.0, 1.0]
    noam = [lr_at(s, schedule="inverse_sqrt", **kw) for s in (3, 4, 15)]
    assert noam == [1.0, math.sqrt(4 / 5), 0.5]  # peak lr at the end of warm-up, then 1/sqrt


def test_ema_matches_the_recurrence():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9)
    expected = model.weight.detach().clone()
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update()
        expected = 0.9 * expected + 0.1 * model.weight.detach()
    torch.testing.assert_close(ema.shadow["weight"], expected)
    target = torch.nn.Linear(3, 2)
    ema.copy_to(target)
    torch.testing.assert_close(target.weight, expected)
    with pytest.raises(ConfigError, match="decay"):
        EMA(model, decay=1.5)


def test_shuffled_batches_split_and_resume():
    fetch = list
    whole = ShuffledBatches(12, 4, fetch, seed=1)
    halves = [ShuffledBatches(12, 2, fetch, seed=1, data_rank=r, data_size=2) for r in (0, 1)]
    for a, b, c in zip(whole, *halves):
        assert a == b + c  # DP ranks split each global batch
    assert whole.state_dict() == {"epoch": 1, "index": 0}  # zip drained the epoch
    it = iter(whole)  # second epoch: reshuffled
    first = next(it)
    state = whole.state_dict()
    rest = list(it)
    again = ShuffledBatches(12, 4, fetch, seed=1)
    again.load_state_dict(state)
    assert list(again) == rest and first not in rest
    with pytest.raises(ConfigError, match="batch_size"):
        ShuffledBatches(4, 3, fetch, data_size=2)


def test_meter_reports_mfu_and_hfu_apart():
    assert peak_flops(torch.device("cpu")) is None
    assert PEAK_BF16_FLOPS["H100"] == 989.4e12
    meter = ThroughputMeter(data_size=2, model_size=4, device=torch.device("cpu"), recompute=True)
    meter.update(samples=8, forward_flops=4e12, seconds=2.0)
    report = meter.report()
    assert report["samples_per_s"] == 8.0  # 2 replicas x 8 samples / 2 s
    assert report["flops_per_s"] == 3 * 4e12 / 4 / 2.0  # per device, fwd + bwd
    assert "mfu" not in report  # CPU: FLOP/s only
    meter.peak = 1e12  # a known GPU: HFU adds the recomputed forward
    report = meter.report()
    assert report["mfu"] == 1.5 and report["hfu"] == 2.0


def test_fast_bf16_follows_the_hardware():
    assert fast_bf16("cuda") and fast_bf16(torch.device("cuda", 1))  # no GPU needed to ask
    assert not fast_bf16("meta")
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        pytest.skip("no /proc/cpuinfo to read the CPU flags from")
    if " amx_tile" in flags:
        assert fast_bf16("cpu")
    elif " avx512_bf16" not in flags:
        assert not fast_bf16("cpu")


@pytest.mark.parametrize(
    "amx, avx512_bf16, speedup, fast",
    [
        (True, True, 0.5, True),  # AMX: no measurement needed
        (False, True, 2.4, True),  # AVX512-BF16 that pays (Zen 4)
        (False, True, 1.1, False),  # AVX512-BF16 near parity: stay in fp32
        (False, False, 9.9, False),  # no bf16 instructions: never measured
    ],
)
def test_fast_bf16_measures_avx512_bf16_cpus(monkeypatch, amx, avx512_bf16, speedup, fast):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(meter, "_bf16_gemm_speedup", lambda: speedup)
    meter._cpu_bf16.cache_clear()
    try:
        assert fast_bf16("cpu") is fast
    finally:
        meter._cpu_bf16.cache_clear()


def test_bf16_gemm_speedup_is_a_timing_ratio():
    ratio = meter._bf16_gemm_speedup(rounds=1, repeats=1)
    assert math.isfinite(ratio) and ratio > 0


def _mlp_run(tmp_path, *, compile: bool, steps: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    x = torch.randn(64, 8)
    y = torch.sin(x)
    losses = []
    with single_process(seed=0) as info:
        trainer = Trainer(
            model,
            lambda m, batch: (m(batch[0]) - batch[1]).square().mean(),
            ShuffledBatches(64, 16, lambda idx: (x[idx], y[idx])),
            TrainerConfig(
                steps=steps, lr=1e-2, compile=compile, checkpoint_dir=str(tmp_path), ema_decay=0.9
            ),
            info=info,
        )
        trainer.fit(lambda out: losses.append(out.loss.item()))
    return model, losses


def test_compiled_training_equals_eager_and_resumes_eager(tmp_path):
    _, eager = _mlp_run(tmp_path / "eager", compile=False, steps=6)
    compiled_model, compiled = _mlp_run(tmp_path / "compiled", compile=True, steps=6)
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-7)
    # the in-place compile keeps parameter names: its checkpoint resumes an eager run
    names = {k for k, _ in compiled_model.named_parameters()}
    assert names == {"0.weight", "0.bias", "2.weight", "2.bias"}
    _, resumed = _mlp_run(tmp_path / "compiled", compile=False, steps=8)
    _, straight = _mlp_run(tmp_path / "eager", compile=False, steps=8)
    assert resumed == pytest.approx(straight, rel=1e-5, abs=1e-7)


def _trainer(info, tmp_path, **overrides):
    model = TinyRegressor(tiny_config())
    x, y = regression_data(32)
    data = ShuffledBatches(32, 8, lambda idx: (x[idx], y[idx]))
    config = TrainerConfig(
        **{"steps": 6, "lr": 1e-2, "ema_decay": 0.5, "checkpoint_dir": str(tmp_path), **overrides}
    )
    return Trainer(model, regression_step, data, config, info=info, model_config={"width": 32})


def test_fit_lowers_the_loss_keeps_last_n_and_exports(tmp_path):
    losses = []
    with single_process(seed=0) as info:
        trainer = _trainer(info, tmp_path / "ckpt", steps=12, checkpoint_every=2, keep_last=2)
        trainer.fit(lambda out: losses.append(out.loss.item()))
        path = trainer.export(tmp_path / "export")
        shadow = {k: v.clone() for k, v in trainer.ema.shadow.items()}
    assert losses[-1] < 0.7 * losses[0]
    assert [s for s, _ in complete_checkpoints(tmp_path / "ckpt")] == [10, 12]
    weights = load_file(path)
    assert all(torch.equal(weights[k], v) for k, v in shadow.items())  # EMA weights exported
    assert json.loads((tmp_path / "export" / "config.json").read_text()) == {"width": 32}


def test_partial_checkpoint_is_never_latest(tmp_path):
    with single_process(seed=0) as info:
        trainer = _trainer(info, tmp_path, steps=2, checkpoint_every=1)
        trainer.fit()
        (tmp_path / "step_00000003.partial").mkdir()  # a crash mid-save
        (tmp_path / "step_00000004").mkdir()  # renamed but no meta.json: not ours
        assert latest_checkpoint(tmp_path).name == "step_00000002"
        with pytest.raises(CheckpointError, match="not a complete checkpoint"):
            trainer.checkpoints.load(tmp_path / "step_00000004", {}, {})


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    with single_process(seed=0) as info:
        _trainer(info, tmp_path, steps=1).fit()
    with single_process(seed=0) as info:
        model = TinyRegressor(tiny_config(hidden_size=64))
        x, y = regression_data(16)
        trainer = Trainer(
            model,
            regression_step,
            ShuffledBatches(16, 8, lambda idx: (x[idx], y[idx])),
            TrainerConfig(steps=2, checkpoint_dir=str(tmp_path)),
            info=info,
        )
        with pytest.raises(CheckpointError, match="could not load"):
            trainer.resume()


class _Recomputing(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)
        self.recompute = None

    def set_activation_recompute(self, flag: bool) -> None:
        self.recompute = flag

    def forward(self, x):
        if self.recompute:
            return torch.utils.checkpoint.checkpoint(self.linear, x, use_reentrant=False)
        return self.linear(x)


def test_recompute_switch_reaches_the_model():
    data = [torch.randn(2, 4)] * 3
    with single_process(seed=0) as info:
        model = _Recomputing()
        trainer = Trainer(
            model,
            lambda m, b: m(b).square().mean(),
            data,
            TrainerConfig(steps=2, recompute=True),
            info=info,
        )
        assert model.recompute is True
        assert trainer.fit() == 2
        with pytest.raises(ConfigError, match=r"TrainerConfig\.recompute=True"):
            Trainer(
                torch.nn.Linear(4, 1), None, data, TrainerConfig(steps=1, recompute=True), info=info
            )


def test_progress_line_and_tensorboard_scalars(tmp_path, caplog):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    with single_process(seed=0) as info, caplog.at_level("INFO", logger="mugv.infra.trainer"):
        model = TinyRegressor(tiny_config())
        x, y = regression_data(32)
        config = TrainerConfig(steps=4, log_every=2, tensorboard_dir=str(tmp_path / "tb"))
        Trainer(
            model,
            regression_step,
            ShuffledBatches(32, 8, lambda idx: (x[idx], y[idx])),
            config,
            info=info,
            forward_flops=lambda batch: 2.0e9 * batch[0].shape[0],
        ).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(lines) == 2
    assert re.fullmatch(
        r"step 4/4 \| loss \d+\.\d{4} \| lr \S+ \| grad \d+\.\d{3} \| \d+\.\d samples/s"
        r" \| [\d.]+ [MGTP]FLOP/s/device \| ETA \d\d:\d\d:\d\d",
        lines[-1],
    ), lines[-1]
    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/flops_per_s"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]


def test_trainer_without_process_groups_says_what_to_call():
    with pytest.raises(DistributedError, match="init_distributed"):
        Trainer(torch.nn.Linear(2, 2), None, [], TrainerConfig(steps=1), info=None)

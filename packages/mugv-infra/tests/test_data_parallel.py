"""The data-parallel layer: which implementation runs where, and the pieces of the pipeline
path that need no second rank. The Megatron DDP + distributed-optimizer path itself needs CUDA:
its equivalence with the plain path is checked by the `gpu` tests at the end."""

import contextlib

import pytest
import torch
from _infra_models import TinyRegressor, regression_data, regression_step, tiny_config

from mugv.infra import (
    ConfigError,
    ParallelConfig,
    ShuffledBatches,
    TorchDataParallel,
    Trainer,
    TrainerConfig,
    destroy_distributed,
    init_distributed,
    manual_seed,
    single_process,
)
from mugv.infra.data_parallel import make_data_parallel
from mugv.infra.pipeline import _cuda_factories_on_cpu, global_names

ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, grad_clip=1.0)


def test_auto_picks_plain_pytorch_on_cpu():
    with single_process():
        model = TinyRegressor(tiny_config())
        assert isinstance(make_data_parallel(model, "auto", **ADAMW), TorchDataParallel)
        assert isinstance(make_data_parallel(model, "torch", **ADAMW), TorchDataParallel)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_forcing_megatron_without_cuda_says_why():
    with single_process() as info:
        model = TinyRegressor(tiny_config())
        with pytest.raises(ConfigError, match="data_parallel='megatron' needs CUDA"):
            make_data_parallel(model, "megatron", **ADAMW)
        config = TrainerConfig(steps=1, data_parallel="megatron")
        with pytest.raises(ConfigError, match="needs CUDA"):
            Trainer(model, regression_step, [regression_data(8)], config, info=info)


def test_data_parallel_field_is_validated():
    with pytest.raises(ConfigError, match=r"TrainerConfig.data_parallel='ddp'"):
        TrainerConfig(steps=1, data_parallel="ddp")


def test_cuda_factories_land_on_cpu_inside_the_shim_only():
    with _cuda_factories_on_cpu():
        counter = torch.zeros([], dtype=torch.int, device="cuda")  # as Megatron's schedules do
        buffer = torch.empty((2, 3), device=torch.device("cuda", 0))
    assert counter.device.type == "cpu" and buffer.shape == (2, 3)
    if not torch.cuda.is_available():
        with pytest.raises((AssertionError, RuntimeError)):
            torch.zeros(1, device="cuda")


def test_global_names_renumber_stage_layers():
    class Layer(torch.nn.Module):
        def __init__(self, number):
            super().__init__()
            self.layer_number = number
            self.proj = torch.nn.Linear(2, 2)

    class Stage(torch.nn.Module):  # the second of two stages of a 4-layer model
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([Layer(3), Layer(4)])
            self.head = torch.nn.Linear(2, 1)

    names = global_names(Stage())
    assert names["layers.0.proj.weight"] == "layers.2.proj.weight"
    assert names["layers.1.proj.bias"] == "layers.3.proj.bias"
    assert names["head.weight"] == "head.weight"
    with single_process():  # one stage: Megatron's numbering is the local one
        model = TinyRegressor(tiny_config())
        assert all(k == v for k, v in global_names(model).items())


# -- GPU: Megatron-Core DDP + distributed optimizer against the plain path -------------------


@contextlib.contextmanager
def _one_gpu():
    info = init_distributed(ParallelConfig())  # NCCL, world of one
    try:
        manual_seed(0)
        yield info
    finally:
        destroy_distributed()


def _gpu_run(kind: str, ckpt: str | None = None, steps: int = 5) -> dict:
    with _one_gpu() as info:
        model = TinyRegressor(tiny_config()).cuda()
        x, y = regression_data(64)
        data = ShuffledBatches(64, 8, lambda idx: (x[idx], y[idx]), seed=3)
        config = TrainerConfig(
            steps=steps,
            micro_batches=2,
            lr=5e-3,
            grad_clip=0.5,
            ema_decay=0.8,
            precision="fp32",
            data_parallel=kind,
            checkpoint_dir=ckpt,
        )
        trainer = Trainer(model, regression_step, data, config, info=info)
        losses, norms = [], []
        trainer.fit(
            lambda out: (losses.append(out.loss.item()), norms.append(out.grad_norm.item()))
        )
        trainer.sync.sync_params()
        opt, _ = trainer.sync.optimizer_tensors()
        return {
            "kind": type(trainer.sync).__name__,
            "loss": losses,
            "grad_norm": norms,
            "params": {n: p.detach().cpu().clone() for n, p in model.named_parameters()},
            "opt": {k: v.detach().cpu().clone() for k, v in opt.items()},
        }


@pytest.mark.gpu
def test_megatron_ddp_and_distributed_optimizer_match_the_plain_path():
    plain = _gpu_run("torch")
    megatron = _gpu_run("auto")  # auto on CUDA with a Megatron model: the Megatron path
    assert plain["kind"] == "TorchDataParallel" and megatron["kind"] == "MegatronDataParallel"
    assert torch.allclose(torch.tensor(megatron["loss"]), torch.tensor(plain["loss"]), rtol=1e-4)
    norms = torch.tensor(megatron["grad_norm"]), torch.tensor(plain["grad_norm"])
    assert torch.allclose(*norms, rtol=1e-4)
    for name, value in plain["params"].items():
        assert torch.allclose(megatron["params"][name], value, rtol=1e-4, atol=1e-4), name
    for name, value in plain["opt"].items():  # same names, same full-tensor layout
        assert torch.allclose(megatron["opt"][name], value, rtol=1e-3, atol=1e-6), name


@pytest.mark.gpu
def test_megatron_checkpoint_resumes_on_the_plain_path(tmp_path):
    ckpt = str(tmp_path / "ckpt")
    saved = _gpu_run("megatron", ckpt=ckpt)
    with single_process(seed=1) as info:  # CPU, gloo, plain PyTorch
        model = TinyRegressor(tiny_config())
        config = TrainerConfig(steps=5, ema_decay=0.8, checkpoint_dir=ckpt)
        trainer = Trainer(model, regression_step, [], config, info=info)
        assert trainer.resume() == 5
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), saved["params"][name]), name
        opt, _ = trainer.sync.optimizer_tensors()
        for name, value in saved["opt"].items():
            assert torch.equal(opt[name], value), name
    resumed = _gpu_run("megatron", ckpt=ckpt, steps=7)  # and continues on the GPU path
    assert len(resumed["loss"]) == 2

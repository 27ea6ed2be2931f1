"""One train loop for every model in the stack (VAE, DiT, captioner, retrieval).

The model side provides `step_fn(model, batch) -> loss` (or `(loss, {name: float})`) and,
optionally, `forward_flops(batch) -> float` for MFU. Data is any iterable of batch-first
micro-batches; if it has `state_dict()`/`load_state_dict()` its position is checkpointed.
Everything else (accumulation, precision, clipping, schedule, AdamW, EMA, DP sync,
pipeline schedule, checkpoints, resume, signals, logging) lives here, in one code path for 1
CPU process or many GPUs: the data-parallel layer (`make_data_parallel`: plain PyTorch, or
Megatron-Core DDP + distributed optimizer on CUDA) and, at `pipeline > 1`, Megatron-Core's
1F1B schedule (`PipelineSchedule`) sit behind small interfaces.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn

from mugv.infra._errors import ConfigError, DistributedError
from mugv.infra._rng import fork_data_parallel_rng, get_rng_state, set_rng_state
from mugv.infra.checkpoint import CheckpointManager, export_safetensors, latest_checkpoint
from mugv.infra.data_parallel import make_data_parallel
from mugv.infra.ema import EMA
from mugv.infra.meter import ThroughputMeter
from mugv.infra.muon import DEFAULT_MUON_PARAMS
from mugv.infra.parallel import DistInfo
from mugv.infra.pipeline import PipelineSchedule, global_names
from mugv.infra.schedule import lr_at

logger = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Optimisation, precision, checkpoint and logging settings of a run."""

    steps: int
    micro_batches: int = 1
    lr: float = 1e-4
    min_lr: float = 0.0
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant", "inverse_sqrt"] = "cosine"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    recompute: bool = False
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # torch.compile the model in place before the first step (`model.compile(dynamic=False)`:
    # `nn.Module.compile`, or the model's own, as `MUGDiT.compile` compiles each block):
    # inductor fuses the elementwise work between the matrix products, which dominates a small
    # model's step once those run in bf16 (a tiny MUGDiT's forward and backward on CPU: 1.4x in
    # fp32, 2x with bf16 on AMX). Each new input shape or call signature compiles once (20-80 s
    # on two cores): keep them few (`mugv.dit.train_dit` pads text to a fixed length and calls
    # the model the same way on every batch).
    compile: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_last: int = 3
    async_checkpoint: bool = False
    log_every: int = 10
    tensorboard_dir: str | None = None
    data_parallel: Literal["auto", "torch", "megatron"] = "auto"
    # "muon": the 2-D `*.weight` matrices whose names match the regex `muon_params` (a
    # model's hidden layers) step with Muon (`mugv.infra.muon`, `muon_ns_steps` Newton-Schulz
    # iterations, on AdamW's lr scale); everything else with AdamW. Plain-PyTorch data
    # parallelism only (data_parallel="torch", or "auto" on CPU), tensor_parallel=1.
    optimizer: Literal["adamw", "muon"] = "adamw"
    muon_params: str = DEFAULT_MUON_PARAMS
    muon_ns_steps: int = 5

    def __post_init__(self) -> None:
        def bad(field: str, fix: str) -> ConfigError:
            return ConfigError(f"TrainerConfig.{field}={getattr(self, field)!r}: {fix}")

        if self.steps < 1:
            raise bad("steps", "train at least 1 step")
        if self.micro_batches < 1:
            raise bad("micro_batches", "use >= 1 micro-batch per step")
        if self.lr <= 0:
            raise bad("lr", "use a positive learning rate")
        if not 0 <= self.min_lr <= self.lr:
            raise bad("min_lr", f"use 0 <= min_lr <= lr={self.lr}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise bad("warmup_steps", f"use 0 <= warmup_steps <= steps={self.steps}")
        if self.schedule not in ("cosine", "constant", "inverse_sqrt"):
            raise bad("schedule", "use 'cosine', 'constant' or 'inverse_sqrt'")
        if self.weight_decay < 0:
            raise bad("weight_decay", "use a non-negative weight decay")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise bad("betas", "use two values in [0, 1), e.g. (0.9, 0.999)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise bad("grad_clip", "use a positive max norm, or None to disable clipping")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise bad("ema_decay", "use a decay in (0, 1) such as 0.9999, or None")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise bad("precision", "use 'auto' (bf16 on GPU, fp32 on CPU), 'bf16' or 'fp32'")
        if self.checkpoint_every < 0:
            raise bad("checkpoint_every", "use 0 (only at the end and on signals) or a period")
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise bad("checkpoint_every", "set checkpoint_dir too, or checkpoint_every=0")
        if self.async_checkpoint and self.checkpoint_dir is None:
            raise bad("async_checkpoint", "set checkpoint_dir too")
        if self.keep_last < 1:
            raise bad("keep_last", "keep at least 1 checkpoint")
        if self.log_every < 1:
            raise bad("log_every", "log every >= 1 steps")
        if self.optimizer not in ("adamw", "muon"):
            raise bad("optimizer", "use 'adamw' or 'muon'")
        if self.optimizer == "muon" and self.data_parallel == "megatron":
            raise bad(
                "optimizer",
                "Muon runs on the plain-PyTorch data-parallel path: set data_parallel='torch' "
                "(or 'auto' on CPU), or use optimizer='adamw' with Megatron's distributed optimizer",
            )
        if not 1 <= self.muon_ns_steps <= 20:
            raise bad("muon_ns_steps", "use 1..20 Newton-Schulz iterations (5 is the usual)")
        try:
            re.compile(self.muon_params)
        except re.error as err:
            raise bad("muon_params", f"use a valid regular expression ({err})") from None
        if self.data_parallel not in ("auto", "torch", "megatron"):
            raise bad(
                "data_parallel",
                "use 'auto' (Megatron DDP + distributed optimizer on CUDA for Megatron models, "
                "plain PyTorch otherwise), 'torch' or 'megatron'",
            )


@dataclasses.dataclass
class StepOutput:
    """What one optimizer step produced; tensors stay on device (no host sync)."""

    step: int
    loss: torch.Tensor
    grad_norm: torch.Tensor
    lr: float
    samples: int
    metrics: dict[str, float]


def batch_size(batch: Any) -> int:
    """Leading dim of the first tensor found in a (nested) batch."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    if isinstance(values, Iterable) and not isinstance(values, str | bytes):
        for value in values:
            with contextlib.suppress(TypeError):
                return batch_size(value)
    raise TypeError(f"cannot find a batch-first tensor in a {type(batch).__name__} batch")


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _si(value: float) -> str:
    for prefix, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {prefix}"
    return f"{value:.0f} "


class Trainer:
    """Trains `model` on `data` with `step_fn`; `fit()` resumes, trains, checkpoints, exits.

    `info` is what `init_distributed`/`single_process` returned. The model must already be on
    `info.device` with its parallel layout (at `pipeline > 1`: this rank's stage, following
    Megatron's stage contract, see `mugv.infra.pipeline`). With `config.recompute`, the model
    must offer `set_activation_recompute(bool)`. At data-parallel size > 1 the constructor
    forks the default generators (torch, Python, NumPy) per replica
    (`fork_data_parallel_rng`): `step_fn`'s random draws differ between replicas and agree
    within one.
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        data: Iterable[Any],
        config: TrainerConfig,
        *,
        info: DistInfo,
        forward_flops: Callable[[Any], float] | None = None,
        model_config: dict[str, Any] | None = None,
    ) -> None:
        from megatron.core import parallel_state

        if not parallel_state.model_parallel_is_initialized():
            raise DistributedError(
                "Trainer needs the process groups: call init_distributed(ParallelConfig(...)) "
                "or enter single_process() before building it"
            )
        if hasattr(model, "set_activation_recompute"):
            model.set_activation_recompute(config.recompute)
        elif config.recompute:
            raise ConfigError(
                f"TrainerConfig.recompute=True but {type(model).__name__} has no "
                "set_activation_recompute(bool): add it to the model or set recompute=False"
            )
        if config.compile:
            model.compile(dynamic=False)
        self.model, self.step_fn, self.data, self.config = model, step_fn, data, config
        self.info, self.forward_flops = info, forward_flops
        self.model_config = model_config or {}
        self.names = global_names(model)  # stage-local -> whole-model names (checkpoints)
        self.pipeline_size = parallel_state.get_pipeline_model_parallel_world_size()
        self.pipeline = PipelineSchedule(model, info.device) if self.pipeline_size > 1 else None
        self.sync = make_data_parallel(
            model,
            config.data_parallel,
            lr=config.lr,
            betas=config.betas,
            eps=config.eps,
            weight_decay=config.weight_decay,
            grad_clip=config.grad_clip,
            names=self.names,
            optimizer=config.optimizer,
            muon_params=config.muon_params,
            muon_ns_steps=config.muon_ns_steps,
        )
        if self.pipeline is not None:
            self.pipeline.config.no_sync_func = self.sync.no_sync
        self.ema = EMA(model, config.ema_decay) if config.ema_decay is not None else None
        use_bf16 = config.precision == "bf16" or (
            config.precision == "auto" and info.device.type == "cuda"
        )
        self._autocast = (
            torch.autocast(info.device.type, dtype=torch.bfloat16)
            if use_bf16
            else contextlib.nullcontext()
        )
        self.step = 0
        self._first_step = 0
        self._flops = 0.0
        self._iter: Iterator[Any] | None = None
        self._resumed = False
        self._stop = False
        self.checkpoints = (
            CheckpointManager(
                config.checkpoint_dir,
                tensor_size=info.tensor_size,
                device=info.device,
                keep_last=config.keep_last,
                async_save=config.async_checkpoint,
            )
            if config.checkpoint_dir
            else None
        )
        self.meter = ThroughputMeter(
            data_size=info.data_size,
            model_size=info.world_size // info.data_size,
            device=info.device,
            recompute=config.recompute,
        )
        if info.data_size > 1:  # replicas draw apart from here on (the model is built)
            fork_data_parallel_rng(info.data_rank)
        self._tb = None
        if config.tensorboard_dir and info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(config.tensorboard_dir)

    # -- one step -----------------------------------------------------------------------------

    def _next_batch(self) -> Any:
        for _ in range(2):
            if self._iter is None:
                self._iter = iter(self.data)
            try:
                batch = next(self._iter)
            except StopIteration:
                self._iter = None  # epoch over: the next iter() starts the next epoch
                continue
            return batch if self.info.device.type == "cpu" else to_device(batch, self.info.device)
        raise ConfigError("the training data yielded no batch: check the dataset is not empty")

    def train_step(self) -> StepOutput:
        """One optimizer step over `micro_batches` micro-batches."""
        cfg = self.config
        lr = lr_at(
            self.step,
            lr=cfg.lr,
            min_lr=cfg.min_lr,
            warmup_steps=cfg.warmup_steps,
            total_steps=cfg.steps,
            schedule=cfg.schedule,
        )
        self.sync.zero_grad()
        counted = {"samples": 0, "flops": 0.0}

        def batches() -> Iterator[Any]:
            for _ in range(cfg.micro_batches):
                batch = self._next_batch()
                counted["samples"] += batch_size(batch)
                if self.forward_flops is not None:
                    counted["flops"] += self.forward_flops(batch)
                yield batch

        if self.pipeline is not None:
            with self._autocast:
                loss, metrics = self.pipeline.run(self.step_fn, batches(), cfg.micro_batches)
        else:
            loss, metrics = self._forward_backward(batches())
        grad_norm = self.sync.step(lr, cfg.grad_clip)
        if self.ema is not None:
            self.sync.sync_params()
            self.ema.update()
        self.step += 1
        self._flops = counted["flops"]
        return StepOutput(self.step, loss, grad_norm, lr, counted["samples"], metrics)

    def _forward_backward(self, batches: Iterator[Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward and backward of each micro-batch (no pipeline); mean loss and metrics."""
        count = self.config.micro_batches
        loss_sum = torch.zeros((), device=self.info.device)
        metrics: dict[str, float] = {}
        for index, batch in enumerate(batches):
            last = index == count - 1
            with self._autocast:
                out = self.step_fn(self.model, batch)
            loss, extra = out if isinstance(out, tuple) else (out, {})
            with contextlib.nullcontext() if last else self.sync.no_sync():
                (loss / count).backward()
            loss_sum += loss.detach().float()
            for key, value in extra.items():
                metrics[key] = metrics.get(key, 0.0) + float(value) / count
        return loss_sum / count, metrics

    # -- the loop -----------------------------------------------------------------------------

    def fit(self, on_step: Callable[[StepOutput], None] | None = None) -> int:
        """Resumes from the latest checkpoint, trains to `config.steps`; returns the last step.

        SIGTERM/SIGINT finish the current step, save a checkpoint and return early.
        """
        cfg = self.config
        self.resume()
        handlers = self._install_signal_handlers()
        try:
            start = time.perf_counter()
            while self.step < cfg.steps:
                t0 = time.perf_counter()
                out = self.train_step()
                if on_step is not None:
                    on_step(out)
                self.meter.update(
                    samples=out.samples, forward_flops=self._flops, seconds=time.perf_counter() - t0
                )
                if out.step % cfg.log_every == 0 or out.step == cfg.steps:
                    self._log(out, time.perf_counter() - start)
                stop = self._stop_requested()
                periodic = cfg.checkpoint_every and out.step % cfg.checkpoint_every == 0
                if self.checkpoints is not None:
                    if stop or periodic or out.step == cfg.steps:
                        self.save()
                    else:
                        self.checkpoints.poll()
                if stop:
                    logger.warning("stop signal: saved at step %d, exiting", self.step)
                    break
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self.checkpoints is not None:
                self.checkpoints.wait()
            if self._tb is not None:
                self._tb.flush()
        return self.step

    def _install_signal_handlers(self) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            self._stop = True

        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, request_stop)
        return previous

    def _stop_requested(self) -> bool:
        """True on every rank as soon as any rank got a signal."""
        if self.info.world_size == 1:
            return self._stop
        flag = torch.tensor([float(self._stop)], device=self.info.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def _log(self, out: StepOutput, elapsed: float) -> None:
        loss = out.loss.clone()
        if self.info.data_size > 1:
            from megatron.core import parallel_state

            dist.all_reduce(loss, group=parallel_state.get_data_parallel_group())
            loss /= self.info.data_size
        rates = self.meter.report()
        self.meter.reset()
        if not self.info.is_main:
            return
        scalars = {"loss": loss.item(), "lr": out.lr, "grad_norm": out.grad_norm.item()}
        scalars.update(rates)
        scalars.update(out.metrics)
        eta = elapsed / max(out.step - self._first_step, 1) * (self.config.steps - out.step)
        line = (
            f"step {out.step}/{self.config.steps} | loss {scalars['loss']:.4f} | lr {out.lr:.2e}"
            f" | grad {scalars['grad_norm']:.3f} | {rates['samples_per_s']:.1f} samples/s"
        )
        if "flops_per_s" in rates:
            line += f" | {_si(rates['flops_per_s'])}FLOP/s/device"
        if "mfu" in rates:
            line += f" | MFU {rates['mfu']:.1%} HFU {rates['hfu']:.1%}"
        line += f" | ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}"
        logger.info(line)
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"train/{key}", value, out.step)

    # -- checkpoints --------------------------------------------------------------------------

    def _global(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """Keys renamed to whole-model names (differ from local ones at pipeline > 1)."""
        return {self.names.get(k, k): v for k, v in tensors.items()}

    def _state(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict]]:
        model_sd = {
            k: v for k, v in self.model.state_dict(keep_vars=True).items() if torch.is_tensor(v)
        }
        model_sd = self._global(model_sd)
        tensors = {"model": {k: v.detach() for k, v in model_sd.items()}}
        like: dict[str, dict] = {"model": model_sd}
        tensors["optimizer"], like["optimizer"] = self.sync.optimizer_tensors()
        if self.ema is not None:
            tensors["ema"] = self._global(self.ema.shadow)
            like["ema"] = self._global(self.ema.params)
        return tensors, like

    def save(self) -> None:
        """Checkpoints the full training state at the current step (collective)."""
        if self.checkpoints is None:
            raise ConfigError("TrainerConfig.checkpoint_dir is None: set it to save checkpoints")
        self.sync.sync_params()
        tensors, like = self._state()
        rank_state = {"rng": get_rng_state()}
        if hasattr(self.data, "state_dict"):
            rank_state["data"] = self.data.state_dict()
        meta = {
            "world_size": self.info.world_size,
            "tensor": self.info.tensor_size,
            "pipeline": self.pipeline_size,
            "data": self.info.data_size,
            "scheduler": {"step": self.step, "total_steps": self.config.steps},
            "model_config": self.model_config,
        }
        self.checkpoints.save(self.step, tensors, like, rank_state, meta)

    def resume(self, path: str | Path | None = None) -> int:
        """Loads `path` (default: the latest complete checkpoint, if any); returns the step.

        Model, optimizer and EMA load under any TP or PP layout (tensors are stored under their
        whole-model names); RNG and data positions are restored
        when the world size matches the saving run (otherwise they start fresh, with a warning).
        """
        if self._resumed:
            return self.step
        self._resumed = True
        if path is None and self.checkpoints is not None:
            path = latest_checkpoint(self.checkpoints.root)
        if path is None:
            self._first_step = self.step
            return self.step
        if self.checkpoints is None:
            raise ConfigError("TrainerConfig.checkpoint_dir is None: set it to resume")
        tensors, like = self._state()
        meta, rank_state = self.checkpoints.load(path, tensors, like)
        self.sync.load_optimizer_tensors(tensors["optimizer"])
        self.step = int(meta["scheduler"]["step"])
        if rank_state is None:
            logger.warning(
                "%s was saved by %s ranks, this run has %d: RNG and data positions start fresh",
                path,
                meta.get("world_size"),
                self.info.world_size,
            )
        else:
            set_rng_state(rank_state["rng"])
            if "data" in rank_state and hasattr(self.data, "load_state_dict"):
                self.data.load_state_dict(rank_state["data"])
        self._iter = None
        self._first_step = self.step
        logger.info("resumed from %s at step %d", path, self.step)
        return self.step

    def export(self, path: str | Path, *, ema: bool = True) -> Path | None:
        """Full weights (EMA ones if kept and `ema`) to safetensors + JSON config (collective);
        at pipeline > 1 every stage's weights, under whole-model names."""
        self.sync.sync_params()
        params = dict(self.model.named_parameters())
        if ema and self.ema is not None:
            tensors = dict(self.ema.shadow)
            for name, tensor in self.model.state_dict().items():
                tensors.setdefault(name, tensor)  # buffers and frozen weights as they are
        else:
            tensors = dict(self.model.state_dict())
        like = {**dict(self.model.state_dict(keep_vars=True)), **params}
        tensors = {k: v for k, v in tensors.items() if torch.is_tensor(v)}
        return export_safetensors(
            path, self._global(tensors), self._global(like), self.model_config
        )

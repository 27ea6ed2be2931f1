"""The GPU data-parallel path: Megatron-Core's DistributedDataParallel + distributed optimizer.

`MegatronDataParallel` has the interface of `TorchDataParallel` (`zero_grad`, `no_sync`,
`finish_grad_sync`, `step`, `optimizer_tensors`, `load_optimizer_tensors`, `sync_params`), so the
Trainer's loop is the same on both. What changes underneath:

- gradients accumulate in Megatron's contiguous fp32 grad buffers (`param.main_grad`, not
  `param.grad`), bucketed and reduce-scattered over the data-parallel group while the backward
  pass runs (`overlap_grad_reduce`);
- AdamW is Megatron's distributed optimizer (ZeRO-1, Rajbhandari et al. 2020): each
  data-parallel rank keeps the fp32 main weights and Adam moments of one shard of the
  parameters, clips by the global norm (`OptimizerConfig.clip_grad`) and all-gathers the updated
  weights, overlapped with the next forward pass (`overlap_param_gather`);
- both allocate on `torch.cuda.current_device()`, so this path needs CUDA.

Checkpoints: `optimizer_tensors` gathers each parameter's shard of the optimizer state over
the data-parallel group into full tensors laid out like the parameter, under the same names as
the plain path (`<param>.exp_avg`, `.exp_avg_sq`, `.step`; `.main_param` for the fp32 master
copy of 16-bit parameters). So a checkpoint written here loads at another data-parallel or
tensor-parallel size, or on the plain CPU path, through the one `CheckpointManager` (DCP). The
price is a full copy of the optimizer state per rank while saving; Megatron's own
`sharded_state_dict` (its `dist_checkpointing` format) would avoid that but is a second
checkpoint format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from mugv.infra._errors import ConfigError

_MOMENTS = ("exp_avg", "exp_avg_sq")


class MegatronDataParallel:
    """Megatron DDP (overlapped grad reduce / param gather) and distributed AdamW for `model`."""

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float,
        grad_clip: float | None,
        names: dict[str, str] | None = None,
    ) -> None:
        require_megatron_path(model)
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        params = [p for p in model.parameters() if p.requires_grad]
        dtype = params[0].dtype
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=True,
            overlap_param_gather=True,
            use_distributed_optimizer=True,
        )
        self.ddp = DistributedDataParallel(model.config, ddp_config, module=model)
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=lr,
                weight_decay=weight_decay,  # Megatron's default: none on biases and 1-D params
                adam_beta1=betas[0],
                adam_beta2=betas[1],
                adam_eps=eps,
                clip_grad=grad_clip or 0.0,
                bf16=dtype == torch.bfloat16,
                fp16=dtype == torch.float16,
                params_dtype=dtype,
                use_distributed_optimizer=True,
                overlap_param_gather=True,
            ),
            [self.ddp],
        )
        self._finalize = finalize_model_grads
        self.model = model
        names = names or {}
        self.named_params = {
            names.get(n, n): p for n, p in model.named_parameters() if p.requires_grad
        }
        self.params = list(self.named_params.values())

    # -- the step -----------------------------------------------------------------------------

    def zero_grad(self) -> None:
        self.ddp.zero_grad_buffer()
        self.optimizer.zero_grad()

    def no_sync(self) -> contextlib.AbstractContextManager:
        """No grad reduction in backward passes inside (all micro-batches but the last)."""
        return self.ddp.no_sync()

    def finish_grad_sync(self) -> None:
        """Waits for the overlapped reduce-scatters; SP LayerNorm grads summed over TP,
        conditional-embedder and tied-embedding grads over the pipeline (Megatron's rules)."""
        self._finalize([self.ddp])

    def step(self, lr: float, max_norm: float | None) -> torch.Tensor:
        """Syncs, clips (to the `grad_clip` given at construction), steps; returns the
        pre-clip global grad norm."""
        self.finish_grad_sync()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ok, norm, _ = self.optimizer.step()
        if not ok:
            raise FloatingPointError("the optimizer skipped a step: inf/nan in the gradients")
        return torch.as_tensor(norm, dtype=torch.float32, device=self.params[0].device)

    def sync_params(self) -> None:
        """Completes the overlapped all-gather of the updated weights (before reading them)."""
        if self.ddp.use_forward_hook:
            self.ddp.disable_forward_pre_hook(param_sync=True)
            self.ddp.enable_forward_pre_hook()

    # -- checkpoints --------------------------------------------------------------------------

    def _shards(self) -> Iterator[tuple[object, nn.Parameter]]:
        for opt in getattr(self.optimizer, "chained_optimizers", [self.optimizer]):
            yield from ((opt, p) for p in opt.model_param_group_index_map)

    def _local_states(self) -> dict[nn.Parameter, tuple[object, dict[str, torch.Tensor]]]:
        out = {}
        for opt, param in self._shards():
            states = opt._get_main_param_and_optimizer_states(param)
            main = states["param"]
            inner = opt.optimizer.state[main]
            if not inner:  # before the first step: zeros, so a load has targets
                if isinstance(opt.optimizer, torch.optim.Adam | torch.optim.AdamW):
                    inner["step"] = torch.zeros((), dtype=torch.float32)
                for key in _MOMENTS:
                    inner[key] = torch.zeros_like(main)
                states = opt._get_main_param_and_optimizer_states(param)
            out[param] = (opt, states)
        return out

    def optimizer_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Full (data-parallel-gathered) optimizer state by `<param name>.<key>`, laid out like
        the parameter each belongs to."""
        from megatron.core import parallel_state

        group = parallel_state.get_data_parallel_group(with_context_parallel=True)
        local = self._local_states()
        tensors, like = {}, {}
        for name, param in self.named_params.items():
            keys = list(_MOMENTS) + ([] if param.dtype == torch.float32 else ["param"])
            found = local.get(param)
            for key in keys:
                full = torch.zeros(param.numel(), dtype=torch.float32, device=param.device)
                if found is not None:
                    opt, states = found
                    span = opt._get_model_param_range_map(param)["param"]
                    full[span.start : span.end] = states[key].detach().float().view(-1)
                dist.all_reduce(full, group=group)  # disjoint shards: the sum is the whole
                out = "main_param" if key == "param" else key
                tensors[f"{name}.{out}"] = full.view(param.shape)
                like[f"{name}.{out}"] = param
            step = torch.zeros((), dtype=torch.float32, device=param.device)
            if found is not None:
                step += _step_of(*found, param)
            dist.all_reduce(step, op=dist.ReduceOp.MAX, group=group)
            tensors[f"{name}.step"], like[f"{name}.step"] = step, param
        return tensors, like

    def load_optimizer_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copies this rank's shards out of the full tensors `optimizer_tensors` returned."""
        local = self._local_states()
        for name, param in self.named_params.items():
            if param not in local:
                continue
            opt, states = local[param]
            span = opt._get_model_param_range_map(param)["param"]
            new = {}
            for key in states:
                source = "main_param" if key == "param" else key
                if key == "param" and param.dtype == torch.float32:
                    new[key] = param.detach().view(-1)[span.start : span.end]  # a view of it
                elif key == "step":
                    new[key] = tensors[f"{name}.step"]
                else:
                    full = tensors[f"{name}.{source}"].view(-1)
                    new[key] = full[span.start : span.end]
            opt._set_main_param_and_optimizer_states(param, new)
            if "step" not in states:  # TE/Apex FusedAdam count steps per param group
                group_index, _ = opt.model_param_group_index_map[param]
                opt.optimizer.param_groups[group_index]["step"] = int(tensors[f"{name}.step"])
        self.sync_params()


def _step_of(opt: object, states: dict[str, torch.Tensor], param: nn.Parameter) -> float:
    """Adam's step count for `param`: in its state (torch) or its param group (FusedAdam)."""
    if "step" in states:
        return float(states["step"])
    group_index, _ = opt.model_param_group_index_map[param]
    return float(opt.optimizer.param_groups[group_index].get("step", 0))


def megatron_available(model: nn.Module) -> bool:
    """True when the Megatron path can run: a Megatron-Core model (its `config`) on CUDA."""
    return (
        torch.cuda.is_available()
        and _has_transformer_config(model)
        and all(p.device.type == "cuda" for p in model.parameters())
    )


def _has_transformer_config(model: nn.Module) -> bool:
    from megatron.core.transformer import TransformerConfig

    return isinstance(getattr(model, "config", None), TransformerConfig)


def require_megatron_path(model: nn.Module) -> None:
    """Raises `ConfigError` naming what is missing for the Megatron path."""
    if not torch.cuda.is_available():
        raise ConfigError(
            "TrainerConfig.data_parallel='megatron' needs CUDA: Megatron-Core's "
            "DistributedDataParallel and distributed optimizer allocate on the GPU; use "
            "data_parallel='auto' (plain PyTorch on CPU) or 'torch'"
        )
    if not _has_transformer_config(model):
        raise ConfigError(
            f"TrainerConfig.data_parallel='megatron' needs a Megatron-Core model: "
            f"{type(model).__name__} has no TransformerConfig `config`; use data_parallel='torch'"
        )
    if any(p.device.type != "cuda" for p in model.parameters()):
        raise ConfigError(
            "TrainerConfig.data_parallel='megatron': the model has parameters off the GPU; "
            "move it with model.cuda() before building the Trainer"
        )

"""Pipeline parallelism: Megatron-Core's 1F1B schedule driving `step_fn` on every stage.

The Trainer hands a step's micro-batches to `PipelineSchedule.run`, which calls
`megatron.core.pipeline_parallel.get_forward_backward_func()` (non-interleaved 1F1B: warm-up
forwards, steady one-forward-one-backward, cool-down backwards; Narayanan et al. 2021, sec. 2.2)
with a forward-step function that runs the user's unchanged `step_fn(model, batch)`:

- every stage runs `step_fn` on the same micro-batch (the data is sharded by data-parallel
  rank only), so random draws made before the model call (noise, timesteps) must agree across
  stages: at the start of each step the default generators are copied from the first stage;
- on a stage that is not the last, the model's output (the hidden states to send on) is taken
  from a forward hook the moment `model(...)` returns, and the rest of `step_fn` (the loss) is
  skipped; so `step_fn` must call `model(...)` exactly once per micro-batch;
- the model follows Megatron's stage contract: `set_input_tensor(list)` receives the previous
  stage's activations, its `config` (a `TransformerConfig`) holds `pipeline_dtype`, and stage
  outputs are (s, b, d) tensors of that dtype.

Activation shapes are exchanged before each transfer (`config.variable_seq_lengths = True`), so
micro-batches may differ in sequence length and the Trainer needs no shape argument.

On CPU, Megatron-Core 0.16's pipeline code cannot run as shipped: `P2PCommunicator._communicate`
allocates receive buffers with `device=torch.cuda.current_device()` and the schedules allocate
their token counter with `device="cuda"`, both of which raise on a CPU-only torch ("Torch not
compiled with CUDA enabled"); the gloo point-to-point ops themselves work. So on CPU the
schedule is Megatron's own, given `CpuP2PCommunicator` (the same isend/irecv ops, buffers on
the CPU) and started under `_cuda_factories_on_cpu`, which places the schedule's `device="cuda"`
token counter on the CPU (lifted at the first forward step). On CUDA nothing is substituted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.overrides import TorchFunctionMode

from mugv.infra._errors import ConfigError

_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.tensor}


class _CudaFactoriesOnCpu(TorchFunctionMode):
    """Tensor factories asked for a CUDA device build on the CPU instead (scoped, CPU only).

    Every torch call goes through this Python method while the mode is on, so `run` keeps it
    on only from the schedule's start to its first forward step: the stretch where Megatron's
    schedule allocates its token counter on "cuda".
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device") if func in _FACTORIES else None
        if device is not None and torch.device(device).type == "cuda":
            kwargs = {**kwargs, "device": "cpu"}
        return func(*args, **kwargs)


def _cuda_factories_on_cpu() -> contextlib.AbstractContextManager:
    return _CudaFactoriesOnCpu()


def _cpu_communicator(pp_group: dist.ProcessGroup, config: Any) -> Any:
    """Megatron's P2PCommunicator with its receive buffers on the CPU (gloo)."""
    from megatron.core.pipeline_parallel.p2p_communication import P2PCommunicator, _p2p_ops

    class CpuP2PCommunicator(P2PCommunicator):
        def _exchange(self, send_prev, recv_prev, send_next, recv_next) -> None:
            reqs = _p2p_ops(
                tensor_send_prev=send_prev,
                tensor_recv_prev=recv_prev,
                tensor_send_next=send_next,
                tensor_recv_next=recv_next,
                group=self.pp_group,
                prev_pipeline_rank=self.prev_rank,
                next_pipeline_rank=self.next_rank,
            )
            for req in reqs.values():
                req.wait()

        def _communicate_shapes(self, tensor_send_next, tensor_send_prev, recv_prev, recv_next):
            def shape_of(t):
                return None if t is None else torch.tensor(t.shape, dtype=torch.int64)

            prev_shape = torch.empty(3, dtype=torch.int64) if recv_prev else None
            next_shape = torch.empty(3, dtype=torch.int64) if recv_next else None
            self._exchange(
                shape_of(tensor_send_prev), prev_shape, shape_of(tensor_send_next), next_shape
            )
            return (
                [0, 0, 0] if prev_shape is None else prev_shape.tolist(),
                [0, 0, 0] if next_shape is None else next_shape.tolist(),
            )

        def _communicate(
            self,
            *,
            tensor_send_next,
            tensor_send_prev,
            recv_prev,
            recv_next,
            tensor_shape,
            wait_on_reqs=True,
        ):
            prev_shape = next_shape = tensor_shape
            if self.config.variable_seq_lengths:
                prev_shape, next_shape = self._communicate_shapes(
                    tensor_send_next, tensor_send_prev, recv_prev, recv_next
                )
            dtype = self.config.pipeline_dtype
            recv_prev_t = (
                torch.empty(prev_shape, dtype=dtype, requires_grad=True) if recv_prev else None
            )
            recv_next_t = (
                torch.empty(next_shape, dtype=dtype, requires_grad=True) if recv_next else None
            )
            self._exchange(tensor_send_prev, recv_prev_t, tensor_send_next, recv_next_t)
            return recv_prev_t, recv_next_t, None

    return CpuP2PCommunicator(pp_group, config)


class _StageOutput(BaseException):  # control flow: a broad `except Exception` must not eat it
    """Carries a non-last stage's model output out of `step_fn`."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__("pipeline stage output")
        self.output = output


def global_names(model: nn.Module) -> dict[str, str]:
    """Local parameter/buffer name -> its name in the whole (unpipelined) model.

    A pipeline stage numbers its layers from 0 (`blocks.0`, `decoder.layers.0`); Megatron's
    layers carry their global 1-based `layer_number`, so `<list>.<i>` is renamed
    `<list>.<layer_number - 1>`. Identity at pipeline size 1.
    """
    renames: dict[str, str] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        for index, layer in enumerate(module):
            number = getattr(layer, "layer_number", None)
            if isinstance(number, int) and number - 1 != index:
                renames[f"{name}.{index}." if name else f"{index}."] = (
                    f"{name}.{number - 1}." if name else f"{number - 1}."
                )
    out = {}
    for name in model.state_dict(keep_vars=True):
        new = name
        for old_prefix, new_prefix in renames.items():
            if name.startswith(old_prefix):
                new = new_prefix + name[len(old_prefix) :]
                break
        out[name] = new
    return out


class PipelineSchedule:
    """Runs one step's micro-batches through Megatron's pipeline schedule on this stage."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        from megatron.core import parallel_state
        from megatron.core.enums import ModelType
        from megatron.core.pipeline_parallel import get_forward_backward_func

        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "pipeline_dtype"):
            raise ConfigError(
                f"ParallelConfig.pipeline > 1 needs a Megatron-Core model: {type(model).__name__} "
                "has no TransformerConfig `config`; build it as a MegatronModule"
            )
        if config.pipeline_dtype is None:
            raise ConfigError(
                "TransformerConfig.pipeline_dtype is None: set it to the dtype of the stage "
                "outputs (e.g. torch.float32, or torch.bfloat16 for bf16 params)"
            )
        if not callable(getattr(model, "set_input_tensor", None)):
            raise ConfigError(
                f"{type(model).__name__} has no set_input_tensor(list): pipeline stages receive "
                "the previous stage's activations through it (Megatron's stage contract)"
            )
        if not hasattr(model, "model_type"):
            model.model_type = ModelType.encoder_or_decoder  # Megatron's default kind
        if not hasattr(model, "share_embeddings_and_output_weights"):
            model.share_embeddings_and_output_weights = False  # read by finalize_model_grads
        config.variable_seq_lengths = True  # shapes travel with the activations
        self.model, self.config, self.device = model, config, device
        self.group = parallel_state.get_pipeline_model_parallel_group()
        self.first = dist.get_global_rank(self.group, 0)
        self.last = dist.get_global_rank(self.group, self.group.size() - 1)
        self.is_last = dist.get_rank() == self.last
        self.cp_size = parallel_state.get_context_parallel_world_size()
        self.forward_backward = get_forward_backward_func()
        self.cpu = device.type == "cpu"
        if self.cpu:
            from megatron.core.process_groups_config import ProcessGroupCollection

            self.communicator = _cpu_communicator(self.group, config)
            self.groups = ProcessGroupCollection.use_mpu_process_groups(
                required_pgs=["tp", "cp", "pp", "embd", "pos_embd", "dp_cp"]
            )

    def _sync_rng(self) -> None:
        """Every stage continues from the first stage's default generator states."""
        states = [torch.get_rng_state()]
        if torch.cuda.is_available():
            states.append(torch.cuda.get_rng_state())
        for index, state in enumerate(states):
            buffer = state.to(self.device)
            dist.broadcast(buffer, src=self.first, group=self.group)
            if index == 0:
                torch.set_rng_state(buffer.cpu())
            else:
                torch.cuda.set_rng_state(buffer.cpu())

    def run(
        self, step_fn: Callable[[nn.Module, Any], Any], batches: Iterator[Any], count: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward and backward of `count` micro-batches from `batches` on this stage; returns
        their mean loss and metrics (computed on the last stage, broadcast to every stage)."""
        self._sync_rng()
        model, config, cp_size = self.model, self.config, self.cp_size

        def capture(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if output.dtype != config.pipeline_dtype:
                raise ConfigError(
                    f"pipeline stage output dtype {output.dtype} != TransformerConfig."
                    f"pipeline_dtype {config.pipeline_dtype}: set pipeline_dtype to it"
                )
            raise _StageOutput(output)

        def reduce(loss: torch.Tensor, extra: dict[str, float]) -> Callable:
            # Megatron scales the loss by cp/num_microbatches; without the cp factor the
            # gradients are those of the loop without pipeline (mean over micro-batches).
            return lambda output: (
                output / cp_size,
                {"loss": loss.detach().float(), "metrics": extra},
            )

        shim = [_cuda_factories_on_cpu()] if self.cpu else []

        def lift_shim() -> None:
            while shim:
                shim.pop().__exit__(None, None, None)

        def forward_step(data: Iterator[Any], stage: nn.Module):
            lift_shim()  # the model and step_fn run without the mode
            batch = next(data)
            try:
                out = step_fn(stage, batch)
            except _StageOutput as stage_out:
                return stage_out.output, None  # Megatron calls loss funcs on the last stage only
            loss, extra = out if isinstance(out, tuple) else (out, {})
            return loss, reduce(loss, extra)

        hook = None if self.is_last else model.register_forward_hook(capture)
        kwargs: dict[str, Any] = {}
        if self.cpu:
            kwargs = {"p2p_communicator": self.communicator, "pg_collection": self.groups}
        try:
            for mode in shim:
                mode.__enter__()
            store = self.forward_backward(
                forward_step_func=forward_step,
                data_iterator=batches,
                model=[model],
                num_microbatches=count,
                seq_length=1,  # unused: shapes are exchanged (variable_seq_lengths)
                micro_batch_size=1,
                forward_only=False,
                **kwargs,
            )
        finally:
            lift_shim()
            if hook is not None:
                hook.remove()
        loss = torch.zeros((), device=self.device)
        metrics: dict[str, float] = {}
        for item in store:
            loss += item["loss"]
            for key, value in item["metrics"].items():
                metrics[key] = metrics.get(key, 0.0) + float(value) / count
        loss /= count
        dist.broadcast(loss, src=self.last, group=self.group)
        shared = [metrics]
        dist.broadcast_object_list(shared, src=self.last, group=self.group)
        return loss, shared[0]

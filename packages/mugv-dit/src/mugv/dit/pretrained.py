"""`save_pretrained` / `from_pretrained`: safetensors weights + config.json, any TP/PP layout.

The files always hold the full (unsharded) model in our layout with global block indices;
tensor-parallel ranks gather on save and slice on load using the attributes Megatron puts on
its parallel weights (`tensor_model_parallel`, `partition_dim`); pipeline stages are gathered
on save (`mugv.infra.export_safetensors`) and each stage loads its own blocks.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from safetensors.torch import load_file
from torch import Tensor

from mugv.dit.config import DiTConfig, DiTError
from mugv.infra.checkpoint import export_safetensors

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def _renumber(name: str, offset: int) -> str:
    return _BLOCK.sub(lambda m: f"blocks.{int(m.group(1)) + offset}.", name)


def _local_tensors(model: torch.nn.Module) -> dict[str, Tensor]:
    """Parameters and buffers by name, without TransformerEngine's `_extra_state`."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith("_extra_state")}


def full_state_dict(model: Any) -> dict[str, Tensor]:
    """The whole model of this pipeline stage, gathered over TP, global block indices."""
    params = dict(model.named_parameters())
    tp = parallel_state.get_tensor_model_parallel_world_size()
    out = {}
    for name, value in _local_tensors(model).items():
        param = params.get(name)
        if tp > 1 and param is not None and getattr(param, "tensor_model_parallel", False):
            parts = [torch.empty_like(value) for _ in range(tp)]
            dist.all_gather(
                parts, value.contiguous(), group=parallel_state.get_tensor_model_parallel_group()
            )
            value = torch.cat(parts, dim=param.partition_dim)
        out[_renumber(name, model.layer_offset)] = value.detach().clone()
    return out


def load_full_state_dict(model: Any, state: dict[str, Tensor]) -> None:
    """Loads a full (unsharded, global-index) state dict into this rank's shard of `model`."""
    params = dict(model.named_parameters())
    tp = parallel_state.get_tensor_model_parallel_world_size()
    rank = parallel_state.get_tensor_model_parallel_rank()
    local = {}
    for name, target in _local_tensors(model).items():
        key = _renumber(name, model.layer_offset)
        if key not in state:
            raise DiTError(
                f"checkpoint has no tensor {key!r} (needed by this model); was it "
                "saved from a different DiTConfig?"
            )
        value = state[key]
        param = params.get(name)
        if tp > 1 and param is not None and getattr(param, "tensor_model_parallel", False):
            value = value.chunk(tp, dim=param.partition_dim)[rank]
        if value.shape != target.shape:
            raise DiTError(
                f"checkpoint tensor {key!r} has shape {tuple(value.shape)}, the model "
                f"expects {tuple(target.shape)}: check the DiTConfig"
            )
        local[name] = value
    model.load_state_dict(local, strict=False)


class PretrainedMixin:
    """diffusers-style saving and loading for MUGDiT."""

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Writes `model.safetensors` + `config.json` (collective: every rank calls it; TP
        shards and pipeline stages are gathered, rank 0 writes), always the whole model."""
        params = dict(self.named_parameters())
        tensors, like = {}, {}
        for name, value in _local_tensors(self).items():
            key = _renumber(name, self.layer_offset)
            tensors[key], like[key] = value, params.get(name, value)
        export_safetensors(path, tensors, like, self.dit.to_dict())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs: Any) -> Any:
        """Builds the model from `config.json` (keyword arguments go to the constructor) and
        loads this rank's shard of `model.safetensors`."""
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not os.path.isfile(os.path.join(path, name)):
                raise DiTError(
                    f"from_pretrained({str(path)!r}): no {name}; expected a folder "
                    "written by save_pretrained"
                )
        with open(os.path.join(path, CONFIG_NAME)) as f:
            config = DiTConfig.from_dict(json.load(f))
        model = cls(config, **kwargs)
        state = load_file(os.path.join(path, WEIGHTS_NAME))
        dtype = next(model.parameters()).dtype
        load_full_state_dict(model, {k: v.to(dtype) for k, v in state.items()})
        return model

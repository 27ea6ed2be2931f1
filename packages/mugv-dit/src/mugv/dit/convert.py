"""Checkpoint interop with the authors' inference checkpoint (`dit.pt`, SPEC interop details).

Only the blocks and the final projection differ from our layout:
- `attn.qkv` is laid out (3, heads, head_dim) along its outputs, ours (heads, 3, head_dim) so
  that tensor-parallel ranks own whole heads; `cross_attn.kv_linear` likewise (2, heads, D);
- the reference's final linear predicts 2 x 24 channels per patch position (a learned-sigma
  leftover); ours keeps the first 24 (the velocity). Back-conversion fills the rest with 0.
Everything else keeps the reference's names. Conversions work on full (TP=1) state dicts;
for TP > 1 load the converted dict with `mugv.dit.pretrained.load_full_state_dict`, which
slices it for each rank.
"""

from __future__ import annotations

import os
import re

import torch
from torch import Tensor

from mugv.dit.config import DiTConfig, DiTError

_RENAMES = [  # (reference, ours) suffixes inside blocks.{i}.
    ("attn.qkv.", "self_attention.linear_qkv."),
    ("attn.q_norm.", "self_attention.q_norm."),
    ("attn.k_norm.", "self_attention.k_norm."),
    ("attn.proj.", "self_attention.linear_proj."),
    ("cross_attn.q_linear.", "cross_attention.linear_q."),
    ("cross_attn.kv_linear.", "cross_attention.linear_kv."),
    ("cross_attn.q_norm.", "cross_attention.q_norm."),
    ("cross_attn.k_norm.", "cross_attention.k_norm."),
    ("cross_attn.proj.", "cross_attention.linear_proj."),
    ("mlp.fc1.", "mlp.linear_fc1."),
    ("mlp.fc2.", "mlp.linear_fc2."),
]
_BLOCK = re.compile(r"^(blocks\.\d+\.)(.*)$")


def _regroup(w: Tensor, groups: int, heads: int, to_ours: bool) -> Tensor:
    """(groups, heads, D) <-> (heads, groups, D) along dim 0 of a weight or bias."""
    rest = w.shape[1:]
    src = (groups, heads, -1) if to_ours else (heads, groups, -1)
    return w.reshape(*src, *rest).transpose(0, 1).reshape(w.shape)


def _split_sizes(config: DiTConfig) -> tuple[int, int]:
    return config.patch_volume, config.in_channels


def from_reference(state: dict[str, Tensor], config: DiTConfig) -> dict[str, Tensor]:
    """The authors' state dict -> ours (full, TP=1 layout)."""
    out = {}
    heads = config.num_heads
    for key, value in state.items():
        m = _BLOCK.match(key)
        if m:
            prefix, rest = m.groups()
            for old, new in _RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            if rest.startswith("self_attention.linear_qkv."):
                value = _regroup(value, 3, heads, to_ours=True)
            elif rest.startswith("cross_attention.linear_kv."):
                value = _regroup(value, 2, heads, to_ours=True)
            out[prefix + rest] = value
        elif key.startswith("final_layer.linear."):
            pv, c = _split_sizes(config)
            if value.shape[0] != pv * 2 * c:
                raise DiTError(
                    f"{key}: expected {pv * 2 * c} output features (patch volume "
                    f"{pv} x 2 x {c} channels), got {value.shape[0]}"
                )
            out[key] = value.reshape(pv, 2 * c, *value.shape[1:])[:, :c].reshape(
                pv * c, *value.shape[1:]
            )
        elif key in ("start_token", "end_token"):
            out[key] = value.reshape(-1)
        else:
            out[key] = value
    return out


def to_reference(state: dict[str, Tensor], config: DiTConfig) -> dict[str, Tensor]:
    """Our full state dict -> the authors' layout (sigma half of the output zero)."""
    out = {}
    heads = config.num_heads
    for key, value in state.items():
        m = _BLOCK.match(key)
        if m:
            prefix, rest = m.groups()
            if rest.startswith("self_attention.linear_qkv."):
                value = _regroup(value, 3, heads, to_ours=False)
            elif rest.startswith("cross_attention.linear_kv."):
                value = _regroup(value, 2, heads, to_ours=False)
            for old, new in _RENAMES:
                if rest.startswith(new):
                    rest = old + rest[len(new) :]
                    break
            out[prefix + rest] = value
        elif key.startswith("final_layer.linear."):
            pv, c = _split_sizes(config)
            v = value.reshape(pv, c, *value.shape[1:])
            out[key] = torch.cat([v, torch.zeros_like(v)], dim=1).reshape(
                pv * 2 * c, *value.shape[1:]
            )
        else:
            out[key] = value
    return out


def config_from_reference(state: dict[str, Tensor], **overrides: object) -> DiTConfig:
    """Infers the DiTConfig (width, heads, depth, patch, channels, text) from the tensors."""
    try:
        conv = state["x_embedder.proj.weight"]  # (d, C, pt, ph, pw)
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        head_dim = state["blocks.0.attn.q_norm.weight"].numel()
        fc1 = state["y_embedder.y_proj.fc1.weight"]  # (d, text_dim)
        mlp = state["blocks.0.mlp.fc1.weight"]  # (f, d)
    except (KeyError, ValueError) as err:
        raise DiTError(
            f"not a MUGDiT reference state dict (missing {err}): expected the "
            "authors' dit.pt layout (x_embedder.proj, blocks.{i}.attn.qkv, ...)"
        ) from err
    fields = dict(
        hidden_size=conv.shape[0],
        num_heads=conv.shape[0] // head_dim,
        depth=depth,
        in_channels=conv.shape[1],
        patch_size=tuple(conv.shape[2:]),
        text_dim=fc1.shape[1],
        mlp_ratio=mlp.shape[0] / conv.shape[0],
        freq_dim=state["t_embedder.mlp.0.weight"].shape[1],
    )
    if "y_embedder.y_embedding" in state:
        fields["text_len"] = state["y_embedder.y_embedding"].shape[0]
    return DiTConfig(**{**fields, **overrides})


def load_reference_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of an authors' `dit.pt` (weights only; an EMA/`model`/`state_dict` wrapper and
    a `module.` prefix are unwrapped)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("ema", "model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}

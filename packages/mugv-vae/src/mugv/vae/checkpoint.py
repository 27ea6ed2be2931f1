"""Checkpoint files: safetensors weights + a JSON config, checked key by key on load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mugv.vae._errors import VAECheckpointError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise VAECheckpointError naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches (checkpoint != model): {_names(shapes)}")
    if problems:
        raise VAECheckpointError(
            f"{source} does not match the model config: "
            + "; ".join(problems)
            + ". Load it with the config it was saved with (config.json beside it)."
        )


def save_checkpoint(
    path: str | Path, state: dict[str, torch.Tensor], config: dict[str, Any]
) -> None:
    """Write ``path/model.safetensors`` and ``path/config.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")


def load_config(path: str | Path) -> dict[str, Any]:
    file = Path(path) / CONFIG_NAME
    try:
        return json.loads(file.read_text())
    except FileNotFoundError as e:
        raise VAECheckpointError(f"{file} not found: is {path} a save_pretrained folder?") from e
    except json.JSONDecodeError as e:
        raise VAECheckpointError(
            f"{file} is not valid JSON ({e}): the checkpoint is corrupt"
        ) from e


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    file = Path(path) / WEIGHTS_NAME
    if not file.exists():
        raise VAECheckpointError(f"{file} not found: is {path} a save_pretrained folder?")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as e:
        raise VAECheckpointError(
            f"{file} cannot be read as safetensors ({e}): it is corrupt"
        ) from e

"""Checkpoint converter: the authors' released MUG-V VAE (``vae.pt``) into our `VideoVAE`.

Their key layout (public inference code, Shopee-MUG/MUG-V ``mug_v/encoder/vae``): the spatial
stage is a diffusers ``AutoencoderKL`` under ``spatial_vae.module.`` whose unused output conv,
output norm and decoder input conv are still stored; the temporal stage sits under
``temporal_vae.`` with every ``CausalConv3d`` wrapping a ``.conv``; the latent normalisation is
stored as ``shift``/``scale`` buffers of shape (1, 24, 1, 1, 1) and a training ``logvar`` scalar.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from mugv.vae._errors import VAECheckpointError
from mugv.vae.checkpoint import check_state_dict
from mugv.vae.config import CONFIGS, VAEConfig
from mugv.vae.model import VideoVAE

# Stored by the authors but never used by their forward pass (or a training-only scalar).
UNUSED_KEYS = re.compile(
    r"^(logvar|spatial_vae\.module\.(encoder\.(conv_out|conv_norm_out)|decoder\.conv_in"
    r"|quant_conv|post_quant_conv)\.(weight|bias))$"
)

# (their pattern, our replacement), applied in order to each key.
_RULES: list[tuple[str, str]] = [
    (r"^spatial_vae\.module\.encoder\.", "spatial_encoder."),
    (r"^spatial_vae\.module\.decoder\.", "spatial_decoder."),
    (r"\.(downsamplers|upsamplers)\.0\.", ".resample."),
    (r"\.attentions\.0\.group_norm\.", ".attention.norm."),
    (r"\.attentions\.0\.to_out\.0\.", ".attention.to_out."),
    (r"\.attentions\.0\.", ".attention."),
    (r"^spatial_decoder\.conv_norm_out\.", "spatial_decoder.norm_out."),
    (r"^temporal_vae\.encoder\.", "temporal_encoder."),
    (r"^temporal_vae\.decoder\.", "temporal_decoder."),
    (r"^temporal_vae\.(quant_conv|post_quant_conv)\.conv\.", r"\1."),
    (r"\.conv(1|2|3|_in|_out|_blocks\.\d+)\.conv\.", r".conv\1."),
    (r"\.block_res_blocks\.", ".levels."),
    (r"\.res_blocks\.", ".mid."),
    (r"\.conv3\.", ".shortcut."),
    (r"^temporal_encoder\.conv_blocks\.", "temporal_encoder.downsamples."),
    (r"^temporal_(encoder|decoder)\.norm1\.", r"temporal_\1.norm_out."),
    (r"^temporal_encoder\.conv2\.", "temporal_encoder.conv_out."),
    (r"^temporal_decoder\.conv1\.", "temporal_decoder.conv_in."),
]


def _rename(key: str) -> str:
    for pattern, repl in _RULES:
        key = re.sub(pattern, repl, key)
    # Their decoder's conv_blocks[i - 1] follows level i; ours is keyed by the level.
    match = re.match(r"^temporal_decoder\.conv_blocks\.(\d+)\.(.*)$", key)
    if match:
        key = f"temporal_decoder.upsamples.{int(match[1]) + 1}.{match[2]}"
    return key


def convert_state_dict(
    state: dict[str, torch.Tensor], config: VAEConfig | None = None
) -> dict[str, torch.Tensor]:
    """Their state dict -> ours for ``config`` (default: ``CONFIGS["reference"]``).

    Raises VAECheckpointError naming missing keys (ours) and unexpected keys (theirs).
    """
    config = config or CONFIGS["reference"]
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if UNUSED_KEYS.match(key):
            continue
        if key in ("shift", "scale"):
            name = "latent_mean" if key == "shift" else "latent_std"
            value = value.reshape(-1).float()  # (1, C, 1, 1, 1) or a scalar
            out[name] = value.expand(config.latent_channels) if value.numel() == 1 else value
            origin[name] = key
            continue
        new = _rename(key)
        if new.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.weight")):
            value = value.reshape(value.shape[0], value.shape[1])  # 1x1 conv or linear
        out[new] = value
        origin[new] = key
    with torch.device("meta"):
        model = VideoVAE(config)
    try:
        check_state_dict(model, out, "the authors' checkpoint")
    except VAECheckpointError as e:
        unexpected = [origin[k] for k in out if k not in model.state_dict()]
        hint = f" (their names of the unexpected keys: {', '.join(sorted(unexpected)[:8])})"
        raise VAECheckpointError(str(e) + (hint if unexpected else "")) from None
    return out


def load_authors_checkpoint(path: str | Path, config: VAEConfig | None = None) -> VideoVAE:
    """Load the authors' ``vae.pt`` (a plain state dict) into a `VideoVAE`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated/garbled pickle
        raise VAECheckpointError(f"{path} cannot be read by torch.load ({e}): it is corrupt") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise VAECheckpointError(f"{path} is not a flat state dict of tensors")
    config = config or CONFIGS["reference"]
    model = VideoVAE(config)
    model.load_state_dict(convert_state_dict(state, config))
    return model

"""MUGDiT configs: the 1B..18B family at fixed depth 56, scaled by width, plus CPU-sized ones.

SPEC "MUG-V DiT": 1B (hidden 1152, 16 heads), 4B (2304/32), 10B (3456/48), 18B (4608/64),
MLP ratio 4, 24-channel latents, patch (1, 2, 2), T5-XXL text (4096-d, 300 tokens).
"""

from __future__ import annotations

import dataclasses
from typing import Any


class DiTError(ValueError):
    """A MUGDiT config, input or checkpoint that cannot be used as given."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Shape of a MUGDiT.

    `text_len` is the length of the learned null caption (CFG dropout): a dropped sample sees
    exactly its text_len rows, whatever the length of the texts it is batched with (300, as
    Open-Sora's T5 captions; 32 in `tiny`, for MiniLM captions of 8-40 tokens). `max_frames`
    bounds the RoPE time position (frame indices are clamped to `max_frames - 1`, about 1
    minute of video at 8 frames per latent); `timestep_scale` maps the rectified-flow t in
    [0, 1] to the sinusoidal embedding's input (t * 1000, as in the DiT lineage).
    """

    hidden_size: int
    num_heads: int
    depth: int = 56
    in_channels: int = 24
    patch_size: tuple[int, int, int] = (1, 2, 2)
    mlp_ratio: float = 4.0
    text_dim: int = 4096
    text_len: int = 300
    freq_dim: int = 256
    timestep_scale: float = 1000.0
    rope_theta: float = 10000.0
    max_frames: int = 480
    norm_eps: float = 1e-6
    recompute: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(self.patch_size))
        for name in (
            "hidden_size",
            "num_heads",
            "depth",
            "in_channels",
            "text_dim",
            "text_len",
            "freq_dim",
            "max_frames",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise DiTError(f"DiTConfig.{name}={value!r} is invalid: use a positive integer")
        if len(self.patch_size) != 3 or any(int(p) < 1 for p in self.patch_size):
            raise DiTError(
                f"DiTConfig.patch_size={self.patch_size!r} is invalid: use three positive "
                "integers (pt, ph, pw), e.g. (1, 2, 2)"
            )
        if self.hidden_size % self.num_heads:
            raise DiTError(
                f"DiTConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_heads={self.num_heads}: pick num_heads dividing hidden_size"
            )
        if self.head_dim % 6:
            raise DiTError(
                f"DiTConfig: head_dim = hidden_size/num_heads = {self.head_dim} must be a "
                "multiple of 6 (3D RoPE splits it into three equal parts of complex pairs): "
                "change hidden_size or num_heads"
            )
        if self.freq_dim % 2:
            raise DiTError(f"DiTConfig.freq_dim={self.freq_dim} must be even")
        if self.mlp_ratio <= 0:
            raise DiTError(f"DiTConfig.mlp_ratio={self.mlp_ratio} must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["patch_size"] = list(self.patch_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DiTError(f"DiTConfig.from_dict: unknown fields {unknown}; known: {sorted(names)}")
        return cls(**data)


NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "debug": {"hidden_size": 24, "num_heads": 2, "depth": 1, "text_dim": 32, "text_len": 16},
    "tiny": {"hidden_size": 48, "num_heads": 2, "depth": 2, "text_dim": 384, "text_len": 32},
    "1B": {"hidden_size": 1152, "num_heads": 16},
    "4B": {"hidden_size": 2304, "num_heads": 32},
    "10B": {"hidden_size": 3456, "num_heads": 48},
    "18B": {"hidden_size": 4608, "num_heads": 64},
}


def dit_config(name: str, **overrides: Any) -> DiTConfig:
    """A named config ("debug", "tiny", "1B", "4B", "10B", "18B") with keyword overrides."""
    if name not in NAMED_CONFIGS:
        raise DiTError(f"dit_config: unknown name {name!r}; choose from {list(NAMED_CONFIGS)}")
    return DiTConfig(**{**NAMED_CONFIGS[name], **overrides})

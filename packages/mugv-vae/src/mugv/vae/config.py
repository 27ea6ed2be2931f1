"""Typed configs of the two-stage video VAE and the dict of named presets.

``reference`` holds the published sizes (SDXL-VAE spatial stage, MAGVIT-v2-style temporal stage,
8x8x8 compression, 24 latent channels); ``small``, ``narrow``, ``narrow4x`` (4x4x8, 6 channels:
the demo's) and ``tiny`` train on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mugv.vae._errors import VAEConfigError


def _check_groups(name: str, channels: tuple[int, ...], groups: int) -> None:
    for c in channels:
        if c % groups:
            raise VAEConfigError(
                f"{name}: GroupNorm groups={groups} must divide every width, but {c} is not a "
                f"multiple of it; choose groups dividing {sorted(set(channels))}"
            )


@dataclass(frozen=True, kw_only=True)
class SpatialConfig:
    """SD/SDXL-style 2D autoencoder; ``len(block_out_channels) - 1`` stride-2 downsamples.

    The encoder stops after its mid block (``block_out_channels[-1]`` features at 1/`downsample`
    of the input size); the decoder starts at its mid block. ``scaling_factor`` multiplies the
    features handed to the temporal stage (the reference keeps SD's 0.18215).
    """

    in_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_groups: int = 32
    mid_attention: bool = True
    scaling_factor: float = 0.18215

    def __post_init__(self) -> None:
        if len(self.block_out_channels) < 1 or min(self.block_out_channels) < 1:
            raise VAEConfigError(
                f"SpatialConfig.block_out_channels must be a non-empty tuple of positive widths; "
                f"got {self.block_out_channels}"
            )
        if self.layers_per_block < 1:
            raise VAEConfigError(
                f"SpatialConfig.layers_per_block must be >= 1; got {self.layers_per_block}"
            )
        _check_groups("SpatialConfig.norm_groups", self.block_out_channels, self.norm_groups)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def feature_channels(self) -> int:
        return self.block_out_channels[-1]


@dataclass(frozen=True, kw_only=True)
class TemporalConfig:
    """Causal 3D-conv ResNet over the spatial features (MAGVIT-v2 lineage).

    ``len(channel_multipliers) - 1`` stride-2 temporal downsamples: each group of
    ``2 ** (len - 1)`` frames becomes one latent frame.
    """

    in_channels: int = 512
    latent_channels: int = 24
    filters: int = 128
    num_res_blocks: int = 4
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    norm_groups: int = 32
    # Training init: the posterior starts with std exp(-3) (the logvar half of the quant conv's
    # bias), so sampled latents carry the signal from step 0; starting at std 1 the decoder
    # learns to ignore the noise-swamped latents (posterior collapse).
    init_logvar: float = -6.0
    # A learned linear path from each group's (in_channels x 8) features straight to the
    # latent mean, and from the latent back to the 8 frames' features, added to the conv
    # stacks' outputs (the residual-autoencoding idea of DC-AE, Chen et al. 2024, applied to
    # time). On the synthetic world a per-position linear (PCA) codec already keeps 98.8% of the
    # feature variance in 24 channels and decodes to within 0.2 dB of the spatial stage alone;
    # the conv stacks then learn only what is not linear. `fit_linear_shortcut` starts it at
    # that PCA codec. On in the CPU presets, off in ``reference``: the published model has no
    # such path.
    linear_shortcut: bool = False

    def __post_init__(self) -> None:
        if len(self.channel_multipliers) < 2:
            raise VAEConfigError(
                f"TemporalConfig.channel_multipliers needs >= 2 levels (one temporal downsample "
                f"between each); got {self.channel_multipliers}"
            )
        if self.num_res_blocks < 1 or self.filters < 1 or self.latent_channels < 1:
            raise VAEConfigError(
                "TemporalConfig.num_res_blocks, filters and latent_channels must be >= 1; got "
                f"{self.num_res_blocks}, {self.filters}, {self.latent_channels}"
            )
        widths = tuple(self.filters * m for m in self.channel_multipliers)
        _check_groups("TemporalConfig.norm_groups", widths, self.norm_groups)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)


@dataclass(frozen=True, kw_only=True)
class VAEConfig:
    """The whole codec: both stages plus the chunk sizes used by encode/decode.

    ``encode_chunk_frames`` (pixel frames) must be a multiple of the temporal group size so
    chunks fall on group boundaries; ``decode_chunk_latents`` counts latent frames;
    ``frame_batch`` frames go through the spatial stage at once.
    """

    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    encode_chunk_frames: int = 48
    decode_chunk_latents: int = 6
    frame_batch: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.spatial, dict):
            object.__setattr__(self, "spatial", SpatialConfig(**_tuples(self.spatial)))
        if isinstance(self.temporal, dict):
            object.__setattr__(self, "temporal", TemporalConfig(**_tuples(self.temporal)))
        if self.temporal.in_channels != self.spatial.feature_channels:
            raise VAEConfigError(
                f"VAEConfig: temporal.in_channels={self.temporal.in_channels} must equal "
                f"spatial.block_out_channels[-1]={self.spatial.feature_channels}"
            )
        group = self.temporal.downsample
        if self.encode_chunk_frames < group or self.encode_chunk_frames % group:
            raise VAEConfigError(
                f"VAEConfig.encode_chunk_frames={self.encode_chunk_frames} must be a positive "
                f"multiple of the temporal group size {group}"
            )
        for name in ("decode_chunk_latents", "frame_batch"):
            if getattr(self, name) < 1:
                raise VAEConfigError(f"VAEConfig.{name} must be >= 1; got {getattr(self, name)}")

    @property
    def group_frames(self) -> int:
        """Pixel frames per latent frame (8 in the reference)."""
        return self.temporal.downsample

    @property
    def latent_channels(self) -> int:
        return self.temporal.latent_channels

    @property
    def spatial_downsample(self) -> int:
        return self.spatial.downsample

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise VAEConfigError(
                f"VAEConfig.from_dict: unknown fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


CONFIGS: dict[str, VAEConfig] = {
    # The published MUG-V VAE: SDXL-VAE spatial stage + 128-filter temporal stage, 24 channels.
    "reference": VAEConfig(),
    # Trains on a CPU in minutes on the synthetic world (64x64, 16-frame clips); same 8x8x8 shape.
    "small": VAEConfig(
        spatial=SpatialConfig(
            block_out_channels=(16, 32, 64, 64),
            layers_per_block=1,
            norm_groups=8,
            mid_attention=False,
            scaling_factor=1.0,
        ),
        temporal=TemporalConfig(
            in_channels=64,
            filters=32,
            num_res_blocks=1,
            channel_multipliers=(1, 2, 2, 2),
            norm_groups=8,
            linear_shortcut=True,
        ),
    ),
    # Unit tests: a few thousand parameters, 16-32 px inputs.
    "tiny": VAEConfig(
        spatial=SpatialConfig(
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            norm_groups=4,
            scaling_factor=1.0,
        ),
        temporal=TemporalConfig(
            in_channels=16,
            latent_channels=4,
            filters=8,
            num_res_blocks=1,
            channel_multipliers=(1, 2, 2, 2),
            norm_groups=4,
            linear_shortcut=True,
        ),
        encode_chunk_frames=16,
        decode_chunk_latents=2,
    ),
}
# `small` with a 16-channel spatial bottleneck: the temporal stage has 8 x 16 instead of 8 x 64
# values per position to compress and learns faster on a CPU (world benchmark, two stages,
# 1,000 + 700 steps: 23.4 dB, oracle motion 100%, attributes 84%). The demo's preset.
CONFIGS["narrow"] = dataclasses.replace(
    CONFIGS["small"],
    spatial=dataclasses.replace(CONFIGS["small"].spatial, block_out_channels=(16, 32, 64, 16)),
    temporal=dataclasses.replace(CONFIGS["small"].temporal, in_channels=16),
)
# `narrow` with 4x spatial downsampling and 6 channels: the same 1,536 numbers per latent frame
# of a 64x64 clip (16 x 16 x 6 instead of 8 x 8 x 24), laid out in space instead of channels.
# At 8x an object of the synthetic world is 1.6-2.6 latent pixels wide and its shape lives in
# the mix of 24 channels; at 4x it is 3-5 pixels wide and its outline is a spatial pattern. A
# tiny MUGDiT (patch (1, 4, 4), so a token still holds 96 numbers) draws the right colour and
# shape about twice as often on it (docs/packages/dit-generation.md, "A 4x latent"). The demo's
# preset; the published 8x8x8 shape stays in `reference`, `small` and `narrow`.
CONFIGS["narrow4x"] = dataclasses.replace(
    CONFIGS["narrow"],
    spatial=dataclasses.replace(CONFIGS["narrow"].spatial, block_out_channels=(16, 32, 16)),
    temporal=dataclasses.replace(CONFIGS["narrow"].temporal, latent_channels=6),
)

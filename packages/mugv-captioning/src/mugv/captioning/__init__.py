"""mugv.captioning: TSG, scene graph to caption."""

from mugv.captioning._errors import (
    CaptioningError,
    ConfigError,
    GraphError,
    MetricError,
    VocabularyError,
)
from mugv.captioning.vocab import Vocabulary

__version__ = "0.1.0"

__all__ = [
    "CaptioningError",
    "ConfigError",
    "GraphError",
    "MetricError",
    "Vocabulary",
    "VocabularyError",
    "__version__",
]

"""mugv.captioning: TSG, scene graph to caption."""

from mugv.captioning._errors import (
    CaptioningError,
    ConfigError,
    GraphError,
    MetricError,
    VocabularyError,
)
from mugv.captioning.analysis import routing_by_word_class
from mugv.captioning.captioner import TSGCaptioner
from mugv.captioning.data import (
    CaptionBatch,
    CaptionCollator,
    CaptionExample,
    build_vocabularies,
    paired_examples,
    world_examples,
)
from mugv.captioning.decoder import MoEDecoder
from mugv.captioning.decoding import Decoded, beam_search, greedy, sample
from mugv.captioning.encoder import GraphEncoder, Memories
from mugv.captioning.graph import GraphBatch, collate_graphs
from mugv.captioning.model import CONFIGS, TSG, TSGConfig, tsg_config
from mugv.captioning.oracle_graph import oracle_scene_graph
from mugv.captioning.training import noam_lambda, scst_loss, xe_loss
from mugv.captioning.vocab import Vocabulary

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "TSG",
    "CaptionBatch",
    "CaptionCollator",
    "CaptionExample",
    "CaptioningError",
    "ConfigError",
    "Decoded",
    "GraphBatch",
    "GraphEncoder",
    "GraphError",
    "Memories",
    "MetricError",
    "MoEDecoder",
    "TSGCaptioner",
    "TSGConfig",
    "Vocabulary",
    "VocabularyError",
    "__version__",
    "beam_search",
    "build_vocabularies",
    "collate_graphs",
    "greedy",
    "noam_lambda",
    "oracle_scene_graph",
    "paired_examples",
    "routing_by_word_class",
    "sample",
    "scst_loss",
    "tsg_config",
    "world_examples",
    "xe_loss",
]

"""mugv.retrieval: TW-BERT, trajectory-word alignment for retrieval and QA."""

from mugv.retrieval._errors import ConfigError, InputError, RetrievalError
from mugv.retrieval.config import CONFIGS, TWBertConfig, VideoEncoderConfig, base, small, tiny
from mugv.retrieval.cross_modal import CrossModalEncoder, CrossOutput
from mugv.retrieval.datasets import QASet, RetrievalSet, qa_set, retrieval_set
from mugv.retrieval.frame_selector import FrameSelector
from mugv.retrieval.model import TWBert
from mugv.retrieval.objectives import LossWeights, TWBertObjective, qa_loss
from mugv.retrieval.preprocess import clip_to_tensor, clips_to_tensor
from mugv.retrieval.retrieval import (
    TextIndex,
    VideoIndex,
    embed_texts,
    embed_videos,
    evaluate_retrieval,
    rerank_scores,
    retrieval_metrics,
)
from mugv.retrieval.scorer import TWBertScorer
from mugv.retrieval.search import SearchHit, VideoLibrary
from mugv.retrieval.video_encoder import VideoEncoder, VideoFeatures

__version__ = "0.1.0"

__all__ = [
    "CONFIGS",
    "ConfigError",
    "CrossModalEncoder",
    "CrossOutput",
    "FrameSelector",
    "InputError",
    "LossWeights",
    "QASet",
    "RetrievalError",
    "RetrievalSet",
    "SearchHit",
    "TWBert",
    "TWBertConfig",
    "TWBertObjective",
    "TWBertScorer",
    "TextIndex",
    "VideoEncoder",
    "VideoEncoderConfig",
    "VideoFeatures",
    "VideoIndex",
    "VideoLibrary",
    "__version__",
    "base",
    "clip_to_tensor",
    "clips_to_tensor",
    "embed_texts",
    "embed_videos",
    "evaluate_retrieval",
    "qa_loss",
    "qa_set",
    "rerank_scores",
    "retrieval_metrics",
    "retrieval_set",
    "small",
    "tiny",
]

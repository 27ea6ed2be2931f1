"""`TWBertScorer`: the stack's `VideoTextScorer` (curation filtering, evaluation of outputs).

The score of a (clip, text) pair is the probability of "match" from the VTM head, in [0, 1];
`mode="contrastive"` gives the cosine similarity of the contrastive embeddings instead
(cheaper, no cross-modal pass). A bad item (unreadable clip or file, empty text) becomes NaN
with a logged warning that names it; the batch always completes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mugv.data import VideoClip
from mugv.retrieval._errors import ConfigError, InputError
from mugv.retrieval.model import TWBert
from mugv.retrieval.preprocess import clip_to_tensor
from mugv.retrieval.search import read_clip_tensor

logger = logging.getLogger(__name__)


class TWBertScorer:
    """Implements `mugv.data.VideoTextScorer` with a trained `TWBert`."""

    def __init__(self, model: TWBert, *, mode: str = "vtm", batch_size: int = 32) -> None:
        if mode not in ("vtm", "contrastive"):
            raise ConfigError(f"TWBertScorer mode must be 'vtm' or 'contrastive'; got {mode!r}")
        self.model = model.eval()
        self.mode = mode
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kwargs: Any) -> TWBertScorer:
        return cls(TWBert.from_pretrained(folder), **kwargs)

    def score(self, clips: Sequence[VideoClip], texts: Sequence[str]) -> np.ndarray:
        """(N,) float scores of clip i against text i; NaN for an item that failed."""
        v = self.model.config.video
        return self._score(clips, texts, lambda c: clip_to_tensor(c, v.num_frames, v.image_size))

    def score_files(self, paths: Sequence[str | Path], texts: Sequence[str]) -> np.ndarray:
        """Like `score` for video files; an unreadable file scores NaN with a warning."""
        return self._score(paths, texts, lambda p: read_clip_tensor(self.model, p))

    @torch.no_grad()
    def _score(
        self, items: Sequence[Any], texts: Sequence[str], load: Callable[[Any], torch.Tensor]
    ) -> np.ndarray:
        if len(items) != len(texts):
            raise InputError(
                f"score() needs one text per clip; got {len(items)} clips and {len(texts)} texts"
            )
        out = np.full(len(items), np.nan, dtype=np.float64)
        good, frames = [], []
        for i, (item, text) in enumerate(zip(items, texts)):
            try:
                if not isinstance(text, str) or not text.strip():
                    raise InputError(f"text {text!r} is empty; give the clip a caption")
                frames.append(load(item))
                good.append(i)
            except InputError as err:
                logger.warning("item %d not scored (NaN): %s", i, err)
        model = self.model
        for start in range(0, len(good), self.batch_size):
            idx = good[start : start + self.batch_size]
            ids, mask = model.tokenize([texts[i] for i in idx])
            video = model.encode_video(torch.stack(frames[start : start + self.batch_size]))
            states = model.encode_text(ids, mask)
            if self.mode == "contrastive":
                s = (model.text_embed(states, mask) * model.video_embed(video)).sum(dim=-1)
            else:
                s = model.vtm_logits(model.fuse(states, mask, video)).softmax(dim=-1)[:, 1]
            out[idx] = s.double().numpy()
        return out

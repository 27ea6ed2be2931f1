"""Text-to-video search over video files: embed a folder once, query it many times.

Files are decoded with `mugv.data.video.read_video` at the model's frame count and size; a
file that cannot be read is skipped with a logged warning and listed in `skipped`, so one bad
file never stops the indexing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mugv.data import DataError
from mugv.data.video import read_video
from mugv.retrieval._errors import InputError
from mugv.retrieval.model import TWBert
from mugv.retrieval.preprocess import clip_to_tensor
from mugv.retrieval.retrieval import VideoIndex, embed_texts, embed_videos, vtm_scores

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def read_clip_tensor(model: TWBert, path: str | Path) -> torch.Tensor:
    """One file -> (T, 3, S, S) model input; raises `InputError` naming the file."""
    v = model.config.video
    try:
        clip = read_video(path, num_frames=v.num_frames)
    except (DataError, ValueError, OSError) as err:
        raise InputError(f"{path}: cannot read the video ({err}); re-encode or drop it") from err
    return clip_to_tensor(clip, v.num_frames, v.image_size)


@dataclass
class SearchHit:
    path: str
    score: float  # VTM margin + cosine similarity for re-ranked hits, cosine otherwise


@dataclass
class VideoLibrary:
    """Embedded videos of a set of files, searchable by text."""

    model: TWBert
    paths: list[str]
    index: VideoIndex
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, model: TWBert, paths: Sequence[str | Path], *, batch_size: int = 32
    ) -> VideoLibrary:
        good, frames, skipped = [], [], {}
        for path in paths:
            try:
                frames.append(read_clip_tensor(model, path))
                good.append(str(path))
            except InputError as err:
                logger.warning("skipping %s", err)
                skipped[str(path)] = str(err)
        if not good:
            raise InputError(f"none of the {len(paths)} videos could be read: {skipped}")
        index = embed_videos(model, torch.stack(frames), batch_size=batch_size)
        return cls(model=model, paths=good, index=index, skipped=skipped)

    @classmethod
    def from_folder(cls, model: TWBert, folder: str | Path, **kwargs) -> VideoLibrary:
        folder = Path(folder)
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise InputError(f"{folder} holds no video files ({', '.join(VIDEO_SUFFIXES)})")
        return cls.build(model, paths, **kwargs)

    @torch.no_grad()
    def search(self, query: str, *, k: int = 10, rerank: int = 16) -> list[SearchHit]:
        """The k best videos for `query`: contrastive top-`rerank`, re-scored by VTM."""
        texts = embed_texts(self.model, [query])
        sim = (texts.embeds @ self.index.embeds.T)[0]  # (N,)
        scores = sim.double() - 1e4
        top = sim.topk(min(rerank, len(self.paths))).indices
        if len(top):
            margin = vtm_scores(self.model, texts, self.index, torch.zeros_like(top), top)
            scores[top] = (margin + sim[top]).double()
        best = scores.topk(min(k, len(self.paths))).indices.tolist()
        return [SearchHit(self.paths[i], float(scores[i])) for i in best]

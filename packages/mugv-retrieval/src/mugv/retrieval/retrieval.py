"""Retrieval inference (Sec. 4): embed once, contrastive top-k, VTM re-rank, rank metrics.

Videos and texts are embedded once, in batches. The contrastive similarity is computed in
chunks of texts; for each text the top-k videos (and for each video the top-k texts) are
re-scored by the cross-modal encoder's matching head, in batches of pairs. Re-ranked items
sit above the rest, which keep their contrastive order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mugv.retrieval.model import TWBert
from mugv.retrieval.video_encoder import VideoFeatures

RERANK_OFFSET = 1e4  # lifts re-ranked candidates above every non-candidate


@dataclass
class VideoIndex:
    """Videos embedded once: contrastive embeddings plus the features VTM re-ranking needs."""

    embeds: torch.Tensor  # (N, E) L2-normalised
    patches: torch.Tensor  # (N, T, Np, D) video-encoder output
    frame_cls: torch.Tensor  # (N, T, D)

    def __len__(self) -> int:
        return self.embeds.shape[0]

    def features(self, index: torch.Tensor) -> VideoFeatures:
        return VideoFeatures(patches=self.patches[index], frame_cls=self.frame_cls[index])


@dataclass
class TextIndex:
    """Texts embedded once: contrastive embeddings plus text-encoder states for VTM."""

    embeds: torch.Tensor  # (M, E)
    states: torch.Tensor  # (M, L, C)
    mask: torch.Tensor  # (M, L)

    def __len__(self) -> int:
        return self.embeds.shape[0]


@torch.no_grad()
def embed_videos(model: TWBert, frames: torch.Tensor, *, batch_size: int = 64) -> VideoIndex:
    """frames (N, T, 3, H, W), preprocessed as by `clips_to_tensor`."""
    model.eval()
    embeds, patches, cls = [], [], []
    for start in range(0, frames.shape[0], batch_size):
        video = model.encode_video(frames[start : start + batch_size])
        embeds.append(model.video_embed(video))
        patches.append(video.patches)
        cls.append(video.frame_cls)
    return VideoIndex(torch.cat(embeds), torch.cat(patches), torch.cat(cls))


@torch.no_grad()
def embed_texts(model: TWBert, texts: Sequence[str], *, batch_size: int = 256) -> TextIndex:
    """Tokenised to one common length so that the states stack."""
    model.eval()
    ids, mask = model.tokenize(texts)
    embeds, states = [], []
    for start in range(0, ids.shape[0], batch_size):
        m = mask[start : start + batch_size]
        s = model.encode_text(ids[start : start + batch_size], m)
        embeds.append(model.text_embed(s, m))
        states.append(s)
    return TextIndex(torch.cat(embeds), torch.cat(states), mask)


@torch.no_grad()
def vtm_scores(
    model: TWBert,
    texts: TextIndex,
    videos: VideoIndex,
    text_idx: torch.Tensor,
    video_idx: torch.Tensor,
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Matching logit margin (match - no match) of each (text_idx[p], video_idx[p]) pair."""
    model.eval()
    out = []
    for start in range(0, text_idx.shape[0], batch_size):
        ti, vi = text_idx[start : start + batch_size], video_idx[start : start + batch_size]
        cross = model.fuse(texts.states[ti], texts.mask[ti], videos.features(vi))
        logits = model.vtm_logits(cross)
        out.append(logits[:, 1] - logits[:, 0])
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def contrastive_similarity(
    texts: TextIndex, videos: VideoIndex, *, chunk: int = 1024
) -> torch.Tensor:
    """(M, N) cosine similarities, computed chunk by chunk of texts."""
    sim = torch.empty(len(texts), len(videos))
    for start in range(0, len(texts), chunk):
        sim[start : start + chunk] = texts.embeds[start : start + chunk] @ videos.embeds.T
    return sim


@torch.no_grad()
def rerank_scores(
    model: TWBert,
    texts: TextIndex,
    videos: VideoIndex,
    *,
    k: int = 16,
    batch_size: int = 256,
    chunk: int = 1024,
    directions: tuple[str, ...] = ("t2v", "v2t"),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Final scores (M, N) for text->video and (N, M) for video->text ranking.

    k = 0 gives the contrastive ranking alone. Each direction named in `directions` re-scores
    its own top-k; the others keep the contrastive order (e.g. `directions=("t2v",)` when only
    text queries matter: the v2t re-ranking of M texts costs N * k matching passes).
    """
    sim = contrastive_similarity(texts, videos, chunk=chunk)  # (M, N)
    results = []
    for direction, scores in enumerate((sim, sim.T.contiguous())):  # queries x gallery
        final = scores.double() - RERANK_OFFSET  # float64 keeps the contrastive order exact
        kk = min(k, scores.shape[1]) if ("t2v", "v2t")[direction] in directions else 0
        if kk:
            top = scores.topk(kk, dim=1).indices  # (Q, k)
            queries = torch.arange(scores.shape[0])[:, None].expand_as(top)
            q, g = queries.flatten(), top.flatten()
            ti, vi = (q, g) if direction == 0 else (g, q)
            margin = vtm_scores(model, texts, videos, ti, vi, batch_size=batch_size)
            final[q, g] = (margin + scores[q, g]).double()
        results.append(final)
    return results[0], results[1]


def ranks(scores: np.ndarray | torch.Tensor, targets: Sequence[Sequence[int]]) -> np.ndarray:
    """1-based rank of the best-ranked correct gallery item of each query (row of `scores`)."""
    scores = torch.as_tensor(scores)
    order = scores.argsort(dim=1, descending=True, stable=True)  # (Q, G)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return np.array([int(position[i, list(t)].min()) + 1 for i, t in enumerate(targets)])


def rank_metrics(r: np.ndarray) -> dict[str, float]:
    """R@1/5/10 in percent, median rank and mean rank."""
    return {
        "R@1": float(100 * np.mean(r <= 1)),
        "R@5": float(100 * np.mean(r <= 5)),
        "R@10": float(100 * np.mean(r <= 10)),
        "MdR": float(np.median(r)),
        "MnR": float(np.mean(r)),
    }


def retrieval_metrics(
    t2v: torch.Tensor, v2t: torch.Tensor, text_to_video: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Metrics of both directions; text i describes video `text_to_video[i]`."""
    n_videos = t2v.shape[1]
    texts_of: list[list[int]] = [[] for _ in range(n_videos)]
    for i, j in enumerate(text_to_video):
        texts_of[j].append(i)
    with_text = [j for j in range(n_videos) if texts_of[j]]
    return {
        "t2v": rank_metrics(ranks(t2v, [[j] for j in text_to_video])),
        "v2t": rank_metrics(ranks(v2t[with_text], [texts_of[j] for j in with_text])),
    }


def evaluate_retrieval(
    model: TWBert,
    frames: torch.Tensor,
    texts: Sequence[str],
    text_to_video: Sequence[int],
    *,
    k: int = 16,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """Embed once, rank both directions with top-k VTM re-ranking, return the metrics."""
    videos = embed_videos(model, frames, batch_size=batch_size)
    text_index = embed_texts(model, texts)
    t2v, v2t = rerank_scores(model, text_index, videos, k=k, batch_size=4 * batch_size)
    return retrieval_metrics(t2v, v2t, text_to_video)

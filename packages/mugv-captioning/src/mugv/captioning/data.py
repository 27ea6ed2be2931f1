"""Captioning examples (scene graph + reference captions), vocabularies and batches.

Sources: the synthetic world (:func:`world_examples`) or any list of :class:`CaptionExample`
built from real data (COCO captions paired with Visual Genome / SGAE scene graphs read by
``mugv.data.formats``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mugv.captioning._errors import GraphError
from mugv.captioning.graph import GraphBatch, collate_graphs, graph_tokens
from mugv.captioning.metrics import ptb_tokenize
from mugv.captioning.vocab import Vocabulary
from mugv.data import SceneGraph

logger = logging.getLogger(__name__)


@dataclass
class CaptionExample:
    key: str
    graph: SceneGraph
    captions: list[str]


@dataclass
class CaptionBatch:
    keys: list[str]
    graphs: GraphBatch
    tokens: (
        torch.Tensor
    )  # (B, L+1) long: <bos> w1 .. wn <eos> <pad>..; input [:, :-1], target [:, 1:]
    references: list[list[str]]  # PTB-tokenised reference captions per row ("tok tok ...")

    def to(self, device: torch.device | str) -> CaptionBatch:
        return CaptionBatch(
            self.keys, self.graphs.to(device), self.tokens.to(device), self.references
        )


def world_examples(world: object, split: str, limit: int | None = None) -> list[CaptionExample]:
    """The first ``limit`` samples (all by default) of a ``mugv.data.world.SyntheticWorld`` split."""
    n = world.size(split) if limit is None else min(limit, world.size(split))
    out = []
    for i in range(n):
        s = world.sample(split, i)
        if s.scene_graph is None:
            raise GraphError(f"world sample {s.key} has no scene graph")
        out.append(CaptionExample(s.key, s.scene_graph, list(s.captions)))
    return out


def paired_examples(
    captions: Sequence[object], graphs: Sequence[object], *, split: str | None = None
) -> list[CaptionExample]:
    """Join caption records and scene-graph records (``mugv.data.formats``) on their key.

    ``captions``: ``CaptionRecord``s from ``load_karpathy`` / ``load_coco_captions``;
    ``graphs``: ``SceneGraphRecord``s from ``load_visual_genome`` / ``load_sgae``. ``split``
    keeps only records of that Karpathy split ("train", "restval", "val", "test"). Images
    without a scene graph are skipped (and counted in the log).
    """
    by_key = {g.key: g.scene_graph for g in graphs}
    out, missing = [], 0
    for rec in captions:
        if split is not None and rec.split != split:
            continue
        if rec.key not in by_key:
            missing += 1
            continue
        out.append(CaptionExample(rec.key, by_key[rec.key], list(rec.captions)))
    if missing:
        logger.warning("%d caption records have no scene graph and were skipped", missing)
    if not out:
        raise GraphError(
            f"no caption record (split={split!r}) shares its key with a scene graph; check that "
            "both files index the same images (COCO/VG image ids)"
        )
    return out


def build_vocabularies(
    examples: Sequence[CaptionExample], *, min_word_freq: int = 1, min_label_freq: int = 1
) -> tuple[Vocabulary, Vocabulary]:
    """(word vocabulary over PTB-tokenised captions, label vocabulary over graph labels)."""
    words = Vocabulary.build(
        (ptb_tokenize(c) for ex in examples for c in ex.captions), min_freq=min_word_freq
    )
    labels = Vocabulary.build(
        (t for ex in examples for t in graph_tokens(ex.graph)), min_freq=min_label_freq
    )
    return words, labels


class CaptionCollator:
    """Examples -> :class:`CaptionBatch`; each row takes one caption (random, or ``caption_index``)."""

    def __init__(
        self,
        words: Vocabulary,
        labels: Vocabulary,
        *,
        max_length: int = 20,
        feature_dim: int | None = None,
        seed: int = 0,
    ) -> None:
        self.words, self.labels = words, labels
        self.max_length, self.feature_dim = max_length, feature_dim
        self.rng = random.Random(seed)

    def __call__(
        self, examples: Sequence[CaptionExample], rng: random.Random | None = None
    ) -> CaptionBatch:
        """``rng`` picks the captions (default: the collator's own stream)."""
        rng = rng or self.rng
        graphs = collate_graphs(
            [e.graph for e in examples], self.labels, feature_dim=self.feature_dim
        )
        refs = [[" ".join(ptb_tokenize(c)) for c in e.captions] for e in examples]
        rows = []
        for e, r in zip(examples, refs):
            if not r:
                raise GraphError(f"example {e.key} has no reference captions to train on")
            ids = self.words.encode(rng.choice(r).split())[: self.max_length - 1]
            rows.append([Vocabulary.bos_id, *ids, Vocabulary.eos_id])
        tokens = torch.full((len(rows), max(map(len, rows))), Vocabulary.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
        return CaptionBatch([e.key for e in examples], graphs, tokens, refs)

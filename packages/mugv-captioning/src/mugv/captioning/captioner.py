"""The curation pipeline's captioner: clip -> scene graph -> TSG caption (``mugv.data.Captioner``).

The scene graph comes from any callable ``clip -> SceneGraph``; for the synthetic world it is the
oracle parser (:func:`mugv.captioning.oracle_graph.oracle_scene_graph`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from mugv.captioning._errors import ConfigError
from mugv.captioning.decoding import beam_search, greedy
from mugv.captioning.graph import collate_graphs
from mugv.captioning.model import TSG
from mugv.captioning.vocab import Vocabulary
from mugv.data import SceneGraph, VideoClip

logger = logging.getLogger(__name__)

GraphSource = Callable[[VideoClip], SceneGraph]


class TSGCaptioner:
    """A trained TSG with its two vocabularies; ``caption(clips)`` satisfies ``Captioner``.

    ``beam_size=1`` decodes greedily; graphs are captioned in batches of ``batch_size``.
    """

    def __init__(
        self,
        model: TSG,
        words: Vocabulary,
        labels: Vocabulary,
        *,
        graph_source: GraphSource | None = None,
        beam_size: int = 5,
        length_penalty: float = 0.6,
        batch_size: int = 32,
    ) -> None:
        if model.config.vocab_size != len(words) or model.config.num_labels != len(labels):
            raise ConfigError(
                f"model expects {model.config.vocab_size} words / {model.config.num_labels} labels "
                f"but the vocabularies hold {len(words)} / {len(labels)}; load the vocabularies "
                "saved with this model"
            )
        self.model = model.eval()
        self.words, self.labels = words, labels
        self.graph_source = graph_source
        self.beam_size, self.length_penalty, self.batch_size = beam_size, length_penalty, batch_size

    @torch.no_grad()
    def caption_graphs(self, graphs: Sequence[SceneGraph]) -> list[str]:
        out: list[str] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(graphs), self.batch_size):
            batch = collate_graphs(
                graphs[start : start + self.batch_size],
                self.labels,
                feature_dim=self.model.config.feature_dim,
            ).to(device)
            if self.beam_size == 1:
                decoded = greedy(self.model, batch)
            else:
                decoded = beam_search(
                    self.model, batch, beam_size=self.beam_size, length_penalty=self.length_penalty
                )
            out += [" ".join(self.words.decode(t.tolist())) for t in decoded.tokens]
        return out

    def caption(self, clips: Sequence[VideoClip]) -> list[str]:
        if self.graph_source is None:
            raise ConfigError(
                "TSGCaptioner.caption needs graph_source (clip -> SceneGraph), e.g. "
                "mugv.captioning.oracle_scene_graph for the synthetic world; or call caption_graphs"
            )
        return self.caption_graphs([self.graph_source(c) for c in clips])

    def save(self, path: str | Path) -> None:
        """Model (safetensors + config.json) and ``words.json`` / ``labels.json`` in ``path``."""
        path = Path(path)
        self.model.save_pretrained(path)
        self.words.save(path / "words.json")
        self.labels.save(path / "labels.json")

    @classmethod
    def load(cls, path: str | Path, **kwargs: object) -> TSGCaptioner:
        path = Path(path)
        return cls(
            TSG.from_pretrained(path),
            Vocabulary.load(path / "words.json"),
            Vocabulary.load(path / "labels.json"),
            **kwargs,
        )

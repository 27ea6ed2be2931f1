"""TSGCaptioner (the curation pipeline's Captioner) and the routing analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import toy_examples

from mugv.captioning import ConfigError, TSGCaptioner, Vocabulary
from mugv.captioning.analysis import routing_by_word_class
from mugv.captioning.data import build_vocabularies
from mugv.captioning.decoding import greedy
from mugv.captioning.graph import collate_graphs
from mugv.captioning.model import TSG, tsg_config
from mugv.data import Captioner, SceneGraph, SceneObject, VideoClip


@pytest.fixture
def captioner() -> TSGCaptioner:
    torch.manual_seed(0)
    words, labels = build_vocabularies(toy_examples(8))
    model = TSG(tsg_config("tiny", vocab_size=len(words), num_labels=len(labels), max_length=8))

    def graph_of(clip: VideoClip) -> SceneGraph:  # a stand-in scene-graph source
        return SceneGraph([SceneObject(1, "circle", ["red" if clip.frames.mean() > 0 else "blue"])])

    return TSGCaptioner(model, words, labels, graph_source=graph_of, beam_size=3)


def test_captioner_protocol_batches_and_roundtrip(captioner, tmp_path):
    assert isinstance(captioner, Captioner)
    clips = [VideoClip(np.full((2, 8, 8, 3), v, np.uint8), fps=4) for v in (0, 9, 0)]
    caps = captioner.caption(clips)
    assert len(caps) == 3 and caps[0] == caps[2] and all(isinstance(c, str) for c in caps)
    captioner.batch_size = 2
    assert captioner.caption(clips) == caps
    captioner.save(tmp_path)
    again = TSGCaptioner.load(tmp_path, graph_source=captioner.graph_source, beam_size=3)
    assert again.caption(clips) == caps
    assert again.caption_graphs([SceneGraph(objects=[])])  # empty graph: documented fallback


def test_captioner_errors(captioner):
    with pytest.raises(ConfigError, match="vocabularies"):
        TSGCaptioner(captioner.model, Vocabulary.build([["x"]]), captioner.labels)
    bare = TSGCaptioner(captioner.model, captioner.words, captioner.labels)
    with pytest.raises(ConfigError, match="graph_source"):
        bare.caption([VideoClip(np.zeros((1, 4, 4, 3), np.uint8), fps=1)])


def test_routing_by_word_class(captioner):
    batch = collate_graphs([e.graph for e in toy_examples(4)], captioner.labels)
    decoded = greedy(captioner.model, batch)
    classes = dict.fromkeys(captioner.words.itos, "word")
    stats = routing_by_word_class(decoded, captioner.words, classes)
    n_words = int(decoded.lengths().sum())
    assert stats["word"]["count"] == n_words
    total = stats["word"]["object"] + stats["word"]["attribute"] + stats["word"]["relation"]
    assert total == pytest.approx(1.0, abs=1e-5)

"""Data sources: Karpathy + Visual Genome files through mugv.data.formats, the synthetic world,
vocabularies, and the oracle's scene graphs against the world's ground truth."""

from __future__ import annotations

import json

import pytest

from mugv.captioning import GraphError, Vocabulary, VocabularyError
from mugv.captioning.data import (
    CaptionCollator,
    build_vocabularies,
    paired_examples,
    world_examples,
)


def test_karpathy_and_visual_genome_pairing(tmp_path):
    from mugv.data.formats import load_karpathy, load_visual_genome

    images = [
        {
            "filepath": "val2014",
            "filename": f"{i}.jpg",
            "imgid": i,
            "cocoid": 100 + i,
            "split": split,
            "sentids": [i],
            "sentences": [{"tokens": ["a", "dog"], "raw": "A dog.", "imgid": i, "sentid": i}],
        }
        for i, split in enumerate(["train", "test", "train"])
    ]
    (tmp_path / "karpathy.json").write_text(json.dumps({"images": images}))
    graphs = [
        {
            "image_id": 100 + i,
            "objects": [
                {
                    "object_id": 1,
                    "x": 0,
                    "y": 0,
                    "w": 5,
                    "h": 5,
                    "names": ["dog"],
                    "attributes": ["brown"],
                },
                {"object_id": 2, "x": 5, "y": 0, "w": 5, "h": 5, "names": ["grass"]},
            ],
            "relationships": [
                {"relationship_id": 9, "predicate": "on", "subject_id": 1, "object_id": 2}
            ],
        }
        for i in (0, 1)
    ]
    (tmp_path / "vg.json").write_text(json.dumps(graphs))
    caps, sgs = load_karpathy(tmp_path / "karpathy.json"), load_visual_genome(tmp_path / "vg.json")
    train = paired_examples(caps, sgs, split="train")  # image 102 has no graph: skipped
    assert [e.key for e in train] == ["100"] and train[0].captions == ["A dog."]
    assert train[0].graph.relations[0].predicate == "on"
    with pytest.raises(GraphError, match="shares its key"):
        paired_examples(caps, sgs, split="restval")


def test_world_examples_vocabularies_and_batches(tmp_path):
    from mugv.data.world import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(num_frames=1, height=16, width=16, seed=0))
    examples = world_examples(world, "train", limit=40)
    assert len(examples) == 40 and all(e.captions and e.graph.objects for e in examples)
    words, labels = build_vocabularies(examples, min_word_freq=2)
    assert ("circle" in words and "moving left" in labels) or "moving right" in labels
    rare = build_vocabularies(examples, min_word_freq=10_000)[0]
    assert len(rare) == 4  # only the specials survive an impossible threshold
    words.save(tmp_path / "w.json")
    assert Vocabulary.load(tmp_path / "w.json") == words
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(VocabularyError, match=r"Vocabulary\.save"):
        Vocabulary.load(tmp_path / "bad.json")
    batch = CaptionCollator(words, labels, max_length=12)(examples[:5])
    assert batch.tokens.shape[0] == 5 and batch.tokens.shape[1] <= 13
    assert (batch.tokens[:, 0] == Vocabulary.bos_id).all()
    assert len(batch.references) == 5 and all(batch.references)


def test_oracle_graph_matches_world_ground_truth():
    from mugv.captioning.oracle_graph import oracle_scene_graph
    from mugv.data.world import SyntheticWorld, WorldConfig

    inverse = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

    def canon(graph):
        node = {o.object_id: (o.name, tuple(o.attributes)) for o in graph.objects}
        rels = set()
        for r in graph.relations:
            a, b = node[r.subject], node[r.object]
            rels |= {(a, r.predicate, b), (b, inverse[r.predicate], a)}
        return sorted(node.values()), rels

    world = SyntheticWorld(WorldConfig(num_frames=9, height=48, width=48, fps=4, seed=1))
    hits = sum(
        canon(oracle_scene_graph(s.clip)) == canon(s.scene_graph)
        for s in (world.sample("test", i) for i in range(12))
    )
    assert hits >= 10

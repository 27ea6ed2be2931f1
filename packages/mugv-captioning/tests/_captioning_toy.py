"""A toy graph -> caption task (two coloured shapes and one relation) for the tests."""

from __future__ import annotations

import random

from mugv.captioning.data import CaptionExample
from mugv.data import Relation, SceneGraph, SceneObject

COLOURS, SHAPES, PREDS = ["red", "blue", "green"], ["circle", "square"], ["left of", "above"]


def toy_examples(n: int, seed: int = 0) -> list[CaptionExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        (c1, c2), (s1, s2), p = rng.sample(COLOURS, 2), rng.choices(SHAPES, k=2), rng.choice(PREDS)
        g = SceneGraph([SceneObject(1, s1, [c1]), SceneObject(2, s2, [c2])], [Relation(1, p, 2)])
        out.append(CaptionExample(f"toy{i}", g, [f"a {c1} {s1} {p} a {c2} {s2}."]))
    return out

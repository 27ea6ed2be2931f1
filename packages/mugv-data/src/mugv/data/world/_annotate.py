"""Ground truth derived from a `SceneSpec`: scene graph, trajectories and QA pairs."""

from __future__ import annotations

import numpy as np

from mugv.data._schema import QAPair, Relation, SceneGraph, SceneObject, Trajectory
from mugv.data.world._caption import NUMBER_WORDS, RELATION_PHRASES
from mugv.data.world._spec import COLOURS, INVERSE_PREDICATE, ObjectSpec, SceneSpec, speed_word


def motion_attributes(o: ObjectSpec) -> list[str]:
    """``["moving left", "fast"]`` or ``["static"]``."""
    return ["static"] if o.motion == "static" else [f"moving {o.motion}", speed_word(o.speed)]


def scene_graph(spec: SceneSpec, height: int, width: int) -> SceneGraph:
    """Objects named by shape with colour, size and motion attributes; box at the first frame;
    spatial relations that hold for the whole clip."""
    objects = [
        SceneObject(
            object_id=i,
            name=o.shape,
            attributes=[o.colour, o.size, *motion_attributes(o)],
            box=o.box(0.0, height, width),
        )
        for i, o in enumerate(spec.objects)
    ]
    relations = [Relation(i, p, j) for i, p, j in spec.relations()]
    return SceneGraph(objects=objects, relations=relations)


def trajectories(
    spec: SceneSpec, num_frames: int, height: int, width: int, fps: float
) -> list[Trajectory]:
    """Exact per-frame boxes ``(x, y, w, h)`` in pixels, one `Trajectory` per object."""
    return [
        Trajectory(
            object_id=i,
            boxes=np.array([o.box(t / fps, height, width) for t in range(num_frames)], np.float32),
            label=o.label,
        )
        for i, o in enumerate(spec.objects)
    ]


def _ref(
    spec: SceneSpec, i: int, keys: list[tuple[str, ...]], noun: str | None = None
) -> str | None:
    """The shortest description of object `i` by attributes `keys` that no other object shares."""
    o = spec.objects[i]
    for key in keys:
        mine = tuple(getattr(o, k) for k in key)
        if all(
            tuple(getattr(p, k) for k in key) != mine for j, p in enumerate(spec.objects) if j != i
        ):
            words = [getattr(o, k) for k in key if k != "shape"]
            return " ".join([*words, o.shape if "shape" in key else noun or "object"])
    return None


def qa_pairs(
    spec: SceneSpec, rng: np.random.Generator, *, with_motion: bool = True
) -> list[QAPair]:
    """Counting, colour, shape, size, motion and spatial questions with one-word answers."""
    objs = spec.objects
    qa = [QAPair("How many objects are there?", NUMBER_WORDS[len(objs)])]
    colour = COLOURS[rng.integers(len(COLOURS))]
    qa.append(
        QAPair(
            f"How many {colour} objects are there?",
            NUMBER_WORDS[sum(o.colour == colour for o in objs)],
        )
    )
    if with_motion:
        moving = sum(o.motion != "static" for o in objs)
        qa.append(QAPair("How many objects are moving?", NUMBER_WORDS[moving]))
    for i, o in enumerate(objs):
        ref = _ref(spec, i, [("shape",), ("size", "shape")])
        if ref:
            qa.append(QAPair(f"What colour is the {ref}?", o.colour))
        ref = _ref(spec, i, [("colour",), ("size", "colour")])
        if ref:
            qa.append(QAPair(f"What shape is the {ref}?", o.shape))
        ref = _ref(spec, i, [("shape",), ("colour", "shape")])
        if ref:
            qa.append(QAPair(f"What size is the {ref}?", o.size))
        full = _ref(spec, i, [("shape",), ("colour", "shape"), ("size", "colour", "shape")])
        if full and with_motion:
            qa.append(QAPair(f"Is the {full} moving?", "no" if o.motion == "static" else "yes"))
            if o.motion != "static":
                qa.append(QAPair(f"Which direction is the {full} moving?", o.motion))
    relations = spec.relations()
    if relations:
        i, p, j = relations[rng.integers(len(relations))]
        a = _ref(spec, i, [("shape",), ("colour", "shape"), ("size", "colour", "shape")])
        b = _ref(spec, j, [("shape",), ("colour", "shape"), ("size", "colour", "shape")])
        if a and b:
            yes = RELATION_PHRASES[p].removeprefix("is ")
            no = RELATION_PHRASES[INVERSE_PREDICATE[p]].removeprefix("is ")
            qa.append(QAPair(f"Is the {a} {yes} the {b}?", "yes"))
            qa.append(QAPair(f"Is the {a} {no} the {b}?", "no"))
    return qa

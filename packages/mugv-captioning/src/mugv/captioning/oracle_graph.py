"""Scene graphs parsed from synthetic-world clips by ``mugv.data.oracle`` (the curation path).

The graph mirrors the world's ground-truth graphs (``mugv.data.world``): objects named by shape
with ``[colour, size, "moving <dir>", <speed>]`` or ``[colour, size, "static"]`` attributes, and
the spatial relations (``left of``, ``right of``, ``above``, ``below``) that hold in every frame
in which both objects are seen. Speed is the detected centre travel per second, named by the
nearest of the world's speed categories.
"""

from __future__ import annotations

import numpy as np

from mugv.data import Relation, SceneGraph, SceneObject, VideoClip
from mugv.data.oracle import DetectedObject, Oracle
from mugv.data.world import SPEEDS


def _speed_word(detection: DetectedObject, clip: VideoClip) -> str:
    seconds = max(clip.num_frames - 1, 1) / clip.fps
    axis = 0 if detection.motion in ("left", "right") else 1
    speed = abs(detection.displacement[axis]) / seconds
    return min(SPEEDS, key=lambda k: abs(SPEEDS[k] - speed))


def _relation(a: np.ndarray, b: np.ndarray, height: int, width: int) -> str | None:
    """The predicate ``a -> b`` holding in every frame where both boxes are seen, else None."""
    centre = lambda boxes: np.stack(  # noqa: E731
        [(boxes[:, 0] + boxes[:, 2] / 2) / width, (boxes[:, 1] + boxes[:, 3] / 2) / height], -1
    )
    seen = ~(np.isnan(a).any(1) | np.isnan(b).any(1))
    if not seen.any():
        return None
    d = centre(b[seen]) - centre(a[seen])  # (T, 2)
    dx, dy = d[:, 0], d[:, 1]
    kinds = set()
    for x, y in zip(dx, dy):
        if abs(x) > abs(y):
            kinds.add("left of" if x > 0 else "right of")
        elif abs(y) > abs(x):
            kinds.add("above" if y > 0 else "below")
        else:
            return None
    return kinds.pop() if len(kinds) == 1 else None


def oracle_scene_graph(clip: VideoClip, oracle: Oracle | None = None) -> SceneGraph:
    """Parse ``clip`` with the world oracle (``mugv.data.oracle.Oracle``) into a scene graph."""
    found = (oracle or Oracle()).parse(clip.frames)
    objects = []
    for i, d in enumerate(found):
        motion = (
            ["static"] if d.motion == "static" else [f"moving {d.motion}", _speed_word(d, clip)]
        )
        objects.append(
            SceneObject(object_id=i, name=d.shape, attributes=[d.colour, d.size, *motion])
        )
    relations = []
    for i in range(len(found)):
        for j in range(i + 1, len(found)):
            pred = _relation(found[i].boxes, found[j].boxes, clip.height, clip.width)
            if pred is not None:
                relations.append(Relation(i, pred, j))
    return SceneGraph(objects=objects, relations=relations)

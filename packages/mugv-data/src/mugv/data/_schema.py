"""The sample schema every package of the stack exchanges, and the two model-facing protocols.

Boxes are ``(x, y, w, h)`` in pixels of the frame they belong to, origin at the top-left corner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mugv.data._errors import SchemaError

Box = tuple[float, float, float, float]


@dataclass
class VideoClip:
    """A clip of RGB frames: ``frames`` is uint8 ``(T, H, W, 3)``."""

    frames: np.ndarray
    fps: float
    source: str = ""
    span: tuple[float, float] | None = None  # (start, end) seconds in `source`
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            got = f"{type(f).__name__} {getattr(f, 'dtype', '?')} {getattr(f, 'shape', '?')}"
            raise SchemaError(
                f"VideoClip.frames must be a uint8 array of shape (T, H, W, 3); got {got}"
            )
        if f.shape[0] == 0:
            raise SchemaError(f"VideoClip.frames of {self.source or 'clip'} holds no frames")
        if not self.fps > 0:
            raise SchemaError(f"VideoClip.fps must be positive; got {self.fps!r}")

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])

    @property
    def duration(self) -> float:
        """Seconds covered by the frames."""
        return self.num_frames / self.fps


@dataclass
class SceneObject:
    """A node of a scene graph: a named object with attributes and, optionally, a region."""

    object_id: int
    name: str
    attributes: list[str] = field(default_factory=list)
    box: Box | None = None
    feature: np.ndarray | None = None  # region feature, (D,) float


@dataclass
class Relation:
    """A directed edge ``subject --predicate--> object`` between two object ids."""

    subject: int
    predicate: str
    object: int


@dataclass
class SceneGraph:
    """Objects with attributes plus subject-predicate-object relations (Visual Genome style)."""

    objects: list[SceneObject]
    relations: list[Relation] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [o.object_id for o in self.objects]
        if len(set(ids)) != len(ids):
            raise SchemaError(f"SceneGraph has repeated object ids: {sorted(ids)}")
        known = set(ids)
        for r in self.relations:
            for role in ("subject", "object"):
                if getattr(r, role) not in known:
                    raise SchemaError(
                        f"SceneGraph relation {r.subject}-{r.predicate}-{r.object}: {role} id "
                        f"{getattr(r, role)} is not among the object ids {sorted(known)}"
                    )

    def object(self, object_id: int) -> SceneObject:
        for o in self.objects:
            if o.object_id == object_id:
                return o
        raise KeyError(object_id)


@dataclass
class Trajectory:
    """One object's box in every frame of a clip: ``boxes`` is float32 ``(T, 4)`` (x, y, w, h)."""

    object_id: int
    boxes: np.ndarray
    label: str = ""

    def __post_init__(self) -> None:
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise SchemaError(
                f"Trajectory {self.object_id}: boxes must have shape (T, 4); got {self.boxes.shape}"
            )


@dataclass
class QAPair:
    question: str
    answer: str


@dataclass
class CaptionedClip:
    """A clip with everything the stack knows about it; `key` is unique within a dataset."""

    key: str
    clip: VideoClip
    captions: list[str] = field(default_factory=list)
    scene_graph: SceneGraph | None = None
    trajectories: list[Trajectory] = field(default_factory=list)
    qa: list[QAPair] = field(default_factory=list)


@runtime_checkable
class Captioner(Protocol):
    """Anything that writes one caption per clip (the curation pipeline calls it)."""

    def caption(self, clips: Sequence[VideoClip]) -> list[str]: ...


@runtime_checkable
class VideoTextScorer(Protocol):
    """Scores how well each text describes the clip at the same index (higher is better).

    Returns a float array of shape ``(len(clips),)``; an item that cannot be scored is NaN, so
    one bad clip never fails the batch.
    """

    def score(self, clips: Sequence[VideoClip], texts: Sequence[str]) -> np.ndarray: ...

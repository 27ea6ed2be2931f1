"""The vocabulary of the synthetic world and the resolution-independent scene specification.

A `SceneSpec` says what is in a clip, not how many pixels it has: positions are fractions of
the frame width/height, sizes fractions of the shorter side, speeds fractions of the frame per
second. The same spec therefore renders at 32x32 or 256x256 and at any fps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mugv.data._errors import DataError

# Six hues ~60 degrees apart (HSV, S=0.8, V=0.9): well separated after blur, noise and H.264.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 46, 46),
    "yellow": (230, 215, 46),
    "green": (61, 230, 46),
    "cyan": (46, 230, 215),
    "blue": (46, 92, 230),
    "purple": (184, 46, 230),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Side of the shape's (square) bounding box, as a fraction of the frame's shorter side.
SIZE_FRACTIONS: dict[str, float] = {"small": 0.2, "large": 0.32}
SIZES: tuple[str, ...] = tuple(SIZE_FRACTIONS)
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "static")
# Speeds in fractions of the frame per second; captions say "slowly"/"quickly".
SPEEDS: dict[str, float] = {"slow": 0.1, "fast": 0.2}
PREDICATES: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_PREDICATE = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
_VELOCITY = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


class WorldError(DataError, ValueError):
    """A world config, scene spec or prompt is invalid; the message names the field and the fix."""


def speed_word(speed: float) -> str:
    """The speed category ("slow"/"fast") nearest to `speed` (fraction of frame per second)."""
    return min(SPEEDS, key=lambda k: abs(SPEEDS[k] - speed))


@dataclass(frozen=True, kw_only=True)
class ObjectSpec:
    """One shape: attributes plus where it starts (`x`, `y`: centre, fractions of the frame)."""

    shape: str
    colour: str
    size: str
    motion: str = "static"
    speed: float = 0.0  # fraction of the frame (width for left/right, height for up/down) per s
    x: float = 0.5
    y: float = 0.5

    def __post_init__(self) -> None:
        for name, vocab in (
            ("shape", SHAPES),
            ("colour", COLOURS),
            ("size", SIZES),
            ("motion", MOTIONS),
        ):
            if getattr(self, name) not in vocab:
                raise WorldError(
                    f"ObjectSpec.{name}={getattr(self, name)!r} is not one of {list(vocab)}"
                )
        if self.speed < 0:
            raise WorldError(f"ObjectSpec.speed must be >= 0 (frame fractions/s); got {self.speed}")
        if self.motion == "static" and self.speed != 0:
            raise WorldError(f"ObjectSpec with motion='static' needs speed=0; got {self.speed}")
        for name in ("x", "y"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise WorldError(
                    f"ObjectSpec.{name}={getattr(self, name)} must be a frame fraction in [0, 1]"
                )

    @property
    def label(self) -> str:
        """``"small red circle"``."""
        return f"{self.size} {self.colour} {self.shape}"

    def centre(self, t: float, aspect: float = 1.0) -> tuple[float, float]:
        """Centre at time `t` seconds in frame fractions, kept inside a frame of `aspect` = W/H.

        An object that would leave the frame (a clip longer than the spec was laid out for)
        stops at the border.
        """
        vx, vy = _VELOCITY.get(self.motion, (0.0, 0.0))
        half = SIZE_FRACTIONS[self.size] / 2
        half_x, half_y = half * min(1.0, 1.0 / aspect), half * min(1.0, aspect)
        x = min(max(self.x + vx * self.speed * t, half_x), 1.0 - half_x)
        y = min(max(self.y + vy * self.speed * t, half_y), 1.0 - half_y)
        return x, y

    def box(self, t: float, height: int, width: int) -> tuple[float, float, float, float]:
        """Bounding box ``(x, y, w, h)`` in pixels of a ``height x width`` frame at time `t`."""
        side = SIZE_FRACTIONS[self.size] * min(height, width)
        cx, cy = self.centre(t, width / height)
        return (cx * width - side / 2, cy * height - side / 2, side, side)


@dataclass(frozen=True, kw_only=True)
class SceneSpec:
    """A scene: 1+ objects over a flat grey background, laid out for `duration` seconds."""

    objects: tuple[ObjectSpec, ...]
    background: tuple[int, int, int] = (40, 40, 40)
    duration: float = 2.0  # seconds during which every object stays inside the frame

    def __post_init__(self) -> None:
        if not self.objects:
            raise WorldError("SceneSpec.objects is empty; a scene needs at least one ObjectSpec")
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "background", tuple(int(c) for c in self.background))
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise WorldError(
                f"SceneSpec.background must be 3 ints in [0, 255]; got {self.background}"
            )
        if not self.duration > 0:
            raise WorldError(f"SceneSpec.duration must be positive seconds; got {self.duration}")

    def relations(self, steps: int = 9) -> list[tuple[int, str, int]]:
        """Spatial relations ``(i, predicate, j)``, ``i < j``, that hold during the whole clip.

        ``i`` is "left of" ``j`` when its centre is left of ``j``'s and the horizontal offset
        (in frame fractions, so the same at every resolution) dominates the vertical one at
        every sampled time; likewise "above"/"below".
        """
        times = [self.duration * k / (steps - 1) for k in range(steps)]
        out = []
        for i in range(len(self.objects)):
            for j in range(i + 1, len(self.objects)):
                seen = set()
                for t in times:
                    xi, yi = self.objects[i].centre(t)
                    xj, yj = self.objects[j].centre(t)
                    dx, dy = xj - xi, yj - yi
                    if abs(dx) > abs(dy):
                        seen.add("left of" if dx > 0 else "right of")
                    elif abs(dy) > abs(dx):
                        seen.add("above" if dy > 0 else "below")
                    else:
                        seen.add("")
                if len(seen) == 1 and "" not in seen:
                    out.append((i, seen.pop(), j))
        return out

    def still(self) -> SceneSpec:
        """The same scene with every object static (what a single image shows)."""
        return replace(
            self, objects=tuple(replace(o, motion="static", speed=0.0) for o in self.objects)
        )

    def caption(self) -> str:
        """The canonical caption: ``"a small red circle moving left slowly and ..."``."""
        from mugv.data.world._caption import captions

        return captions(self, count=1)[0]

    def captions(self, count: int = 5, seed: int = 0, with_motion: bool = True) -> list[str]:
        """`count` paraphrases, the canonical caption first; all parse back with `parse_prompt`."""
        from mugv.data.world._caption import captions

        return captions(self, count=count, seed=seed, with_motion=with_motion)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [
                {
                    "shape": o.shape,
                    "colour": o.colour,
                    "size": o.size,
                    "motion": o.motion,
                    "speed": o.speed,
                    "x": o.x,
                    "y": o.y,
                }
                for o in self.objects
            ],
            "background": list(self.background),
            "duration": self.duration,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SceneSpec:
        if not isinstance(d, dict) or not isinstance(d.get("objects"), list):
            raise WorldError(
                f"SceneSpec.from_dict needs a dict with an 'objects' list (from to_dict); got {d!r}"
            )
        objects = []
        for k, o in enumerate(d["objects"]):
            try:
                objects.append(ObjectSpec(**o))
            except TypeError as e:
                raise WorldError(f"SceneSpec.from_dict: objects[{k}] = {o!r}: {e}") from None
        extra = {k: d[k] for k in ("background", "duration") if k in d}
        return cls(objects=tuple(objects), **extra)

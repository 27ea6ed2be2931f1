"""Placing objects so that, for the whole clip, each stays in the frame and apart from the rest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from mugv.data.world._spec import _VELOCITY, SIZE_FRACTIONS, SPEEDS, ObjectSpec, SceneSpec

MARGIN = 0.02  # of the shorter side, between an object and the frame border
GAP = 0.06  # of the shorter side, between two objects (survives blur and chroma subsampling)
_STEPS = 17
_TRIES_PER_OBJECT = 20


def fits(size: str, speed: float, duration: float) -> bool:
    """Whether an object of `size` moving at `speed` for `duration` s can stay in the frame.

    The shorter side is the tight one: size, travel and margins must add up to at most 1.
    """
    return SIZE_FRACTIONS[size] + speed * duration + 2 * MARGIN <= 1.0


def fitting_speeds(size: str, duration: float) -> list[str]:
    """The speed names (of `SPEEDS`) at which an object of `size` stays in the frame."""
    return [k for k, v in SPEEDS.items() if fits(size, v, duration)]


def _start_range(obj: ObjectSpec, duration: float, aspect: float, axis: int) -> tuple[float, float]:
    """Allowed start-centre interval along `axis` (0: x, 1: y) in frame fractions."""
    units = max(aspect, 1.0) if axis == 0 else max(1.0 / aspect, 1.0)  # axis length, shorter sides
    half = (SIZE_FRACTIONS[obj.size] / 2 + MARGIN) / units
    lo, hi = half, 1.0 - half
    travel = obj.speed * duration
    direction = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}.get(obj.motion)
    if direction is not None and direction[0] == axis:
        if direction[1] < 0:
            lo += travel
        else:
            hi -= travel
    return lo, hi


def _apart(objects: Sequence[ObjectSpec], duration: float, aspect: float) -> bool:
    """No two objects come closer than `GAP` (box to box, in shorter sides) at any time.

    Start ranges keep objects inside the frame, so centres move linearly (no clamping).
    """
    if len(objects) < 2:
        return True
    scale = np.array([max(aspect, 1.0), max(1.0 / aspect, 1.0)])  # frame size, shorter sides
    times = np.linspace(0.0, duration, _STEPS)[:, None, None]  # (S, 1, 1)
    start = np.array([(o.x, o.y) for o in objects])  # (N, 2)
    velocity = np.array([np.multiply(_VELOCITY.get(o.motion, (0, 0)), o.speed) for o in objects])
    centres = (start + velocity * times) * scale  # (S, N, 2)
    halves = np.array([SIZE_FRACTIONS[o.size] / 2 for o in objects])  # (N,)
    gaps = (
        np.abs(centres[:, :, None] - centres[:, None, :])
        - (halves[:, None] + halves[None])[..., None]
    )
    gaps = gaps.max(-1)  # (S, N, N): box-to-box distance along the more separated axis
    off_diagonal = ~np.eye(len(objects), dtype=bool)
    return bool((gaps[:, off_diagonal] >= GAP).all())


def place(
    objects: Sequence[ObjectSpec],
    rng: np.random.Generator,
    *,
    duration: float,
    aspect: float = 1.0,
    background: tuple[int, int, int] = (40, 40, 40),
    relations: Sequence[tuple[int, str, int]] = (),
    attempts: int = 200,
) -> SceneSpec | None:
    """Draw start positions for `objects` (their x/y are ignored); None if none was found.

    The result keeps every object inside the frame and `GAP` apart for `duration` seconds and
    satisfies the required `relations` ``(i, predicate, j)``.
    """
    ranges = []
    for obj in objects:
        (xlo, xhi), (ylo, yhi) = (_start_range(obj, duration, aspect, a) for a in (0, 1))
        if xlo > xhi or ylo > yhi:
            return None
        ranges.append((xlo, xhi, ylo, yhi))
    for _ in range(attempts):
        placed: list[ObjectSpec] = []
        for obj, (xlo, xhi, ylo, yhi) in zip(objects, ranges):
            for _ in range(_TRIES_PER_OBJECT):  # greedy: each object tried against those placed
                candidate = replace(
                    obj, x=float(rng.uniform(xlo, xhi)), y=float(rng.uniform(ylo, yhi))
                )
                if _apart([*placed, candidate], duration, aspect):
                    placed.append(candidate)
                    break
            else:
                break
        if len(placed) < len(objects):
            continue
        spec = SceneSpec(objects=tuple(placed), background=background, duration=duration)
        if relations:
            held = set(spec.relations())
            if not all(r in held for r in relations):
                continue
        return spec
    return None

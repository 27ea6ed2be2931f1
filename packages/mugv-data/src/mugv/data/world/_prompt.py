"""`parse_prompt`: text (any caption the world writes, or a user's prompt) -> `SceneSpec`."""

from __future__ import annotations

import re

import numpy as np

from mugv.data.world._caption import SHAPE_WORDS, SIZE_WORDS
from mugv.data.world._layout import fitting_speeds, place
from mugv.data.world._spec import COLOURS, SPEEDS, ObjectSpec, SceneSpec, WorldError

_SHAPE = {w: s for s, words in SHAPE_WORDS.items() for w in words} | {"disk": "circle"}
_SIZE = {w: s for s, words in SIZE_WORDS.items() for w in words} | {
    "tiny": "small",
    "huge": "large",
}
_COLOUR = {c: c for c in COLOURS} | {"violet": "purple", "magenta": "purple"}
_DIRECTION = {
    "left": "left",
    "right": "right",
    "up": "up",
    "upward": "up",
    "upwards": "up",
    "down": "down",
    "downward": "down",
    "downwards": "down",
}
_SPEED = {"slowly": "slow", "slow": "slow", "quickly": "fast", "fast": "fast", "rapidly": "fast"}


class PromptError(WorldError):
    """A prompt names no object, or an object without a colour or shape."""


def _tail(tokens: list[str]) -> tuple[str, str | None, str | None]:
    """Motion, speed name and relation predicate in the words after an object's noun."""
    motion, speed, relation = "static", None, None
    for k, w in enumerate(tokens):
        after = tokens[k + 1] if k + 1 < len(tokens) else ""
        if w in ("left", "right") and after == "of":
            relation = relation or f"{w} of"
        elif w in ("above", "below"):
            relation = relation or w
        elif w in _DIRECTION and motion == "static":
            motion = _DIRECTION[w]
        elif w in _SPEED:
            speed = _SPEED[w]
    return motion, speed, relation


def parse_prompt(
    text: str, *, duration: float = 2.0, aspect: float = 1.0, seed: int = 0
) -> SceneSpec:
    """Read objects ``[size] colour shape [motion [speed]]`` and relations between neighbours.

    Unstated sizes default to "large", motions to "static", speeds to "slow". Positions are
    drawn (from `seed`) so that every object stays in a frame of width/height `aspect` for
    `duration` seconds and the stated relations hold.
    """
    if not isinstance(text, str):
        raise PromptError(f"parse_prompt needs a str; got {type(text).__name__}")
    tokens = re.findall(r"[a-z]+", text.lower())
    objects: list[dict] = []
    tails: list[list[str]] = []
    pending: dict[str, str] = {}
    for w in tokens:
        if w in _SIZE:
            pending["size"] = _SIZE[w]
        elif w in _COLOUR:
            pending["colour"] = _COLOUR[w]
        elif w in _SHAPE:
            if "colour" not in pending:
                raise PromptError(
                    f"parse_prompt: the {w!r} in {text!r} has no colour; say one of {list(COLOURS)}"
                )
            objects.append({"shape": _SHAPE[w], "size": "large"} | pending)
            tails.append([])
            pending = {}
        elif tails and not pending:
            tails[-1].append(w)
    if not objects:
        raise PromptError(
            f"parse_prompt: no object in {text!r}; describe objects as '[small|large] <colour> "
            f"<shape>' with colours {list(COLOURS)} and shapes {sorted(set(_SHAPE.values()))}"
        )
    specs, relations = [], []
    for k, (obj, tail) in enumerate(zip(objects, tails)):
        motion, speed, relation = _tail(tail)
        if motion != "static":
            allowed = fitting_speeds(obj["size"], duration)
            if not allowed:
                raise PromptError(
                    f"parse_prompt: a {obj['size']} {obj['shape']} moving {motion} cannot stay in "
                    f"the frame for {duration} s; pass a shorter duration"
                )
            speed = speed if speed in allowed else allowed[0]
        specs.append(
            ObjectSpec(
                **obj, motion=motion, speed=SPEEDS[speed or "slow"] if motion != "static" else 0.0
            )
        )
        if relation is not None and k + 1 < len(objects):
            relations.append((k, relation, k + 1))
    rng = np.random.default_rng(seed)
    spec = place(specs, rng, duration=duration, aspect=aspect, relations=relations, attempts=300)
    if spec is None:
        spec = place(specs, rng, duration=duration, aspect=aspect, attempts=300)
    if spec is None:
        raise PromptError(
            f"parse_prompt: cannot lay out {len(specs)} objects of {text!r} apart in the frame "
            f"for {duration} s; use fewer or smaller objects or a shorter duration"
        )
    return spec

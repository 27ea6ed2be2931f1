"""Caption paraphrases of a `SceneSpec`; every one of them parses back with `parse_prompt`."""

from __future__ import annotations

import itertools

import numpy as np

from mugv.data.world._spec import INVERSE_PREDICATE, ObjectSpec, SceneSpec, speed_word

SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "diamond": ("diamond",),
}
SPEED_ADVERBS = {"slow": "slowly", "fast": "quickly"}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RELATION_PHRASES = {
    "left of": "is to the left of",
    "right of": "is to the right of",
    "above": "is above",
    "below": "is below",
}
MAX_CAPTIONS = 5  # paraphrases every scene has (the relational one needs a relation)
_TOWARDS = {"left": "to the left", "right": "to the right", "up": "upward", "down": "downward"}


def _noun(o: ObjectSpec, rng: np.random.Generator | None) -> str:
    if rng is None:
        return o.label
    size = SIZE_WORDS[o.size][rng.integers(len(SIZE_WORDS[o.size]))]
    shape = SHAPE_WORDS[o.shape][rng.integers(len(SHAPE_WORDS[o.shape]))]
    return f"{size} {o.colour} {shape}"


def _motion(o: ObjectSpec, style: int) -> str:
    """Motion phrase in one of three styles; "" never (static objects say so)."""
    if o.motion == "static":
        return ("staying still", "that does not move", "resting in place", "stays still")[style]
    adverb = SPEED_ADVERBS[speed_word(o.speed)]
    return (
        f"moving {o.motion} {adverb}",
        f"that moves {_TOWARDS[o.motion]} {adverb}",
        f"{adverb} drifting {o.motion}",
        f"moves {o.motion} {adverb}",
    )[style]


def _phrase(o: ObjectSpec, style: int, rng: np.random.Generator | None, motion: bool) -> str:
    noun = f"a {_noun(o, rng)}"
    return f"{noun} {_motion(o, style)}" if motion else noun


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _relation_chain(spec: SceneSpec, rng: np.random.Generator, motion: bool) -> str | None:
    """``"A is to the left of B, which is above C"`` over the order with the most relations."""
    rel = {}
    for i, p, j in spec.relations():
        rel[i, j], rel[j, i] = p, INVERSE_PREDICATE[p]
    if not rel:
        return None
    best = max(
        itertools.permutations(range(len(spec.objects))),
        key=lambda order: sum((a, b) in rel for a, b in itertools.pairwise(order)),
    )
    text = _phrase(spec.objects[best[0]], 0, rng, motion)
    for k, (a, b) in enumerate(itertools.pairwise(best)):
        nxt = _phrase(spec.objects[b], 0, rng, motion)
        if (a, b) in rel:
            link = " " if k == 0 else ", which "
            text += f"{link}{RELATION_PHRASES[rel[a, b]]} {nxt}"
        else:
            text += f", and {nxt}"
    return text[0].upper() + text[1:] + "."


def captions(
    spec: SceneSpec, *, count: int = 5, seed: int = 0, with_motion: bool = True
) -> list[str]:
    """The canonical caption first, then up to `count - 1` distinct paraphrases."""
    rng = np.random.default_rng(seed)
    objs = spec.objects
    n = len(objs)
    noun = "shape" if n == 1 else "shapes"
    medium = "A video of " if with_motion else "An image of "
    out = [_join([_phrase(o, 0, None, with_motion) for o in objs])]
    candidates = [
        f"{NUMBER_WORDS[n].capitalize()} {noun}: "
        + _join([_phrase(o, 1, rng, with_motion) for o in objs])
        + ".",
        medium + _join([_phrase(o, 2, rng, with_motion) for o in objs]) + ".",
        _relation_chain(spec, rng, with_motion),
        " ".join(
            f"A {_noun(o, rng)} {_motion(o, 3) if with_motion else 'is shown'}." for o in objs
        ),
        "In this scene there is " + _join([_phrase(o, 0, rng, with_motion) for o in objs]) + ".",
    ]
    for c in candidates:
        if len(out) >= count:
            break
        if c is not None and c not in out:
            out.append(c)
    return out[:count]

"""Entity extraction from captions, and sampling weights that balance rare and common entities.

Entities are the content words of a caption (noun phrases reduced to their words, minus
function words, numbers and the verbs captions use for motion and appearance). The weight of a
clip is ``1 / sqrt(n)`` with ``n`` the corpus frequency of its rarest entity, so a sampler
drawing by weight sees rare entities more often than their share of the corpus.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")
_STOP = frozenset(
    """a an the and or but of in on at to from by with without into onto over under above below
    across along around through toward towards near far left right up down while as is are was
    were be been being it its this that these those there here their his her they he she we you
    i one two three four five six seven eight nine ten some many few several each every other
    another both all no not very also then than so just only more most less least same
    moves move moving moved slides slide sliding drifts drift drifting goes go going travels
    travel travelling traveling stays stay staying remains remain remaining sits sit sitting
    stands stand standing shows show showing appears appear appearing seen scene video clip
    frame frames background image picture shot""".split()
)


def extract_entities(caption: str) -> list[str]:
    """Content words of a caption, lower-cased, de-duplicated, in order of appearance."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(caption.lower()):
        if word not in _STOP and len(word) > 1:
            seen.setdefault(word, None)
    return list(seen)


def balanced_weights(entity_lists: Sequence[Sequence[str]]) -> list[float]:
    """A sampling weight per clip from its rarest entity (1.0 when it has none)."""
    counts = Counter(e for entities in entity_lists for e in set(entities))
    return [
        1.0 / math.sqrt(min(counts[e] for e in entities)) if entities else 1.0
        for entities in entity_lists
    ]

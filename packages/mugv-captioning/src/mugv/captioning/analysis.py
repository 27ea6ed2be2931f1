"""Routing analysis: which expert (object, attribute, relation) the decoder trusts per word class.

TSG's claim (section 4.4): nouns lean on the object expert, adjectives on the attribute expert,
verbs and prepositions on the relation expert. ``routing_by_word_class`` averages the routing
weights of generated words over layers and over the words of each class.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from mugv.captioning.decoding import Decoded
from mugv.captioning.vocab import Vocabulary

EXPERTS = ("object", "attribute", "relation")


def routing_by_word_class(
    decoded: Decoded, words: Vocabulary, classes: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """``{class: {"object": w, "attribute": w, "relation": w, "count": n}}`` over generated words.

    ``classes`` maps a word to its class (e.g. ``{"circle": "noun", "red": "adjective"}``);
    words without a class are skipped.
    """
    if decoded.routing is None:
        return {}
    weights = decoded.routing.mean(dim=2).cpu().numpy()  # (B, L, E), mean over layers
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for b, row in enumerate(decoded.tokens.tolist()):
        for t, tok in enumerate(row):
            if tok in (Vocabulary.eos_id, Vocabulary.pad_id):
                break
            cls = classes.get(words.itos[tok])
            if cls is None:
                continue
            sums[cls] = sums.get(cls, 0.0) + weights[b, t]
            counts[cls] = counts.get(cls, 0) + 1
    return {
        cls: {**dict(zip(EXPERTS, (sums[cls] / counts[cls]).tolist())), "count": counts[cls]}
        for cls in sorted(sums)
    }

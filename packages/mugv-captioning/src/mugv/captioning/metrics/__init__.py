"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) matching the COCO caption evaluation.

SPICE is not provided: it needs Stanford CoreNLP models fetched at run time, out of reach offline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mugv.captioning._errors import MetricError
from mugv.captioning.metrics.meteor import Meteor, meteor_jar
from mugv.captioning.metrics.scores import CiderD, bleu, cider_d, rouge_l
from mugv.captioning.metrics.tokenizer import ptb_tokenize, tokenize_captions

__all__ = [
    "CiderD",
    "Meteor",
    "bleu",
    "cider_d",
    "evaluate_captions",
    "meteor_jar",
    "ptb_tokenize",
    "rouge_l",
    "tokenize_captions",
]


def evaluate_captions(
    references: Mapping[object, Sequence[str]],
    hypotheses: Mapping[object, str],
    *,
    meteor: bool | Meteor = True,
) -> dict[str, float]:
    """Raw captions in, ``{"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}`` out.

    ``meteor=False`` skips the Java metric (no JVM needed); a :class:`Meteor` instance is reused
    (its JVM takes seconds to start).
    """
    gts = tokenize_captions({k: list(v) for k, v in references.items()})
    res = tokenize_captions({k: [hypotheses[k]] for k in references if k in hypotheses})
    if len(res) != len(gts):
        missing = [k for k in references if k not in hypotheses][:5]
        raise MetricError(f"no hypothesis for keys {missing}; give one caption per reference key")
    out = {f"BLEU-{i + 1}": b for i, b in enumerate(bleu(gts, res)[0])}
    if isinstance(meteor, Meteor):
        out["METEOR"] = meteor.compute_score(gts, res)[0]
    elif meteor:
        with Meteor() as m:
            out["METEOR"] = m.compute_score(gts, res)[0]
    out["ROUGE-L"] = rouge_l(gts, res)[0]
    out["CIDEr-D"] = cider_d(gts, res)[0]
    return out

"""Our caption metrics against pycocoevalcap (the reference implementation) on one shared set."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mugv.captioning import MetricError
from mugv.captioning.metrics import (
    CiderD,
    Meteor,
    bleu,
    cider_d,
    evaluate_captions,
    ptb_tokenize,
    rouge_l,
    tokenize_captions,
)

pycoco = pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs java on PATH")

REFS = {
    "a": [
        "A man riding a wave on top of a surfboard.",
        "A surfer rides a large wave in the ocean.",
        "A person on a surf board riding a wave.",
        "Man surfing on a wave at the beach.",
    ],
    "b": [
        "A red circle moves left, then right.",
        "The red circle slides to the left.",
        "A small red circle is moving left.",
    ],
    "c": ["Two dogs' bowls sit on the floor; one is empty!", "Two bowls on a kitchen floor."],
    "d": [
        "A man's dog, running (fast) on the \"beach\"... isn't it?",
        "a dog runs along the beach",
        "The dog can't stop running on sand.",
    ],
    "e": [
        "a pizza with cheese,tomatoes and olives",
        "A pizza topped with cheese and olives.",
        "pizza",
    ],
    "f": ["1,000 people at Mr. Smith's house etc.", "A crowd at a house.", "people gather"],
}
HYPS = {
    "a": "a man riding a wave on a surfboard",
    "b": "a red circle moves to the left",
    "c": "two bowls on the floor",
    "d": "a dog running on the beach",
    "e": "a pizza with olives",
    "f": "a large group of people standing in front of a house",
}
EXTRA = [
    "3.5 U.S. well-known cannot",
    "The cat -- a big one -- sleeps.",
    "They're going to the store, aren't they?",
    "I'll say it can't be 10:30 or $5 or 50%.",
    "a man with a [hat] and {brackets}",
    "A sign reads 'STOP' near the road.",
    "won't gonna",
    "What?! no...",
    "an old-fashioned 'train' car",
    "a photo of a kitchen/dining area",
]


@pytest.fixture(scope="module")
def tokenised():
    gts = tokenize_captions(REFS)
    res = tokenize_captions({k: [v] for k, v in HYPS.items()})
    return gts, res


def test_tokenizer_matches_stanford_ptb_jar():
    pytest.importorskip("pycocoevalcap.tokenizer.ptbtokenizer")
    if shutil.which("java") is None:
        pytest.skip("needs java on PATH")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [c for caps in REFS.values() for c in caps] + list(HYPS.values()) + EXTRA
    ref = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    for i, s in enumerate(sentences):
        assert " ".join(ptb_tokenize(s)) == ref[i][0], s


def test_bleu_equals_pycocoevalcap(tokenised):
    gts, res = tokenised
    ours, ours_items = bleu(gts, res)
    theirs, theirs_items = Bleu(4).compute_score(gts, res, verbose=0)
    assert ours == theirs
    assert ours_items == theirs_items


def test_rouge_and_cider_equal_pycocoevalcap(tokenised):
    gts, res = tokenised
    for ours_fn, theirs in ((rouge_l, Rouge()), (cider_d, Cider())):
        ours, ours_items = ours_fn(gts, res)
        ref, ref_items = theirs.compute_score(gts, res)
        assert ours == ref
        np.testing.assert_array_equal(ours_items, ref_items)


def test_cider_with_fixed_corpus_is_consistent(tokenised):
    gts, res = tokenised
    # idf from the same references as the evaluated set gives the plain CIDEr-D score.
    fixed = CiderD(list(gts.values())).compute_score(gts, res)[0]
    assert fixed == pytest.approx(cider_d(gts, res)[0], abs=1e-12)
    # a perfect hypothesis scores higher than a wrong one under the corpus idf
    scorer = CiderD(list(gts.values()))
    good = scorer.compute_score({"a": gts["a"]}, {"a": [gts["a"][0]]})[0]
    bad = scorer.compute_score({"a": gts["a"]}, {"a": ["pizza with olives"]})[0]
    assert good > 1.0 > bad


@needs_java
def test_meteor_matches_pycocoevalcap(tokenised):
    from pycocoevalcap.meteor.meteor import Meteor as RefMeteor

    gts, res = tokenised
    with Meteor() as m:
        ours, ours_items = m.compute_score(gts, res)
        scores = evaluate_captions(REFS, HYPS, meteor=m)
    ref, ref_items = RefMeteor().compute_score(gts, res)
    assert abs(ours - ref) < 1e-3
    np.testing.assert_allclose(ours_items, ref_items, atol=1e-3)
    assert 0.1 < ours < 1.0
    assert set(scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
    assert scores["METEOR"] == ours and scores["CIDEr-D"] == cider_d(gts, res)[0]


def test_mismatched_keys_and_missing_jar(monkeypatch, tmp_path):
    with pytest.raises(MetricError, match="share their keys"):
        bleu({"a": ["x"]}, {"b": ["x"]})
    with pytest.raises(MetricError, match="exactly one"):
        rouge_l({"a": ["x"]}, {"a": ["x", "y"]})
    with pytest.raises(MetricError, match="no hypothesis"):
        evaluate_captions({"a": ["x"]}, {}, meteor=False)
    monkeypatch.setenv("MUGV_METEOR_JAR", str(tmp_path / "nope.jar"))
    with pytest.raises(MetricError, match=r"mugv-captioning\[meteor\]"):
        Meteor()
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MetricError, match="java"):
        Meteor()

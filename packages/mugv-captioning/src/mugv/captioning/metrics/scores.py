"""BLEU-1..4, ROUGE-L and CIDEr-D over PTB-tokenised captions.

Inputs follow the COCO caption evaluation: ``gts = {key: ["tok tok ...", ...]}`` (references)
and ``res = {key: ["tok tok ..."]}`` (one hypothesis per key), both already tokenised with
:func:`~mugv.captioning.metrics.tokenize_captions`. Every function returns ``(corpus score,
per-item scores)`` and reproduces pycocoevalcap's arithmetic (the tests compare them for
equality), including its conventions: BLEU uses the closest reference length and smoothing
constants 1e-9/1e-15; CIDEr-D uses idf from the references of the evaluated set (or a fixed
corpus), clips hypothesis tf-idf by the reference's, applies the Gaussian length penalty with
sigma 6 on the bigram counts, and scales by 10.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mugv.captioning._errors import MetricError

Ngrams = Counter  # Counter[tuple[str, ...]]


def _check(gts: Mapping, res: Mapping) -> None:
    if gts.keys() != res.keys():
        missing = sorted(map(str, gts.keys() ^ res.keys()))[:5]
        raise MetricError(f"references and hypotheses must share their keys; differ on {missing}")
    for k in res:
        if len(res[k]) != 1:
            raise MetricError(f"hypotheses[{k!r}] must hold exactly one caption; got {len(res[k])}")
        if len(gts[k]) == 0:
            raise MetricError(f"references[{k!r}] is empty; give at least one reference caption")


def ngrams(sentence: str, n: int = 4) -> Ngrams:
    """Counts of every 1..n-gram of a whitespace-tokenised sentence."""
    words = sentence.split()
    return Counter(
        tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1)
    )


def bleu(gts: Mapping, res: Mapping, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """Corpus BLEU-1..n (closest reference length) and per-item BLEU-1..n (``[n][item]``)."""
    _check(gts, res)
    tiny, small = 1e-15, 1e-9
    total_guess, total_correct = [0] * n, [0] * n
    total_test = total_ref = 0
    per_item: list[list[float]] = [[] for _ in range(n)]
    for key in gts:
        refs = gts[key]
        ref_lens = [len(r.split()) for r in refs]
        max_counts: dict[tuple, int] = {}
        for r in refs:
            for g, c in ngrams(r, n).items():
                max_counts[g] = max(max_counts.get(g, 0), c)
        hyp = res[key][0]
        test_len = len(hyp.split())
        ref_len = min((abs(length - test_len), length) for length in ref_lens)[1]
        guess = [max(0, test_len - k + 1) for k in range(1, n + 1)]
        correct = [0] * n
        for g, c in ngrams(hyp, n).items():
            correct[len(g) - 1] += min(max_counts.get(g, 0), c)
        total_test += test_len
        total_ref += ref_len
        score = 1.0
        for k in range(n):
            total_guess[k] += guess[k]
            total_correct[k] += correct[k]
            score *= (float(correct[k]) + tiny) / (float(guess[k]) + small)
            per_item[k].append(score ** (1.0 / (k + 1)))
        ratio = (test_len + tiny) / (ref_len + small)
        if ratio < 1:
            for k in range(n):
                per_item[k][-1] *= math.exp(1 - 1 / ratio)
    corpus, score = [], 1.0
    for k in range(n):
        score *= float(total_correct[k] + tiny) / (total_guess[k] + small)
        corpus.append(score ** (1.0 / (k + 1)))
    ratio = (total_test + tiny) / (total_ref + small)
    if ratio < 1:
        corpus = [b * math.exp(1 - 1 / ratio) for b in corpus]
    return corpus, per_item


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            cur[j] = prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


def rouge_l(gts: Mapping, res: Mapping, beta: float = 1.2) -> tuple[float, np.ndarray]:
    """ROUGE-L F-measure (beta 1.2) from the best precision and best recall over references."""
    _check(gts, res)
    scores = []
    for key in gts:
        hyp = res[key][0].split(" ")
        prec, rec = [], []
        for ref in gts[key]:
            ref_toks = ref.split(" ")
            lcs = _lcs(ref_toks, hyp)
            prec.append(lcs / float(len(hyp)))
            rec.append(lcs / float(len(ref_toks)))
        p, r = max(prec), max(rec)
        scores.append(
            ((1 + beta**2) * p * r) / float(r + beta**2 * p) if p != 0 and r != 0 else 0.0
        )
    arr = np.array(scores)
    return float(np.mean(arr)), arr


class CiderD:
    """CIDEr-D. Document frequencies come from ``corpus`` (lists of reference captions, one list
    per image; what SCST uses, fixed over training) or, when it is None, from the references of
    each evaluated set (what the COCO evaluation does).
    """

    def __init__(
        self, corpus: Iterable[Sequence[str]] | None = None, *, n: int = 4, sigma: float = 6.0
    ) -> None:
        self.n, self.sigma = n, sigma
        self._fixed = None
        if corpus is not None:
            self._fixed = self._doc_freq([[ngrams(r, n) for r in refs] for refs in corpus])

    @staticmethod
    def _doc_freq(cooked_refs: list[list[Ngrams]]) -> tuple[dict, float]:
        df: dict[tuple, float] = defaultdict(float)
        for refs in cooked_refs:
            for g in {g for r in refs for g in r}:
                df[g] += 1
        if not cooked_refs:
            raise MetricError("CIDEr-D needs at least one reference set to compute idf")
        return df, float(np.log(float(len(cooked_refs))))

    def _vec(self, counts: Ngrams, df: dict, log_n: float):
        vec: list[dict] = [defaultdict(float) for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for g, tf in counts.items():
            k = len(g) - 1
            vec[k][g] = float(tf) * (log_n - np.log(max(1.0, df.get(g, 0.0))))
            norm[k] += pow(vec[k][g], 2)
            if k == 1:  # the reference measures length in bigrams
                length += tf
        return vec, [np.sqrt(x) for x in norm], length

    def _sim(self, hyp, ref) -> np.ndarray:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        delta = float(lh - lr)
        val = np.array([0.0] * self.n)
        for k in range(self.n):
            for g in vh[k]:
                val[k] += min(vh[k][g], vr[k][g]) * vr[k][g]
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= np.e ** (-(delta**2) / (2 * self.sigma**2))
        return val

    def compute_score(self, gts: Mapping, res: Mapping) -> tuple[float, np.ndarray]:
        _check(gts, res)
        cooked = {k: [ngrams(r, self.n) for r in gts[k]] for k in gts}
        df, log_n = self._fixed or self._doc_freq(list(cooked.values()))
        scores = []
        for key in gts:
            hyp = self._vec(ngrams(res[key][0], self.n), df, log_n)
            total = np.array([0.0] * self.n)
            for ref in cooked[key]:
                total += self._sim(hyp, self._vec(ref, df, log_n))
            scores.append(np.mean(total) / len(cooked[key]) * 10.0)
        arr = np.array(scores)
        return float(np.mean(arr)), arr


def cider_d(gts: Mapping, res: Mapping) -> tuple[float, np.ndarray]:
    """CIDEr-D with idf from the evaluated references (the COCO evaluation's setting)."""
    return CiderD().compute_score(gts, res)

import logging

import numpy as np
import pytest
import torch

from mugv.data import VideoClip
from mugv.retrieval import InputError, TWBert, TWBertScorer, embed_texts, embed_videos
from mugv.retrieval.retrieval import (
    contrastive_similarity,
    ranks,
    rerank_scores,
    retrieval_metrics,
    vtm_scores,
)

TEXTS = [
    "a red circle moves left",
    "a blue square moves up",
    "a green triangle",
    "two circles",
    "a yellow star",
    "nothing moves",
]


@pytest.fixture(scope="module")
def indexes(tiny_model):
    torch.manual_seed(0)
    frames = torch.randn(5, 4, 3, 32, 32)
    return embed_videos(tiny_model, frames, batch_size=2), embed_texts(tiny_model, TEXTS)


def test_embedding_in_batches_equals_one_batch(tiny_model, indexes):
    videos, texts = indexes
    torch.manual_seed(0)
    frames = torch.randn(5, 4, 3, 32, 32)
    whole = embed_videos(tiny_model, frames, batch_size=5)
    torch.testing.assert_close(videos.embeds, whole.embeds, atol=1e-5, rtol=1e-5)
    one = embed_texts(tiny_model, TEXTS[:1])
    torch.testing.assert_close(texts.embeds[:1], one.embeds, atol=1e-5, rtol=1e-5)


def test_chunked_similarity_and_batched_vtm_equal_references(tiny_model, indexes):
    videos, texts = indexes
    full = texts.embeds @ videos.embeds.T
    torch.testing.assert_close(contrastive_similarity(texts, videos, chunk=2), full)
    ti = torch.tensor([0, 1, 2, 3, 5])
    vi = torch.tensor([4, 0, 1, 1, 2])
    batched = vtm_scores(tiny_model, texts, videos, ti, vi, batch_size=2)
    for p in range(5):
        single = vtm_scores(tiny_model, texts, videos, ti[p : p + 1], vi[p : p + 1])
        torch.testing.assert_close(batched[p : p + 1], single, atol=1e-4, rtol=1e-4)


def test_rerank_orders_topk_by_vtm_above_the_rest(tiny_model, indexes):
    videos, texts = indexes
    sim = texts.embeds @ videos.embeds.T
    t2v0, _v2t0 = rerank_scores(tiny_model, texts, videos, k=0)
    assert (t2v0.argsort(1) == sim.argsort(1)).all()
    t2v, v2t = rerank_scores(tiny_model, texts, videos, k=2, batch_size=3)
    for i in range(len(TEXTS)):
        top = set(sim[i].topk(2).indices.tolist())
        assert set(t2v[i].topk(2).indices.tolist()) == top
        margin = vtm_scores(tiny_model, texts, videos, torch.tensor([i]), torch.tensor([0]))
        if 0 in top:
            torch.testing.assert_close(
                float(t2v[i, 0]), float(margin[0] + sim[i, 0]), atol=1e-4, rtol=1e-4
            )
    assert v2t.shape == (5, 6)
    # re-ranking one direction only: that direction equals the full call, the other is t2v0's
    t2v_only, v2t_plain = rerank_scores(tiny_model, texts, videos, k=2, directions=("t2v",))
    torch.testing.assert_close(t2v_only, t2v)
    torch.testing.assert_close(v2t_plain, _v2t0)


def test_ranks_and_metrics_against_hand_computed_values():
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.7, 0.6]])
    np.testing.assert_array_equal(ranks(scores, [[0], [1], [2]]), [1, 2, 2])
    np.testing.assert_array_equal(ranks(scores, [[1, 2], [0], [0, 1]]), [2, 3, 1])
    m = retrieval_metrics(scores, scores.T, [0, 1, 2])
    assert m["t2v"]["R@1"] == pytest.approx(100 / 3)
    assert m["t2v"]["MdR"] == 2 and m["t2v"]["MnR"] == pytest.approx(5 / 3)


def test_tokenize_rejects_empty_and_truncates_long_text(tiny_model, caplog):
    with pytest.raises(InputError, match="text 1 is empty"):
        tiny_model.tokenize(["fine", "  "])
    long = " ".join(["word"] * 100)
    with caplog.at_level(logging.WARNING):
        ids, _mask = tiny_model.tokenize(["short", long])
    assert ids.shape[1] == tiny_model.config.max_text_len
    assert ids[1, -1] == tiny_model.tokenizer.sep_token_id
    assert "text 1 has 102 tokens" in caplog.text


def test_scorer_gives_nan_for_bad_items_and_scores_the_rest(tiny_model, caplog):
    rng = np.random.default_rng(0)
    good = VideoClip(frames=rng.integers(0, 255, (6, 40, 48, 3), dtype=np.uint8), fps=8)
    broken = VideoClip(frames=rng.integers(0, 255, (6, 40, 48, 3), dtype=np.uint8), fps=8)
    broken.frames = np.zeros((6, 40, 48), np.uint8)  # corrupted after construction
    scorer = TWBertScorer(tiny_model)
    with caplog.at_level(logging.WARNING):
        s = scorer.score([good, broken, good, good], ["a red circle", "a red circle", "", "x"])
    assert np.isfinite(s[[0, 3]]).all() and np.isnan(s[[1, 2]]).all()
    assert ((s[[0, 3]] >= 0) & (s[[0, 3]] <= 1)).all()
    assert "item 1 not scored" in caplog.text and "item 2 not scored" in caplog.text
    alone = scorer.score([good], ["x"])
    np.testing.assert_allclose(alone[0], s[3], atol=1e-5)
    contrastive = TWBertScorer(tiny_model, mode="contrastive").score([good], ["x"])
    assert -1 <= contrastive[0] <= 1


def test_save_and_load_roundtrip(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "ckpt")
    loaded = TWBert.from_pretrained(tmp_path / "ckpt")
    ids, mask = tiny_model.tokenize(["a red circle"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids, mask), tiny_model.encode_text(ids, mask))
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)

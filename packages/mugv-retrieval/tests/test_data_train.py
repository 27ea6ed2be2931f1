import pytest
import torch

from mugv.data.world import SyntheticWorld, WorldConfig
from mugv.retrieval import (
    InputError,
    LossWeights,
    TWBert,
    TWBertConfig,
    TWBertObjective,
    VideoEncoderConfig,
)
from mugv.retrieval.data import (
    AnswerVocab,
    colour_negative,
    hard_negatives,
    load_world,
    motion_negative,
    qa_items,
)
from mugv.retrieval.model import pool_patches
from mugv.retrieval.train import PretrainBatches, QABatches, TextCache, evaluate_qa, fit, qa_step

LOAD = {"num_frames": 4, "image_size": 32}


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(
        WorldConfig(num_frames=8, height=32, width=32, fps=4.0, train_size=24, test_size=24)
    )


@pytest.fixture(scope="module")
def train_set(world):
    return load_world(world, "train", 24, **LOAD)


def test_load_world_groups_equal_captions(train_set):
    assert train_set.frames.shape == (24, 4, 3, 32, 32)
    assert train_set.frames.min() >= -1 and train_set.frames.max() <= 1
    canonical = [c[0] for c in train_set.captions]
    for i in range(24):
        for j in range(24):
            same = bool(train_set.pair_ids[i] == train_set.pair_ids[j])
            assert same == (canonical[i] == canonical[j])


def test_too_many_clips_is_a_clear_error(world):
    with pytest.raises(InputError, match="train_size"):
        load_world(world, "train", 25, **LOAD)


def test_hard_negatives_change_only_motion_or_colour(world, train_set):
    for spec in train_set.specs:
        m = motion_negative(spec)
        if m is not None:
            changed = [(a, b) for a, b in zip(spec.objects, m.objects) if a != b]
            assert len(changed) == 1
            a, b = changed[0]
            assert a.motion != b.motion and (a.shape, a.colour, a.size) == (
                b.shape,
                b.colour,
                b.size,
            )
        c = colour_negative(spec)
        if c is not None:
            assert sorted(o.colour for o in spec.objects) == sorted(o.colour for o in c.objects)
            assert [o.shape for o in spec.objects] == [o.shape for o in c.objects]
            assert [o.motion for o in spec.objects] == [o.motion for o in c.objects]
    hn = hard_negatives(world, train_set, "motion", limit=3, **LOAD)
    assert hn.frames.shape[0] == len(hn.texts) == 6
    for k, i in enumerate(hn.source_index):
        assert torch.equal(hn.frames[2 * k], train_set.frames[i])
        assert not torch.equal(hn.frames[2 * k + 1], hn.frames[2 * k])  # re-rendered twin
        assert hn.texts[2 * k] != hn.texts[2 * k + 1]
    with pytest.raises(InputError, match="kind"):
        hard_negatives(world, train_set, "size", **LOAD)


def test_answer_vocab_and_qa_items(train_set):
    vocab = AnswerVocab.build(train_set.qa, max_size=3)
    assert len(vocab) == 3
    clips, questions, answers = qa_items(train_set, vocab)
    assert len(clips) == len(questions) == answers.shape[0] == sum(len(q) for q in train_set.qa)
    assert set(answers.tolist()) <= {-1, 0, 1, 2}


def test_cached_text_states_give_the_same_losses(train_set):
    model = TWBert(TWBertConfig(queue_size=64))
    model.text_encoder.requires_grad_(False)
    cache = TextCache(model, [c for cs in train_set.captions for c in cs])
    frames, ids, mask, pair_ids, states = next(
        iter(PretrainBatches(model, train_set, 4, cache=cache))
    )
    valid = mask.bool()  # padding positions hold zeros in the cache
    reference = model.encode_text(ids, mask).detach()
    torch.testing.assert_close(states[valid], reference[valid], atol=2e-2, rtol=2e-2)
    obj = TWBertObjective(model, LossWeights(mlm=0.0, vtm=0.0)).eval()
    a = obj(frames, ids, mask, pair_ids, states)
    b = obj(frames, ids, mask, pair_ids)
    torch.testing.assert_close(a["vtc"], b["vtc"], atol=2e-2, rtol=2e-2)


def test_states_with_a_trainable_text_encoder_is_refused():
    obj = TWBertObjective(TWBert(TWBertConfig(queue_size=64)))
    ids, mask = obj.model.tokenize(["a red circle"])
    with pytest.raises(Exception, match="frozen text encoder"):
        obj(torch.zeros(1, 4, 3, 32, 32), ids, mask, torch.zeros(1).long(), torch.zeros(1, 5, 384))


def test_trainer_runs_pretraining_and_qa_steps(train_set):
    from mugv.infra import single_process

    torch.manual_seed(0)
    vocab = AnswerVocab.build(train_set.qa)
    model = TWBert(TWBertConfig(queue_size=64, num_answers=len(vocab), patch_pool=2))
    model.text_encoder.requires_grad_(False)
    obj = TWBertObjective(model, LossWeights(mlm=0.0), vtm_batch=2)
    cache = TextCache(model, [c for cs in train_set.captions for c in cs])
    before = model.video_encoder.patch_embed.weight.clone()
    from mugv.retrieval.train import pretrain_step

    with single_process(seed=0) as info:
        trainer = fit(
            obj,
            pretrain_step,
            PretrainBatches(model, train_set, 4, cache=cache),
            info=info,
            steps=2,
            lr=1e-3,
            log_every=1,
        )
        assert trainer.step == 2
        assert not torch.equal(before, model.video_encoder.patch_embed.weight)
        head = model.qa_head[0].weight.clone()
        fit(model, qa_step, QABatches(model, train_set, vocab, 4), info=info, steps=2, lr=1e-3)
        assert not torch.equal(head, model.qa_head[0].weight)
    acc = evaluate_qa(model, train_set, vocab, batch_size=64)
    assert 0 <= acc["accuracy"] <= 100 and acc["count"] == sum(len(q) for q in train_set.qa)


def test_patch_pooling_matches_avg_pool_reference():
    x = torch.randn(2, 3, 16, 5)
    pooled = pool_patches(x, 2)
    ref = x.reshape(2, 3, 2, 2, 2, 2, 5).mean(dim=(3, 5)).reshape(2, 3, 4, 5)
    torch.testing.assert_close(pooled, ref)


def test_two_stage_frame_selection_in_the_model():
    torch.manual_seed(0)
    cfg = TWBertConfig(
        video=VideoEncoderConfig(num_frames=8, image_size=32, patch_size=16, width=32, depth=1),
        cross_layers=2,
        frame_selection=True,
        queue_size=64,
    )
    model = TWBert(cfg).eval()
    ids, mask = model.tokenize(["a red circle", "a blue square"])
    video = model.encode_video(torch.randn(2, 8, 3, 32, 32))
    cross = model.fuse(model.encode_text(ids, mask), mask, video)
    assert cross.patches.shape[1] == 6  # 8 -> ceil(0.85 * 8) = 7 -> ceil(0.85 * 7) = 6
    model.train()
    cross = model.fuse(model.encode_text(ids, mask), mask, video)
    model.vtm_logits(cross).sum().backward()
    assert model.cross_encoder.selectors[0].score[0].weight.grad.abs().sum() > 0


def test_recipe_centres_the_text_and_runs_both_stages(train_set, tmp_path):
    from mugv.infra import single_process
    from mugv.retrieval.text_encoder import masked_mean
    from mugv.retrieval.train import Recipe, sentence_vectors, train_retrieval

    torch.manual_seed(0)
    model = TWBert(TWBertConfig(queue_size=64, patch_pool=2))
    texts = [c for cs in train_set.captions for c in cs]
    model.text_encoder.requires_grad_(False)
    cache = TextCache(model, texts)
    # the cached (bfloat16) sentence vectors agree with a direct computation
    direct = sentence_vectors(model, texts)
    torch.testing.assert_close(cache.sentences(texts), direct, atol=2e-2, rtol=2e-2)
    recipe = Recipe(steps=2, vtm_steps=1, batch_size=4, vtm_batch=2, log_every=1)
    with single_process(seed=0) as info:
        stats = train_retrieval(model, train_set, recipe, info=info, cache=cache)
    assert stats["align"]["steps"] == 2 and stats["match"]["steps"] == 1
    assert "vtm" not in stats["align"]["last"] and "vtm" in stats["match"]["last"]
    # the centre is the training captions' mean sentence vector: centred, they average to 0
    torch.testing.assert_close(model.text_center, direct.mean(dim=0), atol=2e-2, rtol=0)
    ids, mask = model.tokenize(texts)
    with torch.no_grad():
        centred = model.sentence(model.encode_text(ids, mask), mask)
        raw = masked_mean(model.encode_text(ids, mask), mask)
    assert centred.mean(dim=0).abs().max() < 0.05 < raw.mean(dim=0).abs().max()
    model.save_pretrained(tmp_path)  # the centre is part of the checkpoint
    torch.testing.assert_close(TWBert.from_pretrained(tmp_path).text_center, model.text_center)


def test_recipe_rejects_bad_fields():
    from mugv.retrieval.train import Recipe

    with pytest.raises(Exception, match=r"Recipe\.steps"):
        Recipe(steps=0)
    with pytest.raises(Exception, match=r"Recipe\.warmup"):
        Recipe(warmup=1.5)

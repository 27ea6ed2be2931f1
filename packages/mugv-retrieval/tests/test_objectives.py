import torch
import torch.nn.functional as F

from mugv.retrieval import LossWeights, TWBert, TWBertObjective, tiny
from mugv.retrieval.objectives import fine_grained_similarity, mask_tokens

TEXTS = ["a red circle moves left", "a blue square moves up", "a green triangle", "two circles"]


def test_fine_grained_similarity_matches_loop_reference():
    torch.manual_seed(0)
    words = F.normalize(torch.randn(3, 5, 8, dtype=torch.float64), dim=-1)
    patches = F.normalize(torch.randn(2, 4, 6, 8, dtype=torch.float64), dim=-1)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[0, 3:] = False
    ours = fine_grained_similarity(words, mask, patches)
    ref = torch.zeros(3, 2, dtype=torch.float64)
    for a in range(3):
        for b in range(2):
            vals = [
                max(float(words[a, w] @ patches[b, t, n]) for n in range(6))
                for w in range(5)
                if mask[a, w]
                for t in range(4)
            ]
            ref[a, b] = sum(vals) / len(vals)
    torch.testing.assert_close(ours, ref)


def test_mask_tokens_masks_only_real_words(tiny_model):
    ids, mask = tiny_model.tokenize(TEXTS * 50)
    g = torch.Generator().manual_seed(0)
    masked, labels = mask_tokens(ids, mask, tiny_model.tokenizer, 0.15, generator=g)
    chosen = labels != -100
    words = mask.bool() & (ids != tiny_model.tokenizer.cls_token_id)
    words &= ids != tiny_model.tokenizer.sep_token_id
    assert not (chosen & ~words).any()
    rate = chosen.sum() / words.sum()
    assert 0.1 < rate < 0.2
    assert (masked[chosen] == tiny_model.tokenizer.mask_token_id).float().mean() > 0.7
    assert (masked[~chosen] == ids[~chosen]).all()


def test_objective_terms_momentum_and_queue():
    torch.manual_seed(0)
    model = TWBert(tiny())
    obj = TWBertObjective(model).train()
    ids, mask = model.tokenize(TEXTS)
    frames = torch.randn(4, 4, 3, 32, 32)
    before = obj.video_encoder_m.patch_embed.weight.clone()
    with torch.no_grad():
        model.video_encoder.patch_embed.weight.add_(1.0)
    out = obj(frames, ids, mask, torch.arange(4))
    assert set(out) == {"vtc", "fine", "vtm", "mlm", "loss"}
    assert all(torch.isfinite(v) for v in out.values())
    out["loss"].backward()
    assert model.temp.grad is not None and model.video_encoder.patch_embed.weight.grad is not None
    assert model.vtm_head.weight.grad.abs().sum() > 0
    moved = obj.video_encoder_m.patch_embed.weight - before
    torch.testing.assert_close(moved, torch.full_like(moved, 1 - model.config.momentum))
    assert int(obj.queue_ptr) == 4
    assert (obj.idx_queue[:4] == torch.arange(4)).all()


def test_zero_weight_skips_a_loss():
    torch.manual_seed(0)
    model = TWBert(tiny())
    obj = TWBertObjective(model, LossWeights(mlm=0.0, vtm=0.0))
    ids, mask = model.tokenize(TEXTS[:2])
    out = obj(torch.randn(2, 4, 3, 32, 32), ids, mask, torch.arange(2))
    assert set(out) == {"vtc", "fine", "loss"}


def test_a_few_steps_fit_a_tiny_batch():
    torch.manual_seed(0)
    model = TWBert(tiny())
    obj = TWBertObjective(model, LossWeights(mlm=0.0)).train()
    ids, mask = model.tokenize(TEXTS)
    frames = torch.randn(4, 4, 3, 32, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(8):
        out = obj(frames, ids, mask, torch.arange(4))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["vtc"].item())
    assert losses[-1] < losses[0]

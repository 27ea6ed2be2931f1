import torch

from mugv.retrieval.cross_modal import CrossModalLayer
from mugv.retrieval.frame_selector import FrameSelector, PerturbedTopK

BERT = {
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "layer_norm_eps": 1e-12,
}


def _inputs(b=2, length=5, t=3, n=4, c=16):
    torch.manual_seed(1)
    text = torch.randn(b, length, c, dtype=torch.float64)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[1, 3:] = False
    patches = torch.randn(b, t, n, c, dtype=torch.float64)
    cls = torch.randn(b, t, c, dtype=torch.float64)
    return text, mask, patches, cls


def _attend(q, keys, values):
    """One query vector (d,), keys/values (S, d): plain softmax attention."""
    return ((keys @ q) / q.shape[0] ** 0.5).softmax(0) @ values


def test_t2w_matches_per_word_loop_reference():
    torch.manual_seed(0)
    layer = CrossModalLayer(BERT, "t2w").double().eval()
    text, mask, patches, _ = _inputs()
    with torch.no_grad():
        ours = layer.t2w(text, mask, patches)
        tr, attn = layer.trajectory, layer.text.attention
        b, length, _c = text.shape
        ref = torch.zeros_like(text)
        for bi in range(b):
            for w in range(length):
                heads = []
                for h in range(2):
                    sl = slice(8 * h, 8 * h + 8)
                    # the word's soft trajectory: one vector per frame
                    traj = []
                    for t in range(patches.shape[1]):
                        q = tr.query(text[bi, w])[sl]
                        k = tr.key(patches[bi, t])[:, sl]
                        traj.append(_attend(q, k, patches[bi, t][:, sl]))
                    heads.append(torch.stack(traj))
                traj = tr.norm(tr.proj(torch.cat(heads, -1)))  # (T, C)
                valid = text[bi][mask[bi]]
                context = torch.cat([valid, traj])  # all text tokens + own trajectory
                out = []
                for h in range(2):
                    sl = slice(8 * h, 8 * h + 8)
                    q = attn.query(text[bi, w])[sl]
                    out.append(_attend(q, attn.key(context)[:, sl], attn.value(context)[:, sl]))
                ref[bi, w] = attn.output(text[bi, w], torch.cat(out))
    torch.testing.assert_close(ours, ref)


def test_w2p_patches_see_words_and_their_own_frame_only():
    torch.manual_seed(0)
    layer = CrossModalLayer(BERT, "t2w").double().eval()
    text, mask, patches, cls = _inputs()
    other = patches.clone()
    other[:, 1] += torch.randn_like(other[:, 1])
    other_text = text.clone()
    other_text[:, 2] += torch.randn_like(other_text[:, 2])
    with torch.no_grad():
        p0, _ = layer.w2p(text, mask, patches, cls)
        p1, _ = layer.w2p(text, mask, other, cls)
        p2, _ = layer.w2p(other_text, mask, patches, cls)
    torch.testing.assert_close(p0[:, [0, 2]], p1[:, [0, 2]])  # other frames untouched
    assert not torch.allclose(p0[:, 1], p1[:, 1])
    assert not torch.allclose(p0, p2)  # words reach every frame


def test_padding_tokens_are_ignored_by_both_streams():
    torch.manual_seed(0)
    text, mask, patches, cls = _inputs()
    changed = text.clone()
    changed[1, 3:] = torch.randn_like(changed[1, 3:])
    for mode in ("t2w", "p2w"):
        layer = CrossModalLayer(BERT, mode).double().eval()
        with torch.no_grad():
            a = layer(text, mask, patches, cls)
            b = layer(changed, mask, patches, cls)
        torch.testing.assert_close(a[0][1, :3], b[0][1, :3])
        torch.testing.assert_close(a[1], b[1])


def test_perturbed_topk_eval_is_hard_topk_in_time_order():
    torch.manual_seed(0)
    sel = FrameSelector(8, keep=0.5).eval()
    frame_cls, text_cls = torch.randn(2, 6, 8), torch.randn(2, 8)
    frames = torch.arange(6.0)[None, :, None].expand(2, 6, 1)
    _, picked = sel(frame_cls, text_cls, frames)
    assert picked.shape == (2, 3, 1)
    assert (picked.squeeze(-1).diff(dim=1) > 0).all()


def test_perturbed_topk_gradient_matches_finite_difference_of_expectation():
    torch.manual_seed(0)
    scores = torch.tensor([[0.0, 0.1, 0.3, 0.25]], dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([[[1.0, 2.0, -1.0, 0.5]]], dtype=torch.float64).expand(1, 2, 4)
    sigma, samples = 0.2, 20000
    torch.manual_seed(1)
    (PerturbedTopK.apply(scores, 2, samples, sigma) * weights).sum().backward()

    def expect(s):
        torch.manual_seed(2)
        return float((PerturbedTopK.apply(s, 2, samples, sigma) * weights).sum())

    eps = 0.05
    for i in range(4):
        d = torch.zeros_like(scores)
        d[0, i] = eps
        fd = (expect(scores.detach() + d) - expect(scores.detach() - d)) / (2 * eps)
        assert abs(fd - float(scores.grad[0, i])) < 0.35, (i, fd, scores.grad)

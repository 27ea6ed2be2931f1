"""TSG encoder/decoder: edge mask, padding invariance, empty memories, caches, save/load."""

from __future__ import annotations

import math

import pytest
import torch

from mugv.captioning import ConfigError, GraphError, Vocabulary
from mugv.captioning.decoding import beam_search, greedy, sample
from mugv.captioning.graph import collate_graphs, graph_tokens
from mugv.captioning.layers import Attention
from mugv.captioning.model import TSG, TSGConfig, tsg_config
from mugv.data import Relation, SceneGraph, SceneObject


def make_graphs() -> list[SceneGraph]:
    g1 = SceneGraph(
        objects=[
            SceneObject(1, "circle", ["red", "small"]),
            SceneObject(2, "square", ["blue"]),
            SceneObject(3, "triangle", []),
        ],
        relations=[Relation(1, "left of", 2), Relation(3, "above", 1)],
    )
    g2 = SceneGraph(objects=[SceneObject(7, "square", [])])  # no attributes, no relations
    return [g1, g2]


LABELS = Vocabulary.build(graph_tokens(g)[0] for g in make_graphs())


def tiny(**kw) -> TSG:
    torch.manual_seed(0)
    return TSG(tsg_config("tiny", vocab_size=12, num_labels=len(LABELS), **kw)).eval()


def test_edge_mask_follows_the_spec():
    batch = collate_graphs(make_graphs(), LABELS)
    O, A, R = 3, 3, 2  # noqa: E741
    assert batch.object_labels.shape == (2, O)
    e = batch.edges[0]
    expect = torch.eye(O + A + R, dtype=torch.bool)
    expect[:3, :3] = True
    for j, obj in enumerate([0, 0, 1]):  # red, small -> circle; blue -> square
        expect[O + j, obj] = expect[obj, O + j] = True
    for r, (s, o) in enumerate([(0, 1), (2, 0)]):
        for end in (s, o):
            expect[O + A + r, end] = expect[end, O + A + r] = True
    assert torch.equal(e, expect)
    # the second graph: one object, every padding node sees only itself
    assert torch.equal(batch.edges[1], torch.eye(O + A + R, dtype=torch.bool))
    assert batch.attribute_mask[1].sum() == 0 and batch.relation_mask[1].sum() == 0


def test_malformed_graphs():
    g = make_graphs()[0]
    g.relations.append(Relation(1, "near", 99))  # dangling id (added after validation)
    with pytest.raises(GraphError, match="id 99, not among"):
        collate_graphs([g], LABELS)
    with pytest.raises(GraphError, match="no graphs"):
        collate_graphs([], LABELS)
    unknown = SceneGraph(objects=[SceneObject(1, "zebra", ["striped"])])
    batch = collate_graphs([unknown], LABELS)
    assert batch.object_labels[0, 0] == LABELS.unk_id == batch.attribute_labels[0, 0]
    empty = collate_graphs([SceneGraph(objects=[])], LABELS)
    assert empty.object_mask.sum() == 1 and empty.object_labels[0, 0] == LABELS.unk_id
    with pytest.raises(GraphError, match="region features of size 4"):
        collate_graphs(make_graphs(), LABELS, feature_dim=4)


def test_attention_matches_float64_reference():
    torch.manual_seed(0)
    attn = Attention(16, 2, 0.0).double()
    x, mem = torch.randn(2, 5, 16).double(), torch.randn(2, 7, 16).double()
    mask = torch.rand(2, 5, 7) > 0.3
    mask[..., 0] = True
    q = attn.q_proj(x).view(2, 5, 2, 8).transpose(1, 2)
    k = attn.k_proj(mem).view(2, 7, 2, 8).transpose(1, 2)
    v = attn.v_proj(mem).view(2, 7, 2, 8).transpose(1, 2)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(8)
    s = s.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
    ref = attn.out_proj((s @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x, mem, mask), ref)


@pytest.mark.parametrize("use_experts", [True, False])
def test_padding_invariance_and_no_nan(use_experts):
    model = tiny(use_experts=use_experts)
    graphs = make_graphs()
    tokens = torch.tensor([[1, 5, 6, 7, 2]])
    both = collate_graphs(graphs, LABELS)
    alone = collate_graphs(graphs[1:], LABELS)
    logits_b, routing_b = model(both, tokens.repeat(2, 1))
    logits_a, _ = model(alone, tokens)
    assert torch.isfinite(logits_b).all()
    torch.testing.assert_close(logits_b[1], logits_a[0], atol=1e-5, rtol=1e-5)
    if use_experts:
        assert routing_b.shape == (2, 5, 1, 3)
        torch.testing.assert_close(routing_b.sum(-1), torch.ones(2, 5, 1))
        assert (routing_b[1, ..., 1:] == 0).all()  # empty attribute/relation experts get 0
        assert (routing_b[0] > 0).all()
    else:
        assert routing_b is None


def test_routing_is_softmax_of_query_dot_expert_output():
    model = tiny()
    batch = collate_graphs(make_graphs()[:1], LABELS)
    layer = model.decoder.layers[0]
    captured = {}
    layer.norm2.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o))
    outs = []
    for attn in layer.cross_attn:
        attn.register_forward_hook(lambda m, i, o: outs.append(o))
    tokens = torch.tensor([[1, 5, 6]])
    cache = model.start(model.encode(batch))
    _, routing = model.step(tokens, cache)
    ref_outs = torch.stack(
        [
            a.attend(captured["q"], k, v, m)
            for a, (k, v, m) in zip(layer.cross_attn, cache.cross[0])
        ],
        dim=2,
    )
    logits = (captured["q"][:, :, None] * ref_outs).sum(-1) / math.sqrt(32)
    torch.testing.assert_close(routing[:, :, 0], logits.softmax(-1))


def test_cached_decoding_equals_teacher_forcing():
    model = tiny()
    batch = collate_graphs(make_graphs(), LABELS)
    out = greedy(model, batch, max_length=6)
    tokens = torch.cat([torch.ones(2, 1, dtype=torch.long), out.tokens], dim=1)
    logits, routing = model(batch, tokens[:, :-1])
    assert torch.equal(logits.argmax(-1)[0], out.tokens[0])
    torch.testing.assert_close(routing[0], out.routing[0], atol=1e-5, rtol=1e-5)
    beam1 = beam_search(model, batch, beam_size=1, length_penalty=0.0, max_length=6)
    assert torch.equal(beam1.tokens, out.tokens)


def test_beam_search_beats_or_ties_greedy_and_sampling_shapes():
    model = tiny()
    batch = collate_graphs(make_graphs(), LABELS)
    g = greedy(model, batch, max_length=8)
    b = beam_search(model, batch, beam_size=5, length_penalty=0.0, max_length=8)
    assert (b.scores >= g.scores - 1e-5).all()
    s = sample(
        model, batch, num_samples=3, max_length=8, generator=torch.Generator().manual_seed(0)
    )
    assert s.tokens.shape[0] == 6 and s.routing.shape[0] == 6


def test_feature_objects_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = TSG(
        tsg_config(
            "tiny", vocab_size=12, num_labels=len(LABELS), object_input="feature", feature_dim=4
        )
    ).eval()
    graphs = make_graphs()
    for g in graphs:
        for o in g.objects:
            o.feature = torch.randn(4).numpy()
    batch = collate_graphs(graphs, LABELS, feature_dim=4)
    out = greedy(model, batch, max_length=5)
    model.save_pretrained(tmp_path)
    again = TSG.from_pretrained(tmp_path).eval()
    assert torch.equal(greedy(again, batch, max_length=5).tokens, out.tokens)


def test_config_errors():
    with pytest.raises(ConfigError, match="feature_dim"):
        TSGConfig(vocab_size=10, num_labels=5, object_input="feature")
    with pytest.raises(ConfigError, match="num_heads"):
        TSGConfig(vocab_size=10, num_labels=5, d_model=30, num_heads=4)
    with pytest.raises(ConfigError, match="choose one of"):
        tsg_config("huge", vocab_size=10, num_labels=5)
    paper = tsg_config("paper", vocab_size=10000, num_labels=500)
    assert (paper.d_model, paper.encoder_layers, paper.num_heads, paper.d_ff) == (512, 6, 8, 2048)

"""MUGDiT behaviour: shapes, save/load, null caption, spec choice, single-rank linears, input
errors."""

import json

import pytest
import torch
from _mugdit_reference import randomize
from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
from torch import nn

from mugv.dit import DiTConfig, DiTError, MUGDiT, default_spec, dit_config, local_spec, te_spec
from mugv.dit.adaln import token_modulation
from mugv.dit.attention import SHORT_KEYS, SDPAttention, cpu_attention
from mugv.dit.model import megatron_config
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow
from mugv.dit.specs import ColumnLinear, RowLinear
from mugv.infra import single_process


def inputs(batch=2, frames=2, size=8, length=4, text_dim=32):
    g = torch.Generator().manual_seed(0)
    return dict(
        x=torch.randn(batch, 24, frames, size, size, generator=g),
        timestep=torch.rand(batch, generator=g),
        text=torch.randn(batch, length, text_dim, generator=g),
        text_mask=torch.ones(batch, length, dtype=torch.bool),
        fps=torch.full((batch,), 8.0),
    )


@pytest.fixture
def model():
    with single_process(seed=0):
        net = MUGDiT(dit_config("debug"))
        randomize(net, seed=1)
        yield net


def test_untrained_model_predicts_zero_velocity():
    with single_process(seed=0):
        net = MUGDiT(dit_config("debug"))
        out = net(**inputs())
    assert out.shape == (2, 24, 2, 8, 8) and out.abs().max() == 0


def test_save_and_from_pretrained_round_trip(model, tmp_path):
    expected = model(**inputs())
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["hidden_size"] == 24
    loaded = MUGDiT.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded(**inputs()), expected)
    with pytest.raises(DiTError, match=r"config\.json"):
        MUGDiT.from_pretrained(tmp_path / "missing")


def test_drop_text_uses_null_caption(model):
    args = inputs()
    other = dict(args, text=torch.randn_like(args["text"]), text_mask=args["text_mask"].clone())
    other["text_mask"][:, 2:] = False
    drop = torch.tensor([True, False])
    a = model(**args, drop_text=drop)
    b = model(**other, drop_text=drop)
    torch.testing.assert_close(a[0], b[0])  # dropped: the text does not matter
    assert not torch.allclose(a[1], b[1])


@pytest.mark.parametrize("length", [1, 4, 16, 40])
def test_null_caption_ignores_the_batch_text_length(model, length):
    """A dropped sample sees the whole null caption (text_len = 16 rows) and nothing else,
    whether its batch's texts are shorter than that, as long or longer; the kept sample only
    its own valid tokens."""
    args = inputs(length=length)
    drop = torch.tensor([True, False])
    alone = model(**{k: v[:1] for k, v in inputs(length=1).items()}, drop_text=drop[:1])
    kept = dict(args, text=args["text"][:, :1], text_mask=args["text_mask"][:, :1])
    short = model(**kept, drop_text=drop)
    args["text"][1, :1] = kept["text"][1]
    args["text_mask"][1, 1:] = False  # sample 1 keeps one valid token, padded to `length`
    out = model(**args, drop_text=drop)
    torch.testing.assert_close(out[0], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, short, rtol=1e-5, atol=1e-6)


def test_text_padding_is_ignored(model):
    args = inputs()
    args["text_mask"][0, 2:] = False
    padded = dict(args, text=args["text"].clone())
    padded["text"][0, 2:] = 100.0
    torch.testing.assert_close(model(**args), model(**padded))


def test_cpu_core_attention_runs_in_fp32_under_bf16():
    """bf16 attention kernels are slow on CPU: under autocast or on bf16 inputs the core
    attention computes in fp32 and returns the caller's dtype."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 2, 3, 8, generator=g) for _ in range(3))  # (s, B, heads, D)
    mask = torch.zeros(2, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., 4:] = True
    with single_process(seed=0):
        core = SDPAttention(megatron_config(dit_config("debug"), torch.float32), 1, None, "self")

    def reference(q, k, v):
        q, k, v = (t.double().permute(1, 2, 0, 3) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=~mask)
        return out.permute(2, 0, 1, 3).flatten(2)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = core(q, k, v, mask)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(q, k, v), rtol=1e-6, atol=1e-6)
    low = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    out = core(*low, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), reference(*low), rtol=1e-2, atol=1e-2)
    out.float().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 for t in low)


def test_compiled_model_equals_eager(model):
    args = inputs()
    args["text_mask"][1, 3:] = False
    drop = torch.tensor([False, True])
    expected = model(**args, drop_text=drop, num_frames=torch.tensor([2, 1]))
    compiled = torch.compile(model, dynamic=False)
    out = compiled(**args, drop_text=drop, num_frames=torch.tensor([2, 1]))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_regional_compile_equals_eager_with_one_block_graph(model):
    """`MUGDiT.compile` compiles the blocks, which share one graph and meet one signature:
    a batch with an image among videos, one without, and one with no text padding all run
    it, matching eager."""
    from torch._dynamo.utils import counters

    args = inputs()
    args["text_mask"][1, 3:] = False
    drop = torch.tensor([False, True])
    full_text = dict(args, text_mask=torch.ones_like(args["text_mask"]))  # nothing to mask
    calls = [
        (args, torch.tensor([2, 1])),
        (args, torch.tensor([2, 2])),
        (full_text, torch.tensor([2, 2])),
    ]
    expected = [model(**a, drop_text=drop, num_frames=n) for a, n in calls]
    keys = set(model.state_dict())
    torch._dynamo.reset()
    counters.clear()
    model.compile(dynamic=False)
    out = [model(**a, drop_text=drop, num_frames=n) for a, n in calls]
    assert counters["stats"]["unique_graphs"] == 1
    assert set(model.state_dict()) == keys  # checkpoints keep their names
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keys", [9, SHORT_KEYS + 3])
def test_cpu_attention_equals_float64_sdpa(keys):
    """The explicit product (short keys) and the flash kernel (long) match SDPA in float64,
    masked keys included, forward and backward."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (5, keys, keys))
    allowed = torch.ones(2, 1, 1, keys, dtype=torch.bool)
    allowed[1, ..., keys // 2 :] = False
    grad = torch.randn(2, 3, 5, 8, generator=g)
    results = []
    for attend, dtype in ((cpu_attention, torch.float32), (None, torch.float64)):
        leaves = [t.to(dtype).detach().requires_grad_() for t in (q, k, v)]
        if attend is None:
            out = torch.nn.functional.scaled_dot_product_attention(*leaves, attn_mask=allowed)
        else:
            out = attend(*leaves, allowed)
        out.backward(grad.to(dtype))
        results.append([out, *(t.grad for t in leaves)])
    for got, want in zip(*results):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)


def test_fixed_signature_loss_equals_the_default(model):
    """A compiled model is called with cond_mask and num_frames on every video batch; on a
    batch that needs neither (t2v only) the loss is the one the shorter call gives."""
    flow = RectifiedFlow(FlowConfig(task_probs={"t2v": 1.0}))
    args = inputs(batch=3)
    losses = [
        flow.loss(
            model,
            args["x"],
            args["text"],
            args["text_mask"],
            args["fps"],
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
            fixed_signature=fixed,
        )[0]
        for fixed in (False, True)
    ]
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-7)


def test_default_spec_is_local_on_cpu():
    spec = default_spec()
    assert spec.submodules.self_attention.core_attention is SDPAttention
    assert type(spec) is type(local_spec())


def test_projection_inputs_are_contiguous(model):
    """TransformerEngine's linears `.view` their input, which fails on a transposed view."""
    contiguous = []
    hooks = [
        m.register_forward_pre_hook(lambda _, args: contiguous.append(args[0].is_contiguous()))
        for m in model.modules()
        if isinstance(m, (ColumnLinear, RowLinear))
    ]
    model(**inputs())
    for hook in hooks:
        hook.remove()
    assert len(contiguous) == 7 * len(model.blocks) and all(contiguous)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_te_spec_equals_local_spec(dtype):
    """TE linears and attention (unfused in float32, fused or flash in bf16) compute the local
    spec's model from the same weights, text padding included."""
    pytest.importorskip("transformer_engine")
    config = DiTConfig(hidden_size=192, num_heads=2, depth=2, text_dim=32, text_len=8)
    args = {k: v.cuda() for k, v in inputs().items()}
    args["text_mask"][0, 2:] = False
    with single_process(seed=0):
        local = MUGDiT(config, spec=local_spec())
        randomize(local, seed=1)
        te = MUGDiT(config, spec=te_spec())
        missing, unexpected = te.load_state_dict(local.state_dict(), strict=False)
        assert not unexpected and all(k.endswith("_extra_state") for k in missing)
        local, te = local.to("cuda", dtype), te.to("cuda", dtype)
        expected, got = local(**args).float(), te(**args).float()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol * expected.abs().max().item())


@pytest.mark.parametrize("skip_bias_add", [False, True])
@pytest.mark.parametrize(
    ("fast", "megatron", "kwargs"),
    [
        (ColumnLinear, ColumnParallelLinear, {"gather_output": False}),
        (RowLinear, RowParallelLinear, {"input_is_parallel": True}),
    ],
)
def test_single_rank_linears_equal_megatron_linears(fast, megatron, kwargs, skip_bias_add):
    """The local spec's linears skip Megatron's autograd function on one TP rank: same state
    dict, outputs, returned bias and gradients as the Megatron class they extend."""
    with single_process(seed=0):
        config = megatron_config(dit_config("debug"), torch.float64)
        args = dict(config=config, init_method=nn.init.normal_, bias=True, is_expert=False)
        ours = fast(16, 12, skip_bias_add=skip_bias_add, **args, **kwargs)
        theirs = megatron(16, 12, skip_bias_add=skip_bias_add, **args, **kwargs)
        with torch.no_grad():
            ours.bias.normal_()
        theirs.load_state_dict(ours.state_dict())
        assert ours.single_rank and set(ours.state_dict()) == set(theirs.state_dict())
        x = torch.randn(5, 3, 16, dtype=torch.float64)
        results = []
        for linear in (ours, theirs):
            x_in = x.clone().requires_grad_(True)
            out, bias = linear(x_in)
            assert (bias is linear.bias) if skip_bias_add else bias is None
            (out * torch.arange(12.0, dtype=torch.float64)).sum().backward()
            results.append((out, x_in.grad, linear.weight.grad, linear.bias.grad))
    for got, expected in zip(*results):
        if expected is None:  # skip_bias_add: the caller adds the bias, no gradient here
            assert got is None
        else:
            torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"x": torch.randn(2, 12, 2, 8, 8)}, "x must be"),
        ({"x": torch.randn(2, 24, 2, 7, 8)}, "not divisible"),
        ({"timestep": torch.rand(3)}, "timestep must have shape"),
        ({"text": torch.randn(2, 4, 7)}, "text must be"),
        ({"cond_mask": torch.ones(2, 3, dtype=torch.bool)}, "cond_mask must have shape"),
    ],
)
def test_bad_inputs_raise_clear_errors(model, change, match):
    with pytest.raises(DiTError, match=match):
        model(**{**inputs(), **change})


def test_needs_parallel_state():
    with pytest.raises(DiTError, match="single_process"):
        MUGDiT(dit_config("debug"))


def test_token_modulation_selects_exactly_and_routes_gradients():
    """Conditioning tokens take the t = 0 modulation bit for bit, and each token's gradient
    reaches only the embedding it took (the where-on-a-stack reference)."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(6, 8, generator=g, requires_grad=True)
    t_mod = torch.randn(3, 48, generator=g, requires_grad=True)
    t0_mod = torch.randn(3, 48, generator=g, requires_grad=True)
    cond = torch.rand(5, 3, generator=g) < 0.4  # (S, B)
    weights = torch.randn(6, 5, 3, 8, generator=g)

    got = token_modulation(table, t_mod, t0_mod, cond)
    mod, mod0 = table + t_mod.view(3, 6, 8), table + t0_mod.view(3, 6, 8)
    want = torch.where(cond[..., None, None], mod0[None], mod[None]).unbind(2)
    assert len(got) == 6
    for a, b in zip(got, want):
        assert a.shape == (5, 3, 8) and torch.equal(a, b)
    grads = torch.autograd.grad(
        sum((w * a).sum() for w, a in zip(weights, got)), (table, t_mod, t0_mod)
    )
    ref = torch.autograd.grad(
        sum((w * b).sum() for w, b in zip(weights, want)), (table, t_mod, t0_mod)
    )
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    shared = token_modulation(table, t_mod, None, None)
    assert len(shared) == 6 and shared[0].shape == (1, 3, 8)

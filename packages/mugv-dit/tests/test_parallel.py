"""Parallel layouts equal the single-rank model (float64, 2 gloo ranks): TP=2 with and
without sequence parallelism, CP=2 (also with padding frames), PP=2 stage forward/backward;
recompute on == off."""

import dataclasses

import pytest
import torch
import torch.distributed as dist
from _mugdit_reference import randomize
from megatron.core import parallel_state
from torch.nn.modules.module import register_module_forward_pre_hook

from mugv.dit import DiTConfig, MUGDiT
from mugv.dit.attention import SDPAttention
from mugv.dit.pretrained import full_state_dict, load_full_state_dict
from mugv.dit.specs import ColumnLinear, RowLinear
from mugv.infra import ParallelConfig, single_process
from mugv.infra.spawn import run_ranks

CONFIG = DiTConfig(hidden_size=24, num_heads=2, depth=2, text_dim=16, text_len=8)


def make_inputs(batch=2, frames=2, size=8, length=5):
    g = torch.Generator().manual_seed(3)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 2:] = False
    return dict(
        x=torch.randn(batch, 24, frames, size, size, generator=g, dtype=torch.float64),
        timestep=torch.rand(batch, generator=g, dtype=torch.float64),
        text=torch.randn(batch, length, 16, generator=g, dtype=torch.float64),
        text_mask=mask,
        fps=torch.tensor([8.0, 24.0], dtype=torch.float64),
        cond_mask=torch.tensor([[True, False], [False, False]]),
        frame_index=torch.tensor([[0, 1], [30, 31]]),
        drop_text=torch.tensor([False, True]),
    )


def _full_grads(model) -> dict[str, torch.Tensor]:
    """Gradients gathered over TP and averaged over DP x CP, by global name."""
    tp_group = parallel_state.get_tensor_model_parallel_group()
    dp_cp = parallel_state.get_data_parallel_group(with_context_parallel=True)
    tp = dist.get_world_size(tp_group)
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad.clone()
        dist.all_reduce(grad, group=dp_cp)
        grad /= dist.get_world_size(dp_cp)
        if tp > 1 and getattr(param, "tensor_model_parallel", False):
            parts = [torch.empty_like(grad) for _ in range(tp)]
            dist.all_gather(parts, grad.contiguous(), group=tp_group)
            grad = torch.cat(parts, dim=param.partition_dim)
        grads[name.replace("blocks.", f"blocks.@{model.layer_offset}+", 1)] = grad
    return {_global(k): v for k, v in grads.items()}


def _global(name: str) -> str:
    if "@" not in name:
        return name
    head, rest = name.split("@", 1)
    offset, rest = rest.split("+", 1)
    index, tail = rest.split(".", 1)
    return f"{head}{int(offset) + int(index)}.{tail}"


def _forward_backward(state, inputs, weight, config=CONFIG, **kwargs):
    model = MUGDiT(config, **kwargs).double()
    load_full_state_dict(model, state)
    out = model(**inputs)
    (out * weight).sum().backward()
    return model, out.detach()


def reference(config=CONFIG, **extra_inputs):
    """TP=CP=PP=1 model: its full weights, the inputs, output and gradients."""
    inputs = {**make_inputs(), **extra_inputs}
    with single_process(seed=0):
        model = MUGDiT(config).double()
        randomize(model, seed=4)
        state = full_state_dict(model)
        weight = torch.randn(inputs["x"].shape, dtype=torch.float64)
        model, out = _forward_backward(state, inputs, weight, config)
        grads = _full_grads(model)
    return state, inputs, weight, out, grads


def _tp_rank(state, inputs, weight):
    results = []
    for sp in (False, True):
        model, out = _forward_backward(state, inputs, weight, sequence_parallel=sp)
        linears = [m for m in model.modules() if isinstance(m, (ColumnLinear, RowLinear))]
        assert linears and not any(m.single_rank for m in linears)  # Megatron's TP path
        results.append((out, _full_grads(model)))
    gathered = full_state_dict(model)  # what save_pretrained writes: TP shards gathered
    assert set(gathered) == set(state)
    assert all(torch.equal(gathered[k], v) for k, v in state.items())
    return results


def _cp_rank(state, inputs, weight):
    calls = []

    def record(module, args):
        if isinstance(module, SDPAttention):
            calls.append((module.attention_type, args[1].shape[0], args[3]))

    hook = register_module_forward_pre_hook(record)
    try:
        model, out = _forward_backward(state, inputs, weight)
    finally:
        hook.remove()
    # What TransformerEngine's attention needs: q and kv lengths differ, so "cross" with a
    # (query, key) mask pair; keys in sequence order with the padding last, because its fused
    # kernels read a padding mask as per-sample lengths.
    assert len(calls) == 2 * CONFIG.depth
    for attention_type, keys, mask in calls:
        assert attention_type == "cross" and isinstance(mask, tuple)
        ignored = mask[1][:, 0, 0]  # (B, keys) True = ignore
        lengths = (~ignored).sum(dim=1, keepdim=True)
        assert torch.equal(ignored, torch.arange(keys) >= lengths)
    return out, _full_grads(model)


def _assert_same(out, grads, expected_out, expected_grads):
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-10)
    assert set(grads) == set(expected_grads)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-10, msg=name)


@pytest.mark.distributed
def test_tensor_parallel_2_equals_1():
    state, inputs, weight, out, grads = reference()
    per_rank = run_ranks(
        _tp_rank, 2, parallel=ParallelConfig(tensor=2), state=state, inputs=inputs, weight=weight
    )
    for results in per_rank:
        for rank_out, rank_grads in results:  # sequence parallel off, on
            _assert_same(rank_out, rank_grads, out, grads)


@pytest.mark.distributed
def test_context_parallel_2_equals_1():
    state, inputs, weight, out, grads = reference()
    per_rank = run_ranks(
        _cp_rank, 2, parallel=ParallelConfig(context=2), state=state, inputs=inputs, weight=weight
    )
    for rank_out, rank_grads in per_rank:
        _assert_same(rank_out, rank_grads, out, grads)


@pytest.mark.distributed
def test_context_parallel_2_equals_1_with_padding_frames():
    """A one-frame sample among two-frame ones (`num_frames`): its padding tokens move behind
    its end token, so under CP the gathered keys still end in each sample's padding."""
    state, inputs, weight, out, grads = reference(num_frames=torch.tensor([2, 1]))
    assert torch.all(out[1, :, 1:] == 0)  # padding frames predict nothing
    per_rank = run_ranks(
        _cp_rank, 2, parallel=ParallelConfig(context=2), state=state, inputs=inputs, weight=weight
    )
    for rank_out, rank_grads in per_rank:
        _assert_same(rank_out, rank_grads, out, grads)


def _pp_rank(state, inputs, weight):
    """Stage 0 embeds and runs block 0, stage 1 runs block 1 and the final layer."""
    model = MUGDiT(CONFIG).double()
    load_full_state_dict(model, state)
    rank = parallel_state.get_pipeline_model_parallel_rank()
    assert len(model.blocks) == 1 and model.layer_offset == rank
    if rank == 0:
        hidden = model(**inputs)
        dist.send(hidden.detach().contiguous(), dst=1)
        grad = torch.empty(hidden.shape, dtype=hidden.dtype)
        dist.recv(grad, src=1)
        hidden.backward(grad)
        out = None
    else:
        hidden = torch.empty(34, 2, 24, dtype=torch.float64)  # (2 + 2*4*4 tokens, B, d)
        dist.recv(hidden, src=0)
        hidden.requires_grad_(True)
        model.set_input_tensor(hidden)
        out = model(**inputs)
        (out * weight).sum().backward()
        dist.send(hidden.grad.contiguous(), dst=0)
        out = out.detach()
    grads = {}
    for name, param in model.named_parameters():
        grad = param.grad.clone()
        if name.startswith(("t_embedder.", "fps_embedder.", "t_block.", "y_embedder.")):
            dist.all_reduce(grad)  # conditioning embedders live on both stages
        grads[_global(name.replace("blocks.", f"blocks.@{model.layer_offset}+", 1))] = grad
    return out, grads


@pytest.mark.distributed
def test_pipeline_parallel_stages_equal_whole_model():
    state, inputs, weight, out, grads = reference()
    (_, grads0), (out1, grads1) = run_ranks(
        _pp_rank, 2, parallel=ParallelConfig(pipeline=2), state=state, inputs=inputs, weight=weight
    )
    torch.testing.assert_close(out1, out, rtol=1e-5, atol=1e-10)
    merged = {**grads0, **grads1}
    assert set(merged) == set(grads)
    for name, grad in grads.items():
        torch.testing.assert_close(merged[name], grad, rtol=1e-5, atol=1e-10, msg=name)


def test_recompute_equals_no_recompute():
    state, inputs, weight, out, grads = reference()
    with single_process():
        config = dataclasses.replace(CONFIG, recompute=True)
        model, rec_out = _forward_backward(state, inputs, weight, config)
        rec_grads = _full_grads(model)
    _assert_same(rec_out, rec_grads, out, grads)

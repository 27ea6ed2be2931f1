"""LoRA: the adapter's maths against a written-out formula, merge exactness, adapter-only
training and files, and TP = 2 equal to TP = 1 over 2 gloo ranks (float64)."""

import pytest
import torch
import torch.distributed as dist
from _mugdit_reference import randomize
from megatron.core import parallel_state
from test_parallel import make_inputs
from torch import nn

from mugv.dit import DiTConfig, MUGDiT
from mugv.dit.lora import (
    LoRAConfig,
    LoRAError,
    LoRALinear,
    adapters_disabled,
    apply_lora,
    load_adapters,
    lora_state_dict,
    merge_lora,
    save_adapters,
)
from mugv.dit.pretrained import full_state_dict, load_full_state_dict
from mugv.infra import ParallelConfig, single_process
from mugv.infra.spawn import run_ranks

CONFIG = DiTConfig(hidden_size=24, num_heads=2, depth=2, text_dim=16, text_len=8)
LORA = LoRAConfig(rank=3, alpha=6.0)


def _randomize_adapters(model, seed=5):
    """Non-zero B (A is random already), so the adapters change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g, dtype=torch.float64))


def _adapted_model(seed=4):
    model = MUGDiT(CONFIG).double()
    randomize(model, seed=seed)
    apply_lora(model, LORA, seed=1)
    _randomize_adapters(model)
    return model


def test_plain_linear_matches_the_written_out_formula():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 4)).double()
    w, b = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    names = apply_lora(net, LoRAConfig(rank=2, alpha=3.0, targets=("0",)), seed=2)
    assert names == ["0"] and isinstance(net[0], LoRALinear) and isinstance(net[2], nn.Linear)
    lora = net[0]
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(6, 5, dtype=torch.float64)
    expected = x @ w.T + b + 1.5 * (x @ lora.lora_A.T) @ lora.lora_B.T
    torch.testing.assert_close(lora(x), expected, rtol=0, atol=1e-12)
    # Kaiming-uniform A: bounded by 1/sqrt(in), not constant
    assert lora.lora_A.abs().max() <= 5**-0.5 and lora.lora_A.std() > 0.05


def test_untrained_adapters_leave_the_model_unchanged_and_only_they_train():
    inputs = make_inputs()
    with single_process(seed=0):
        model = MUGDiT(CONFIG).double()
        randomize(model, seed=4)
        before = model(**inputs)
        names = apply_lora(model, LORA)
        # 2 blocks x (self qkv, proj; cross q, kv, proj; fc1, fc2)
        assert len(names) == 14 and all(n.startswith("blocks.") for n in names)
        torch.testing.assert_close(model(**inputs), before, rtol=0, atol=1e-12)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert len(trainable) == 28 and all(n.endswith(("lora_A", "lora_B")) for n in trainable)


def test_merge_equals_the_adapted_model_and_restores_plain_names():
    inputs = make_inputs()
    with single_process(seed=0):
        model = MUGDiT(CONFIG).double()
        randomize(model, seed=4)
        base_out = model(**inputs)
        plain_names = set(full_state_dict(model))
        apply_lora(model, LORA, seed=1)
        _randomize_adapters(model)
        adapted = model(**inputs)
        with adapters_disabled(model):
            torch.testing.assert_close(model(**inputs), base_out, rtol=0, atol=1e-12)
        assert (adapted - base_out).abs().max() > 1e-2  # the adapters do something
        merge_lora(model)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
        assert set(full_state_dict(model)) == plain_names
        torch.testing.assert_close(model(**inputs), adapted, rtol=0, atol=1e-6)


def test_merge_in_float32_is_within_rounding():
    inputs = {k: v.float() if v.is_floating_point() else v for k, v in make_inputs().items()}
    with single_process(seed=0):
        model = _adapted_model().float()
        adapted = model(**inputs)
        merge_lora(model)  # outputs of size ~10: float32 rounding is ~1e-6
        torch.testing.assert_close(model(**inputs), adapted, rtol=1e-5, atol=5e-6)


def test_save_and_load_adapters_only(tmp_path):
    inputs = make_inputs()
    with single_process(seed=0):
        model = _adapted_model()
        adapted = model(**inputs)
        save_adapters(model, tmp_path)
        fresh = MUGDiT(CONFIG).double()
        randomize(fresh, seed=4)
        assert load_adapters(fresh, tmp_path) == LORA
        torch.testing.assert_close(fresh(**inputs), adapted, rtol=0, atol=0)
    state = lora_state_dict(model)
    assert len(state) == 28 and all(k.endswith(("lora_A", "lora_B")) for k in state)
    assert sum(v.numel() for v in state.values()) < 0.3 * sum(
        p.numel() for p in fresh.parameters() if not p.requires_grad
    )


def test_bad_targets_and_files_fail_with_the_fix():
    with single_process(seed=0):
        model = MUGDiT(CONFIG)
        with pytest.raises(LoRAError, match="match no module"):
            apply_lora(model, LoRAConfig(targets=("blocks.*.nothing",)))
        with pytest.raises(LoRAError, match="not a linear layer"):
            apply_lora(model, LoRAConfig(targets=("blocks.*.mlp",)))
        apply_lora(model, LORA)
        with pytest.raises(LoRAError, match="already has LoRA"):
            apply_lora(model, LORA)
        with pytest.raises(LoRAError, match=r"no adapter_config\.json"):
            load_adapters(MUGDiT(CONFIG), "/nonexistent")
    with pytest.raises(LoRAError, match=r"LoRAConfig\.rank"):
        LoRAConfig(rank=0)
    with pytest.raises(LoRAError, match=r"LoRAConfig\.targets"):
        LoRAConfig(targets="blocks.*")


def _lora_grads(model) -> dict[str, torch.Tensor]:
    """Adapter gradients gathered over TP, by name."""
    tp_group = parallel_state.get_tensor_model_parallel_group()
    tp = dist.get_world_size(tp_group)
    grads = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        grad = param.grad.clone()
        if tp > 1 and getattr(param, "tensor_model_parallel", False):
            parts = [torch.empty_like(grad) for _ in range(tp)]
            dist.all_gather(parts, grad.contiguous(), group=tp_group)
            grad = torch.cat(parts, dim=param.partition_dim)
        grads[name] = grad
    return grads


def _run(state, adapter_dir, inputs, weight, sequence_parallel=False):
    """Forward/backward of the adapted model; returns output, adapter grads, merged weights."""
    model = MUGDiT(CONFIG, sequence_parallel=sequence_parallel).double()
    load_full_state_dict(model, state)
    load_adapters(model, adapter_dir)
    out = model(**inputs)
    (out * weight).sum().backward()
    grads = _lora_grads(model)
    adapters = lora_state_dict(model)
    merge_lora(model)
    return out.detach(), grads, adapters, full_state_dict(model)


def _tp_rank(state, adapter_dir, inputs, weight):
    return [_run(state, adapter_dir, inputs, weight, sp) for sp in (False, True)]


@pytest.mark.distributed
def test_tensor_parallel_2_equals_1(tmp_path):
    inputs = make_inputs()
    with single_process(seed=0):
        model = _adapted_model()
        state = {k: v for k, v in full_state_dict(model).items() if "lora" not in k}
        state = {k.replace(".base.", "."): v for k, v in state.items()}
        save_adapters(model, tmp_path)
        weight = torch.randn(inputs["x"].shape, dtype=torch.float64)
        expected = _run(state, tmp_path, inputs, weight)
    per_rank = run_ranks(
        _tp_rank,
        2,
        parallel=ParallelConfig(tensor=2),
        state=state,
        adapter_dir=str(tmp_path),
        inputs=inputs,
        weight=weight,
    )
    out, grads, adapters, merged = expected
    for results in per_rank:
        for rank_out, rank_grads, rank_adapters, rank_merged in results:  # SP off, on
            torch.testing.assert_close(rank_out, out, rtol=1e-5, atol=1e-10)
            assert set(rank_grads) == set(grads) and len(grads) == 28
            for name, grad in grads.items():
                torch.testing.assert_close(rank_grads[name], grad, rtol=1e-5, atol=1e-10, msg=name)
            for name, value in adapters.items():
                torch.testing.assert_close(rank_adapters[name], value, rtol=0, atol=0, msg=name)
            for name, value in merged.items():
                torch.testing.assert_close(rank_merged[name], value, rtol=1e-12, atol=1e-12)


def test_trainer_checkpoints_and_resumes_adapters(tmp_path):
    from mugv.dit import FlowConfig, LatentTextDataset, RectifiedFlow, train_dit
    from mugv.infra.trainer import TrainerConfig

    g = torch.Generator().manual_seed(0)
    data = LatentTextDataset(
        torch.randn(8, 24, 2, 4, 4, generator=g),
        [torch.randn(3, 16, generator=g) for _ in range(8)],
        8.0,
        height=32,
        width=32,
    )
    flow = RectifiedFlow(FlowConfig(base_pixels=32 * 32))
    config = TrainerConfig(steps=3, lr=1e-2, ema_decay=0.9, checkpoint_dir=str(tmp_path))
    with single_process(seed=0) as info:
        model = MUGDiT(CONFIG)
        randomize(model, seed=4)  # an untrained MUGDiT's zero final layer passes no gradient
        apply_lora(model, LORA)
        trainer = train_dit(model, data, config, info=info, batch_size=4, flow=flow)
        trainer.fit()
        trained = lora_state_dict(model)
        assert any(float(v.abs().max()) > 0 for k, v in trained.items() if k.endswith("lora_B"))
        fresh = MUGDiT(CONFIG)
        apply_lora(fresh, LORA, seed=9)
        resumed = train_dit(fresh, data, config, info=info, batch_size=4, flow=flow)
        assert resumed.resume() == 3
        for name, value in lora_state_dict(fresh).items():
            torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
        assert set(resumed.ema.shadow) == {
            n for n, p in fresh.named_parameters() if p.requires_grad
        }

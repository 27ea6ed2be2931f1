"""MUGDiT trains under pipeline parallelism through the normal path (`train_dit`, `DiTStep`).

A pipeline schedule runs `step_fn` once per micro-batch and stage, so the rectified-flow loss
makes one forward over the whole batch (images padded among videos with `num_frames`); that
loss equals the former one-forward-per-task-group loss. Then PP=2 (Megatron's 1F1B over gloo)
matches PP=1 step by step, and its checkpoint and `save_pretrained` folder load at PP=1.
"""

from __future__ import annotations

import pytest
import torch
from megatron.core import parallel_state
from safetensors.torch import load_file

from mugv.dit.config import dit_config
from mugv.dit.model import MUGDiT
from mugv.dit.pretrained import full_state_dict, load_full_state_dict
from mugv.dit.rectified_flow import FlowConfig, RectifiedFlow, masked_mse
from mugv.dit.train import LatentTextDataset, train_dit
from mugv.infra import ParallelConfig, Trainer, TrainerConfig, manual_seed, single_process
from mugv.infra.parallel import DistInfo, dist_info
from mugv.infra.pipeline import global_names
from mugv.infra.spawn import run_ranks

CONFIG = dit_config("tiny", text_dim=16, depth=4, hidden_size=24, num_heads=2)
FLOW = FlowConfig(task_probs={"t2i": 1.0, "t2v": 1.0, "i2v": 1.0, "frames": 1.0})
STEPS = 3


def _perturbed_state() -> dict[str, torch.Tensor]:
    """Whole-model weights with every tensor jittered (the DiT init zeroes the output layer,
    which would leave most gradients zero)."""
    with single_process(seed=0):
        model = MUGDiT(CONFIG)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return full_state_dict(model)


def _per_group_loss(flow, model, latents, text, text_mask, fps, *, height, width, index, gen):
    """The former `RectifiedFlow.loss`: one forward per task group (images cropped to latent
    frame 0, videos whole), with the same draws in the same order."""
    batch, _, num_frames = latents.shape[:3]
    tasks = flow.sample_tasks(batch, num_frames, gen)
    drop_text = torch.rand(batch, generator=gen) < flow.config.text_dropout
    per_sample = torch.zeros(batch)
    groups = {
        "image": [i for i, k in enumerate(tasks) if k == "t2i"],
        "video": [i for i, k in enumerate(tasks) if k != "t2i"],
    }
    for group, idx in groups.items():
        if not idx:
            continue
        x0, group_index = latents[idx], index[idx]
        if group == "image":
            x0, group_index = x0[:, :, :1], group_index[:, :1]
        frames = x0.shape[2]
        cond = flow.cond_mask_for([tasks[i] for i in idx], frames, gen)
        t = flow.sample_t(len(idx), flow.ratio(height, width, frames), gen)
        noise = torch.randn(x0.shape, generator=gen)
        x_t = torch.where(cond.view(len(idx), 1, frames, 1, 1), x0, flow.add_noise(x0, noise, t))
        pred = model(
            x_t,
            t,
            text[idx],
            text_mask[idx],
            fps[idx],
            cond_mask=cond if cond.any() else None,
            frame_index=group_index,
            drop_text=drop_text[idx],
        )
        err = masked_mse(pred, flow.velocity(x0, noise), ~cond)
        per_sample = per_sample.index_put((torch.tensor(idx),), err)
    weights = torch.tensor([flow.config.task_weights[k] for k in tasks])
    logs = {
        f"loss/{k}": per_sample[torch.tensor([j == k for j in tasks])].mean()
        for k in dict.fromkeys(tasks)
    }
    return (weights * per_sample).sum() / batch, logs, tasks


def test_one_forward_loss_equals_the_per_group_forwards():
    state = _perturbed_state()
    g = torch.Generator().manual_seed(1)
    b = 12
    latents = torch.randn(b, CONFIG.in_channels, 3, 4, 4, generator=g)
    text, fps = torch.randn(b, 5, CONFIG.text_dim, generator=g), torch.full((b,), 8.0)
    text_mask = torch.arange(5) < torch.randint(1, 6, (b, 1), generator=g)
    index = torch.randint(0, 20, (b, 1), generator=g) + torch.arange(3)  # mid-video clips
    flow = RectifiedFlow(FLOW)
    losses, grads = [], []
    with single_process(seed=0):
        model = MUGDiT(CONFIG)
        load_full_state_dict(model, state)
        for fn in (_per_group_loss, None):
            model.zero_grad()
            gen = torch.Generator().manual_seed(3)
            if fn is None:
                args = dict(height=32, width=32, frame_index=index, generator=gen)
                loss, logs = flow.loss(model, latents, text, text_mask, fps, **args)
            else:
                args = dict(height=32, width=32, index=index, gen=gen)
                loss, logs, tasks = fn(flow, model, latents, text, text_mask, fps, **args)
            loss.backward()
            losses.append((loss.detach(), {k: v.detach() for k, v in logs.items()}))
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert "t2i" in tasks and len(set(tasks)) == 4  # images padded among videos
    (ref, ref_logs), (new, new_logs) = losses
    torch.testing.assert_close(new, ref, rtol=1e-5, atol=0)
    assert set(new_logs) == set(ref_logs)
    for key, value in ref_logs.items():
        torch.testing.assert_close(new_logs[key], value, rtol=1e-5, atol=0, msg=key)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-7, msg=name)


# -- PP=2 == PP=1 through train_dit ----------------------------------------------------------


def _dataset() -> LatentTextDataset:
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(16, CONFIG.in_channels, 3, 4, 4, generator=g)
    texts = [torch.randn(2 + i % 4, CONFIG.text_dim, generator=g) for i in range(16)]
    return LatentTextDataset(latents, texts, 8.0, height=32, width=32)


def _trainer_config(ckpt: str | None) -> TrainerConfig:
    return TrainerConfig(
        steps=STEPS,
        micro_batches=4,  # 1F1B warm-up, steady state and cool-down on the first stage
        lr=2e-3,
        grad_clip=0.5,  # active: the norm must be the one over both stages
        ema_decay=0.8,
        checkpoint_dir=ckpt,
    )


def _train(info: DistInfo, state: dict, ckpt: str | None = None) -> dict:
    model = MUGDiT(CONFIG)
    load_full_state_dict(model, state)
    manual_seed(3)  # stages built different modules: restart the shared stream
    trainer = train_dit(
        model,
        _dataset(),
        _trainer_config(ckpt),
        info=info,
        batch_size=4,
        flow=RectifiedFlow(FLOW),
        model_config={"dit": CONFIG.to_dict()},
    )
    record = {"loss": [], "grad_norm": [], "metrics": []}

    def on_step(out):
        record["loss"].append(out.loss.item())
        record["grad_norm"].append(out.grad_norm.item())
        record["metrics"].append(out.metrics)

    trainer.fit(on_step)
    names = global_names(model)
    record["params"] = {names[n]: p.detach().clone() for n, p in model.named_parameters()}
    record["ema"] = {names[n]: v.clone() for n, v in trainer.ema.shadow.items()}
    if ckpt is not None:
        model.save_pretrained(f"{ckpt}/pretrained")  # collective: stages gathered
    return record


def _rank_train(state: dict, ckpt: str) -> dict:
    return {
        "stage": parallel_state.get_pipeline_model_parallel_rank(),
        **_train(dist_info(), state, ckpt),
    }


def _close(a, b, rtol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, rtol=rtol, atol=rtol * b.abs().max().item())


@pytest.mark.distributed
def test_pp2_matches_pp1_and_its_checkpoints_load_at_pp1(tmp_path):
    state = _perturbed_state()
    with single_process(seed=0) as info:
        reference = _train(info, state)
    ckpt = str(tmp_path / "ckpt")
    ranks = run_ranks(
        _rank_train, world_size=2, parallel=ParallelConfig(pipeline=2), state=state, ckpt=ckpt
    )
    for rank in ranks:  # the last stage's loss and metrics reach every stage
        assert _close(rank["loss"], reference["loss"])
        assert _close(rank["grad_norm"], reference["grad_norm"])
        assert [set(m) for m in rank["metrics"]] == [set(m) for m in reference["metrics"]]
        for got, want in zip(rank["metrics"], reference["metrics"]):
            assert _close(list(got.values()), [want[k] for k in got])
    first, last = ranks[0]["params"], ranks[1]["params"]
    assert "x_embedder.proj.weight" in first and "final_layer.linear.weight" in last
    assert {"blocks.0.scale_shift_table", "blocks.1.scale_shift_table"} <= set(first)
    assert {"blocks.2.scale_shift_table", "blocks.3.scale_shift_table"} <= set(last)
    shared = set(first) & set(last)  # the conditioning embedders, replicated on both stages
    assert shared and all(
        n.split(".")[0] in ("t_embedder", "fps_embedder", "t_block", "y_embedder") for n in shared
    )
    for name in shared:  # their gradients were summed over the stages: still identical
        assert torch.equal(first[name], last[name]), name
    pp2 = {**first, **last}
    assert set(pp2) == set(reference["params"])
    for name, value in reference["params"].items():
        assert _close(pp2[name], value), name

    # The PP=2 Trainer checkpoint resumes at PP=1 with the same whole-model tensors.
    ema = {**ranks[0]["ema"], **ranks[1]["ema"]}
    with single_process(seed=1) as info:
        model = MUGDiT(CONFIG)
        trainer = Trainer(model, lambda m, b: None, [], _trainer_config(ckpt), info=info)
        assert trainer.resume() == STEPS
        for name, p in model.named_parameters():
            assert torch.equal(p.detach(), pp2[name]), name
            assert torch.equal(trainer.ema.shadow[name], ema[name]), name
        # save_pretrained at PP=2 gathered both stages into one whole model.
        assert set(load_file(f"{ckpt}/pretrained/model.safetensors")) == set(pp2)
        loaded = MUGDiT.from_pretrained(f"{ckpt}/pretrained")
        for name, p in loaded.named_parameters():
            assert torch.equal(p.detach(), pp2[name]), name

"""TSG on mugv-infra's Trainer: XE and SCST steps, checkpoints, exact resume."""

from __future__ import annotations

import pytest
import torch
from _captioning_toy import toy_examples

from mugv.captioning.data import CaptionCollator, build_vocabularies
from mugv.captioning.metrics import CiderD
from mugv.captioning.model import TSG, tsg_config
from mugv.captioning.train import CaptionBatches, SCSTStep, xe_step
from mugv.infra import single_process
from mugv.infra.trainer import Trainer, TrainerConfig

EXAMPLES = toy_examples(16)
WORDS, LABELS = build_vocabularies(EXAMPLES)


def run(tmp_path, steps: int, step_fn=xe_step, **cfg) -> tuple[TSG, list[float]]:
    losses = []
    with single_process(seed=0) as info:
        model = TSG(
            tsg_config("tiny", vocab_size=len(WORDS), num_labels=len(LABELS), max_length=10)
        )
        data = CaptionBatches(EXAMPLES, CaptionCollator(WORDS, LABELS, max_length=10), batch_size=4)
        config = TrainerConfig(
            steps=steps, lr=3e-3, warmup_steps=2, checkpoint_dir=str(tmp_path), **cfg
        )
        Trainer(model, step_fn, data, config, info=info).fit(
            lambda out: losses.append((out.loss.item(), out.metrics))
        )
    return model, losses


def test_xe_on_trainer_resumes_exactly(tmp_path):
    straight, losses = run(tmp_path / "a", steps=6)
    run(tmp_path / "b", steps=3)  # stopped half-way (checkpoint at its last step) ...
    resumed, resumed_losses = run(tmp_path / "b", steps=6)  # ... and resumed to the end
    assert len(resumed_losses) == 3
    assert [x for x, _ in resumed_losses] == pytest.approx([x for x, _ in losses[3:]], abs=1e-6)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_scst_on_trainer_logs_reward(tmp_path):
    refs = CaptionCollator(WORDS, LABELS)(EXAMPLES).references
    _, losses = run(tmp_path, steps=2, step_fn=SCSTStep(WORDS, CiderD(refs), num_samples=3))
    assert len(losses) == 2 and all("reward" in m and m["reward"] >= 0 for _, m in losses)


def test_noam_on_the_trainer_equals_the_papers_schedule():
    from mugv.captioning.train import noam_trainer_config
    from mugv.captioning.training import noam_lambda
    from mugv.infra import lr_at

    config = noam_trainer_config(512, 400, factor=2.0, steps=5000)
    noam = noam_lambda(512, 400, factor=2.0)
    for step in (0, 1, 10, 398, 399, 400, 401, 1000, 4999):
        got = lr_at(
            step,
            lr=config.lr,
            min_lr=config.min_lr,
            warmup_steps=config.warmup_steps,
            total_steps=config.steps,
            schedule=config.schedule,
        )
        assert got == pytest.approx(noam(step + 1), rel=1e-12), step

"""Cross-entropy and SCST steps on a toy graph->caption task the model must learn."""

from __future__ import annotations

import pytest
import torch
from _captioning_toy import toy_examples

from mugv.captioning import ConfigError
from mugv.captioning.data import CaptionCollator, build_vocabularies
from mugv.captioning.decoding import greedy
from mugv.captioning.metrics import CiderD
from mugv.captioning.model import TSG, tsg_config
from mugv.captioning.training import mean_of_others_advantage, noam_lambda, scst_loss, xe_loss


def test_noam_warmup_peaks_at_warmup():
    lr = noam_lambda(64, warmup=10)
    assert lr(1) < lr(5) < lr(10) and lr(10) > lr(20) > lr(40)
    assert lr(10) == pytest.approx(64**-0.5 * 10**-0.5)
    with pytest.raises(ConfigError):
        noam_lambda(64, warmup=0)


def test_xe_then_scst_learns_toy_captions():
    torch.manual_seed(0)
    examples = toy_examples(24)
    words, labels = build_vocabularies(examples)
    collate = CaptionCollator(words, labels, max_length=12)
    model = TSG(
        tsg_config(
            "tiny",
            d_model=64,
            d_ff=128,
            vocab_size=len(words),
            num_labels=len(labels),
            max_length=12,
        )
    )
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, noam_lambda(64, warmup=20, factor=0.15))
    batch = collate(examples)
    first = None
    for _ in range(100):
        loss = xe_loss(model, batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < 0.25 * first
    model.eval()
    cider = CiderD(batch.references)
    decoded = greedy(model, batch.graphs)
    hyps = {i: [" ".join(words.decode(t.tolist()))] for i, t in enumerate(decoded.tokens)}
    gts = dict(enumerate(batch.references))
    xe_score = cider.compute_score(gts, hyps)[0]
    assert xe_score > 5.0  # most toy captions reproduced exactly (a perfect caption scores 10)
    model.train()
    stats = scst_loss(
        model, batch, words, cider, num_samples=5, generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(stats.loss) and stats.reward > 0
    stats.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with pytest.raises(ConfigError, match="num_samples"):
        scst_loss(model, batch, words, cider, num_samples=1)


def test_mean_of_others_baseline():
    reward = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    expect = torch.stack(
        [
            torch.stack([r[i] - torch.cat([r[:i], r[i + 1 :]]).mean() for i in range(4)])
            for r in reward
        ]
    )
    torch.testing.assert_close(mean_of_others_advantage(reward), expect)
    assert (mean_of_others_advantage(reward)[1] == 0).all()

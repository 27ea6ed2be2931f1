"""Shared by the captioning benchmarks: world data, a small TSG, the cross-entropy loop, eval."""

from __future__ import annotations

import itertools
import random
import time

import torch

from mugv.captioning import (
    TSG,
    CaptionCollator,
    CaptionExample,
    Vocabulary,
    beam_search,
    build_vocabularies,
    noam_lambda,
    tsg_config,
    world_examples,
    xe_loss,
)
from mugv.captioning.metrics import evaluate_captions
from mugv.data.world import SyntheticWorld, WorldConfig

MAX_LENGTH = 32  # the world's longest paraphrases are ~28 PTB tokens


def world_data(train: int, test: int, seed: int = 0):
    """(train examples, test examples, words, labels); scene graphs need no pixels: 1 tiny frame."""
    world = SyntheticWorld(WorldConfig(num_frames=1, height=16, width=16, seed=seed))
    train_ex = world_examples(world, "train", train)
    test_ex = world_examples(world, "test", test)
    words, labels = build_vocabularies(train_ex, min_word_freq=2)
    return train_ex, test_ex, words, labels


def new_model(words: Vocabulary, labels: Vocabulary, seed: int, use_experts: bool) -> TSG:
    torch.manual_seed(seed)
    return TSG(
        tsg_config(
            "small",
            vocab_size=len(words),
            num_labels=len(labels),
            use_experts=use_experts,
            max_length=MAX_LENGTH,
        )
    )


def train_xe(
    model: TSG,
    examples: list[CaptionExample],
    collate: CaptionCollator,
    *,
    steps: int,
    batch_size: int,
    warmup: int,
    factor: float,
    seed: int,
) -> dict:
    """Cross-entropy with Noam warm-up over shuffled epochs; returns loss/time figures."""
    rng = random.Random(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, noam_lambda(model.config.d_model, warmup, factor)
    )
    order = itertools.chain.from_iterable(
        rng.sample(range(len(examples)), len(examples)) for _ in itertools.count()
    )
    model.train()
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        batch = collate([examples[next(order)] for _ in range(batch_size)])
        loss = xe_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return {
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "seconds": time.perf_counter() - start,
    }


@torch.no_grad()
def evaluate(
    model: TSG,
    examples,
    collate: CaptionCollator,
    words: Vocabulary,
    *,
    meteor=False,
    batch_size: int = 50,
    keep_decoded: bool = False,
):
    """Beam-5 captions of ``examples`` scored with the COCO metrics; (scores, decoded batches)."""
    model.eval()
    hyps, decoded = {}, []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        out = beam_search(model, collate(chunk).graphs, beam_size=5)
        if keep_decoded:
            decoded.append(out)
        for ex, toks in zip(chunk, out.tokens):
            hyps[ex.key] = " ".join(words.decode(toks.tolist()))
    refs = {ex.key: ex.captions for ex in examples}
    return evaluate_captions(refs, hyps, meteor=meteor), decoded, hyps

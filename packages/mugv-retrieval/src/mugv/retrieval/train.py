"""Training on `mugv.infra`'s Trainer: batch iterables and step functions (needs `[train]`).

Pre-training hands the Trainer the `TWBertObjective` (the model plus its momentum encoders
and queues, which are buffers or frozen parameters, so the optimiser sees only the model);
QA fine-tuning hands it the `TWBert` with a QA head.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mugv.retrieval._errors import ConfigError
from mugv.retrieval.data import AnswerVocab, ClipSet, batches, qa_items
from mugv.retrieval.model import TWBert
from mugv.retrieval.objectives import LossWeights, TWBertObjective, qa_loss
from mugv.retrieval.text_encoder import masked_mean

Batch = tuple[torch.Tensor, ...]


class TextCache:
    """Text-encoder states of a fixed set of texts, computed once (frozen text encoder).

    Stored per text without padding, in bfloat16; `batch` pads a batch back to its longest.
    """

    def __init__(self, model: TWBert, texts: list[str], *, batch_size: int = 256) -> None:
        self.pad_id = model.tokenizer.pad_token_id
        self.items: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        unique = list(dict.fromkeys(texts))
        with torch.no_grad():
            for start in range(0, len(unique), batch_size):
                chunk = unique[start : start + batch_size]
                ids, mask = model.tokenize(chunk)
                states = model.encode_text(ids, mask)
                for k, text in enumerate(chunk):
                    n = int(mask[k].sum())
                    self.items[text] = (ids[k, :n], states[k, :n].to(torch.bfloat16))

    def sentences(self, texts: list[str] | None = None) -> torch.Tensor:
        """(N, C) uncentred sentence vectors (masked-mean states) of `texts` (default: all)."""
        keys = self.items if texts is None else texts
        return torch.stack([self.items[t][1].float().mean(dim=0) for t in keys])

    def batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids (B, L), mask (B, L), states (B, L, C) float32) of cached texts."""
        length = max(self.items[t][0].shape[0] for t in texts)
        c = next(iter(self.items.values()))[1].shape[-1]
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        states = torch.zeros(len(texts), length, c)
        for k, t in enumerate(texts):
            tid, st = self.items[t]
            ids[k, : len(tid)], mask[k, : len(tid)], states[k, : len(tid)] = tid, 1, st.float()
        return ids, mask, states


class PretrainBatches:
    """Endless (frames, ids, mask, pair_ids[, states]) batches, a random paraphrase per clip.

    With a `TextCache` (frozen text encoder) each batch also carries the text states.
    """

    def __init__(
        self,
        model: TWBert,
        data: ClipSet,
        batch_size: int,
        *,
        seed: int = 0,
        cache: TextCache | None = None,
    ) -> None:
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        self.cache = cache

    def __iter__(self) -> Iterator[Batch]:
        for frames, texts, pair_ids in batches(self.data, self.batch_size, seed=self.seed):
            if self.cache is None:
                ids, mask = self.model.tokenize(texts)
                yield frames, ids, mask, pair_ids
            else:
                ids, mask, states = self.cache.batch(texts)
                yield frames, ids, mask, pair_ids, states


class QABatches:
    """Endless (frames, question ids, mask, answer index) batches over in-vocabulary pairs."""

    def __init__(
        self, model: TWBert, data: ClipSet, vocab: AnswerVocab, batch_size: int, *, seed: int = 0
    ) -> None:
        clips, questions, answers = qa_items(data, vocab)
        keep = [k for k in range(len(clips)) if answers[k] >= 0]
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        self.clips = [clips[k] for k in keep]
        self.questions = [questions[k] for k in keep]
        self.answers = answers[keep]

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed)
        while True:
            order = rng.permutation(len(self.clips))
            for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
                idx = order[start : start + self.batch_size]
                ids, mask = self.model.tokenize([self.questions[k] for k in idx])
                frames = self.data.frames[[self.clips[k] for k in idx]]
                yield frames, ids, mask, self.answers[idx]


def pretrain_step(
    objective: TWBertObjective, batch: Batch
) -> tuple[torch.Tensor, dict[str, float]]:
    """The Trainer's step_fn for pre-training: weighted VTC + fine-grained + VTM + MLM."""
    out = objective(*batch)
    return out["loss"], {k: float(v.detach()) for k, v in out.items() if k != "loss"}


def qa_step(model: TWBert, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """The Trainer's step_fn for video QA fine-tuning."""
    out = qa_loss(model, *batch)
    return out["loss"], {"accuracy": float(out["accuracy"])}


def fit(
    module: torch.nn.Module,
    step_fn: Any,
    data: Any,
    *,
    info: Any,
    on_step: Any = None,
    **trainer_kwargs: Any,
):
    """Runs `mugv.infra.Trainer` for `TrainerConfig(**trainer_kwargs)`; returns the Trainer.

    `on_step(StepOutput)` is called after every optimiser step.
    """
    from mugv.infra.trainer import Trainer, TrainerConfig

    trainer = Trainer(module, step_fn, data, TrainerConfig(**trainer_kwargs), info=info)
    trainer.fit(on_step)
    return trainer


@torch.no_grad()
def evaluate_qa(
    model: TWBert, data: ClipSet, vocab: AnswerVocab, *, batch_size: int = 128
) -> dict[str, float]:
    """Accuracy over every QA pair of `data`; out-of-vocabulary answers count as wrong."""
    model.eval()
    clips, questions, answers = qa_items(data, vocab)
    correct = 0
    for start in range(0, len(clips), batch_size):
        ids, mask = model.tokenize(questions[start : start + batch_size])
        frames = data.frames[clips[start : start + batch_size]]
        cross = model.fuse(model.encode_text(ids, mask), mask, model.encode_video(frames))
        pred = model.qa_logits(cross).argmax(dim=-1)
        correct += int((pred == answers[start : start + batch_size]).sum())
    return {"accuracy": 100.0 * correct / max(len(clips), 1), "count": float(len(clips))}


@dataclass(kw_only=True)
class Recipe:
    """The CPU training recipe: stage 1 aligns (VTC + fine-grained), stage 2 adds VTM.

    Stage 1 trains the video encoder from scratch against the (by default frozen, cached)
    text encoder; stage 2 continues at `vtm_lr` with the matching loss on `vtm_batch` pairs
    per batch, so that the cross-modal encoder and its head learn to re-rank.
    """

    steps: int = 1000  # ~18 CPU minutes at batch 64 (1.07 CPU s per step measured)
    vtm_steps: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    vtm_lr: float = 2e-4
    warmup: float = 0.1  # fraction of each stage's steps
    weight_decay: float = 0.02
    fine: float = 1.0  # weight of the fine-grained loss (0 skips it)
    vtm_batch: int = 16
    freeze_text: bool = True
    seed: int = 0
    log_every: int = 25

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "vtm_batch", "log_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ConfigError(
                    f"Recipe.{name} must be a positive int; got {getattr(self, name)!r}"
                )
        if not (isinstance(self.vtm_steps, int) and self.vtm_steps >= 0):
            raise ConfigError(f"Recipe.vtm_steps must be an int >= 0; got {self.vtm_steps!r}")
        for name in ("lr", "vtm_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"Recipe.{name} must be > 0; got {getattr(self, name)!r}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(
                f"Recipe.warmup is a fraction of the steps in [0, 1); got {self.warmup!r}"
            )
        if self.fine < 0 or self.weight_decay < 0:
            raise ConfigError("Recipe.fine and Recipe.weight_decay must be >= 0")


@torch.no_grad()
def sentence_vectors(model: TWBert, texts: list[str], *, batch_size: int = 256) -> torch.Tensor:
    """(N, C) uncentred sentence vectors (masked-mean text-encoder states) of `texts`."""
    out = []
    for start in range(0, len(texts), batch_size):
        ids, mask = model.tokenize(texts[start : start + batch_size])
        out.append(masked_mean(model.encode_text(ids, mask), mask))
    return torch.cat(out)


def _stage(
    model: TWBert,
    data: ClipSet,
    recipe: Recipe,
    *,
    info: Any,
    cache: TextCache | None,
    weights: LossWeights,
    steps: int,
    lr: float,
    seed: int,
) -> dict[str, Any]:
    objective = TWBertObjective(model, weights, vtm_batch=recipe.vtm_batch)
    batches = PretrainBatches(model, data, recipe.batch_size, seed=seed, cache=cache)
    last: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    fit(
        objective,
        pretrain_step,
        batches,
        info=info,
        steps=steps,
        lr=lr,
        warmup_steps=int(recipe.warmup * steps),
        weight_decay=recipe.weight_decay,
        log_every=recipe.log_every,
        on_step=lambda out: last.update(out.metrics),
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"steps": steps, "wall_s": wall, "cpu_s": cpu, "steps_per_s": steps / wall, "last": last}


def align(
    model: TWBert, data: ClipSet, recipe: Recipe, *, info: Any, cache: TextCache | None = None
) -> dict[str, Any]:
    """Stage 1: VTC (momentum, queues, distillation) + fine-grained VTC; no fusion."""
    if recipe.freeze_text:
        model.text_encoder.requires_grad_(False)
    elif cache is not None:
        raise ConfigError("a TextCache needs Recipe.freeze_text=True (cached states are frozen)")
    texts = [c for cs in data.captions for c in cs]
    model.set_text_center(
        cache.sentences(texts) if cache is not None else sentence_vectors(model, texts)
    )
    weights = LossWeights(vtm=0.0, mlm=0.0, fine=recipe.fine)
    return _stage(
        model,
        data,
        recipe,
        info=info,
        cache=cache,
        weights=weights,
        steps=recipe.steps,
        lr=recipe.lr,
        seed=recipe.seed,
    )


def match(
    model: TWBert, data: ClipSet, recipe: Recipe, *, info: Any, cache: TextCache | None = None
) -> dict[str, Any] | None:
    """Stage 2: stage-1 losses plus VTM, at `vtm_lr`; None when `vtm_steps` is 0."""
    if not recipe.vtm_steps:
        return None
    if recipe.freeze_text:
        model.text_encoder.requires_grad_(False)
    weights = LossWeights(mlm=0.0, fine=recipe.fine)
    return _stage(
        model,
        data,
        recipe,
        info=info,
        cache=cache,
        weights=weights,
        steps=recipe.vtm_steps,
        lr=recipe.vtm_lr,
        seed=recipe.seed + 100,
    )


def train_retrieval(
    model: TWBert, data: ClipSet, recipe: Recipe, *, info: Any, cache: TextCache | None = None
) -> dict[str, Any]:
    """Both stages in one call; returns their timings (wall and CPU seconds, steps/s)."""
    out = {"align": align(model, data, recipe, info=info, cache=cache)}
    out["match"] = match(model, data, recipe, info=info, cache=cache)
    return out

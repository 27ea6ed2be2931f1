"""TSG on ``mugv-infra``'s Trainer (needs ``mugv-captioning[train]``): data and step functions.

    with single_process(seed=0) as info:
        data = CaptionBatches(examples, collate, batch_size=32)
        Trainer(model, xe_step, data, TrainerConfig(steps=..., checkpoint_dir=...), info=info).fit()
        Trainer(model, SCSTStep(words, CiderD(refs)), data, TrainerConfig(...), info=info).fit()

The Trainer owns the optimizer, schedule, clipping, checkpoints and resume;
:class:`CaptionBatches` checkpoints its position, so a resumed run sees the same batches as an
uninterrupted one. :func:`noam_trainer_config` gives the paper's Noam warm-up on the Trainer
(:func:`noam_lambda` is the same schedule for a plain ``LambdaLR`` loop).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from mugv.captioning._errors import ConfigError
from mugv.captioning.data import CaptionBatch, CaptionCollator, CaptionExample
from mugv.captioning.metrics import CiderD
from mugv.captioning.model import TSG
from mugv.captioning.training import scst_loss, xe_loss
from mugv.captioning.vocab import Vocabulary
from mugv.infra import TrainerConfig


def noam_trainer_config(
    d_model: int, warmup: int, *, factor: float = 1.0, **fields: Any
) -> TrainerConfig:
    """Noam's schedule on the Trainer: linear warm-up, then inverse square root.

    The Trainer's "inverse_sqrt" schedule peaks at `lr` after `warmup_steps`; with
    ``lr = factor * d_model^-0.5 * warmup^-0.5`` its step s (0-based) is Noam's step s + 1.
    Other `TrainerConfig` fields pass through `fields`.
    """
    if warmup < 1:
        raise ConfigError(f"Noam warmup must be >= 1 step; got {warmup}")
    peak = factor * d_model**-0.5 * warmup**-0.5
    return TrainerConfig(lr=peak, warmup_steps=warmup, schedule="inverse_sqrt", **fields)


class CaptionBatches:
    """Shuffled epochs of ``{"tokens": (B, L+1), "batch": CaptionBatch}``; one epoch per
    ``iter()``; ``state_dict()`` holds the epoch and position for exact resume."""

    def __init__(
        self,
        examples: Sequence[CaptionExample],
        collate: CaptionCollator,
        *,
        batch_size: int,
        seed: int = 0,
    ) -> None:
        if batch_size < 1 or len(examples) < batch_size:
            raise ConfigError(
                f"CaptionBatches needs 1 <= batch_size <= len(examples); got batch_size="
                f"{batch_size} for {len(examples)} examples"
            )
        self.examples, self.collate = list(examples), collate
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return len(self.examples) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = random.Random(f"{self.seed}/{self.epoch}").sample(
            range(len(self.examples)), len(self.examples)
        )
        while self.position < len(self):
            pos = self.position
            self.position += 1
            chunk = order[pos * self.batch_size : (pos + 1) * self.batch_size]
            batch = self.collate(
                [self.examples[i] for i in chunk], random.Random(f"{self.seed}/{self.epoch}/{pos}")
            )
            yield {"tokens": batch.tokens, "batch": batch}
        self.epoch, self.position = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _batch(item: dict[str, Any] | CaptionBatch) -> CaptionBatch:
    return item["batch"] if isinstance(item, dict) else item


def xe_step(model: TSG, item: dict[str, Any]) -> torch.Tensor:
    """Trainer step function: cross-entropy of the batch's reference captions."""
    return xe_loss(model, _batch(item))


class SCSTStep:
    """Trainer step function: SCST with CIDEr-D reward; logs the mean sample reward.

    Samples from torch's global RNG, which the Trainer checkpoints, so resume is exact.
    """

    def __init__(self, words: Vocabulary, cider: CiderD, *, num_samples: int = 5) -> None:
        self.words, self.cider, self.num_samples = words, cider, num_samples

    def __call__(self, model: TSG, item: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        stats = scst_loss(model, _batch(item), self.words, self.cider, num_samples=self.num_samples)
        return stats.loss, {"reward": stats.reward}

"""A resumable, data-parallel-sharded batch iterable over an indexed dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from mugv.infra._errors import ConfigError


class ShuffledBatches:
    """Batches `fetch(indices)` over `range(size)`, reshuffled each epoch, split over DP ranks.

    Each step's global batch is `batch_size * data_size` consecutive indices of the epoch's
    permutation; data rank r takes the r-th slice, so DP=2 with half the batch sees exactly
    the samples of DP=1 with the whole batch. The position (epoch, batch) is saved by
    `state_dict()` and a new `iter()` continues from it, which is how the Trainer resumes.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        fetch: Callable[[list[int]], Any],
        *,
        seed: int = 0,
        shuffle: bool = True,
        data_rank: int = 0,
        data_size: int = 1,
    ) -> None:
        if batch_size * data_size > size:
            raise ConfigError(
                f"ShuffledBatches: batch_size={batch_size} x data_size={data_size} exceeds "
                f"the dataset size {size}: use a smaller batch_size"
            )
        self.size, self.batch_size, self.fetch = size, batch_size, fetch
        self.seed, self.shuffle = seed, shuffle
        self.data_rank, self.data_size = data_rank, data_size
        self.epoch, self.index = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.size // (self.batch_size * self.data_size)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=gen).tolist()

    def __iter__(self) -> Iterator[Any]:
        order = self._order()
        step = self.batch_size * self.data_size
        while self.index < self.batches_per_epoch:
            start = self.index * step + self.data_rank * self.batch_size
            self.index += 1
            yield self.fetch(order[start : start + self.batch_size])
        self.epoch, self.index = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])

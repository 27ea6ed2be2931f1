"""Reading shards: streamed tar members, and the rank/worker-aware `ShardDataset`."""

from __future__ import annotations

import logging
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import webdataset

from mugv.data._errors import ShardError
from mugv.data.shards._sample import ShardSample, _decode_sample
from mugv.data.shards._writer import read_manifest

logger = logging.getLogger(__name__)


def _iter_members(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of one tar, streamed (local path or `gopen` URL)."""
    try:
        stream = webdataset.gopen(url, "rb")
    except (OSError, ValueError) as exc:
        raise ShardError(f"{url}: cannot open the shard: {exc}") from exc
    key, members = None, {}
    try:
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                base = os.path.basename(info.name)
                if "." not in base:
                    raise ShardError(f"{url}: member {info.name!r} has no extension")
                dot = len(info.name) - len(base) + base.index(".")
                k, ext = info.name[:dot], info.name[dot + 1 :]
                if k != key and key is not None:
                    yield key, members
                    members = {}
                key = k
                members[ext] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"{url}: corrupt or truncated shard: {exc}") from exc
    if key is not None:
        yield key, members


def read_shard(
    url: str | os.PathLike[str], *, video_options: Mapping[str, Any] | None = None
) -> Iterator[ShardSample]:
    """Every sample of one shard, in stored order. `video_options` go to `read_video`."""
    url = str(url)
    for key, members in _iter_members(url):
        yield _decode_sample(key, members, url, {} if video_options is None else video_options)


def _consumer(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(consumer id, consumer count) of this process and DataLoader worker."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world_size = 0, 1
    if not 0 <= rank < world_size:
        raise ValueError(f"ShardDataset: need 0 <= rank < world_size; got {rank}, {world_size}")
    worker = torch.utils.data.get_worker_info()
    wid, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
    return rank * workers + wid, world_size * workers


class ShardDataset(torch.utils.data.IterableDataset):
    """Streams `ShardSample`s (or ``transform(sample)``) from a shard directory or URL list.

    Each (rank, DataLoader worker) pair is one of ``world_size * num_workers`` consumers.
    ``split="shard"`` gives consumer ``c`` shards ``c, c + C, ...`` of the (shuffled) shard
    order: cheap, but consumers get unequal counts and need at least C shards to all work.
    ``split="sample"`` cuts the concatenated samples into C contiguous runs whose sizes differ
    by at most one (needs the manifest). With ``shuffle``, the shard order is permuted by
    ``(seed, epoch)`` and samples pass through a buffer shuffled by ``(seed, epoch, consumer)``;
    call `set_epoch` before each epoch. Rank and world size come from ``torch.distributed``
    unless given.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str],
        *,
        split: Literal["shard", "sample"] = "shard",
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        video_options: Mapping[str, Any] | None = None,
        decode_video: bool = True,
        transform: Callable[[ShardSample], Any] | None = None,
    ) -> None:
        super().__init__()
        if split not in ("shard", "sample"):
            raise ValueError(f"ShardDataset: split must be 'shard' or 'sample'; got {split!r}")
        if isinstance(source, str | os.PathLike) and Path(source).is_dir():
            infos = read_manifest(source)
            self.urls = [str(Path(source) / s.shard) for s in infos]
            self.counts: list[int] | None = [s.count for s in infos]
        else:
            self.urls = [str(source)] if isinstance(source, str | os.PathLike) else list(source)
            self.counts = None
        if not self.urls:
            raise ShardError(f"ShardDataset: {source} holds no shards")
        if split == "sample" and self.counts is None:
            raise ShardError(
                "ShardDataset: split='sample' needs the per-shard counts; pass the shard "
                "directory (with its manifest) instead of a URL list"
            )
        self.split, self.shuffle, self.seed = split, shuffle, seed
        self.shuffle_buffer = shuffle_buffer
        self.rank, self.world_size = rank, world_size
        self.video_options = dict(video_options or {}) if decode_video else None
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int | None:
        """Samples in the whole dataset (all consumers), when the manifest is known."""
        return None if self.counts is None else sum(self.counts)

    def _plan(self, consumer: int, consumers: int) -> list[tuple[int, int, int]]:
        """(shard index, first sample, end sample) runs this consumer reads, in order."""
        order = list(range(len(self.urls)))
        if self.shuffle:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        if self.split == "shard":
            return [(s, 0, -1) for s in order[consumer::consumers]]
        counts = [self.counts[s] for s in order]
        total = sum(counts)
        lo, hi = consumer * total // consumers, (consumer + 1) * total // consumers
        plan, offset = [], 0
        for s, n in zip(order, counts):
            a, b = max(lo - offset, 0), min(hi - offset, n)
            if a < b:
                plan.append((s, a, b))
            offset += n
        return plan

    def _raw(self, consumer: int, consumers: int) -> Iterator[ShardSample]:
        plan = self._plan(consumer, consumers)
        if not plan:
            logger.warning(
                "ShardDataset: consumer %d of %d gets no data (%d shards, split=%r); use "
                "more shards or split='sample'",
                consumer,
                consumers,
                len(self.urls),
                self.split,
            )
        for s, a, b in plan:
            url = self.urls[s]
            for i, (key, members) in enumerate(_iter_members(url)):
                if b != -1 and i >= b:
                    break
                if i >= a:
                    yield _decode_sample(key, members, url, self.video_options)

    def __iter__(self) -> Iterator[Any]:
        consumer, consumers = _consumer(self.rank, self.world_size)
        samples: Iterable[ShardSample] = self._raw(consumer, consumers)
        if self.shuffle:
            samples = _buffer_shuffle(
                samples, self.shuffle_buffer, [self.seed, self.epoch, consumer]
            )
        for sample in samples:
            yield sample if self.transform is None else self.transform(sample)


def _buffer_shuffle(items: Iterable[Any], size: int, seed: list[int]) -> Iterator[Any]:
    rng = np.random.default_rng(seed)
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            yield buffer.pop(int(rng.integers(len(buffer))))
    rng.shuffle(buffer)
    yield from buffer

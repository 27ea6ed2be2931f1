"""Resolution/duration buckets: every batch holds clips of one shape ``(T, H, W)``.

Variable-size video training (MUG-V, Open-Sora) resizes each clip to the bucket nearest its
aspect ratio that it can fill (enough frames and pixels), then batches within a bucket. All
choices here depend only on the inputs, the seed and the epoch, so every rank agrees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from mugv.data._schema import VideoClip
from mugv.data.video import sample_clip

__all__ = [
    "Bucket",
    "BucketBatchSampler",
    "BucketedBatches",
    "assign_bucket",
    "bucket_batches",
    "fit_to_bucket",
    "make_buckets",
]

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Bucket:
    """A clip shape: ``num_frames`` frames of ``height x width`` pixels."""

    num_frames: int
    height: int
    width: int

    def __post_init__(self) -> None:
        if min(self.num_frames, self.height, self.width) < 1:
            raise ValueError(f"Bucket sizes must be >= 1; got {self}")

    @property
    def aspect(self) -> float:
        return self.width / self.height


def make_buckets(
    *,
    area: int,
    aspect_ratios: Sequence[float],
    frame_counts: Sequence[int],
    multiple: int = 16,
) -> list[Bucket]:
    """One bucket per (frame count, aspect ratio ``W/H``), each about `area` pixels.

    Sides are rounded to a `multiple` (the VAE downsampling times the patch size).
    """
    if area < multiple * multiple or not aspect_ratios or not frame_counts:
        raise ValueError(
            f"make_buckets: need area >= multiple**2 ({multiple * multiple}) and at least one "
            f"aspect ratio and frame count; got area={area}, {aspect_ratios}, {frame_counts}"
        )
    buckets = set()
    for ratio in aspect_ratios:
        height = max(multiple, round(math.sqrt(area / ratio) / multiple) * multiple)
        width = max(multiple, round(height * ratio / multiple) * multiple)
        for frames in frame_counts:
            buckets.add(Bucket(int(frames), height, width))
    return sorted(buckets)


def assign_bucket(
    num_frames: int, height: int, width: int, buckets: Sequence[Bucket]
) -> Bucket | None:
    """The bucket a ``(num_frames, height, width)`` clip goes to, or None if it fills none.

    A clip can fill a bucket with at most as many frames and pixels as it has. Among those:
    the nearest aspect ratio (least cropping), then the most pixels, then the most frames.
    """
    fits = [
        b for b in buckets if b.num_frames <= num_frames and b.height * b.width <= height * width
    ]
    if not fits:
        return None
    aspect = math.log(width / height)
    return min(
        fits,
        key=lambda b: (
            round(abs(math.log(b.aspect) - aspect), 6),
            -b.height * b.width,
            -b.num_frames,
        ),
    )


def fit_to_bucket(clip: VideoClip, bucket: Bucket, *, start: float = 0.0) -> VideoClip:
    """The bucket's shape cut from `clip`: consecutive frames from `start`, centre-cropped."""
    return sample_clip(
        clip,
        start=start,
        fps=clip.fps,
        num_frames=bucket.num_frames,
        size=(bucket.height, bucket.width),
        fit="crop",
    )


def bucket_batches(
    items: Iterable[T], batch_size: int, *, key: Callable[[T], Hashable], drop_last: bool = False
) -> Iterator[tuple[Hashable, list[T]]]:
    """Streams ``(bucket, batch)``: a batch is emitted as soon as its bucket holds `batch_size`.

    At the end the partial batches follow in the order their buckets first appeared (or are
    dropped with `drop_last`). Items whose key is None are skipped.
    """
    if batch_size < 1:
        raise ValueError(f"bucket_batches: batch_size must be >= 1; got {batch_size}")
    pending: dict[Hashable, list[T]] = {}
    for item in items:
        bucket = key(item)
        if bucket is None:
            continue
        queue = pending.setdefault(bucket, [])
        queue.append(item)
        if len(queue) == batch_size:
            yield bucket, queue
            pending[bucket] = []
    if not drop_last:
        for bucket, queue in pending.items():
            if queue:
                yield bucket, queue


class BucketedBatches(torch.utils.data.IterableDataset):
    """Wraps an iterable dataset (e.g. `ShardDataset`) into one of same-bucket batches.

    Runs inside each DataLoader worker, after the wrapped dataset's own rank/worker split;
    use it with ``DataLoader(..., batch_size=None)``. `collate` turns a list into a batch.
    """

    def __init__(
        self,
        dataset: Iterable[Any],
        batch_size: int,
        *,
        key: Callable[[Any], Hashable],
        collate: Callable[[list[Any]], Any] | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.dataset, self.batch_size, self.key = dataset, batch_size, key
        self.collate, self.drop_last = collate, drop_last

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Hashable, Any]]:
        for bucket, batch in bucket_batches(
            self.dataset, self.batch_size, key=self.key, drop_last=self.drop_last
        ):
            yield bucket, batch if self.collate is None else self.collate(batch)


class BucketBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices of a map-style dataset, each batch from one bucket.

    `buckets[i]` is the bucket of item ``i`` (None: skip it). Items are shuffled within their
    bucket and the batches shuffled, by ``(seed, epoch)``; rank ``r`` of ``world_size`` takes
    batches ``r, r + world_size, ...``, so ranks never share an item.
    """

    def __init__(
        self,
        buckets: Sequence[Hashable],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"BucketBatchSampler: need batch_size >= 1 and 0 <= rank < world_size; got "
                f"{batch_size}, {rank}, {world_size}"
            )
        self.buckets, self.batch_size = list(buckets), batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        groups: dict[Hashable, list[int]] = {}
        for i, bucket in enumerate(self.buckets):
            if bucket is not None:
                groups.setdefault(bucket, []).append(i)
        batches = []
        for members in groups.values():  # insertion order: deterministic
            order = rng.permutation(len(members)) if self.shuffle else range(len(members))
            members = [members[j] for j in order]
            for k in range(0, len(members), self.batch_size):
                batch = members[k : k + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())

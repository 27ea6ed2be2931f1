"""Buckets: one shape per batch, every item once, the same answer on every rank."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch

from mugv.data import VideoClip
from mugv.data.buckets import (
    Bucket,
    BucketBatchSampler,
    BucketedBatches,
    assign_bucket,
    bucket_batches,
    fit_to_bucket,
    make_buckets,
)
from mugv.data.shards import ShardDataset, ShardSample, ShardWriter

BUCKETS = make_buckets(area=64 * 64, aspect_ratios=[1.0, 16 / 9, 9 / 16], frame_counts=[4, 8])


def test_make_buckets() -> None:
    shapes = {(b.height, b.width) for b in BUCKETS}
    assert shapes == {(64, 64), (48, 80), (80, 48)}
    assert {b.num_frames for b in BUCKETS} == {4, 8}
    assert all(b.height % 16 == 0 and b.width % 16 == 0 for b in BUCKETS)
    with pytest.raises(ValueError, match="area"):
        make_buckets(area=10, aspect_ratios=[1.0], frame_counts=[4])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((10, 90, 160), Bucket(8, 48, 80)),  # landscape, long enough for 8 frames
        ((5, 90, 160), Bucket(4, 48, 80)),  # too short for 8
        ((10, 160, 90), Bucket(8, 80, 48)),  # portrait
        ((10, 70, 70), Bucket(8, 64, 64)),
        ((10, 50, 90), Bucket(8, 48, 80)),
        ((3, 64, 64), None),  # fewer frames than any bucket
        ((8, 30, 30), None),  # fewer pixels than any bucket
    ],
)
def test_assign_bucket(shape: tuple[int, int, int], expected: Bucket | None) -> None:
    assert assign_bucket(*shape, BUCKETS) == expected


def test_fit_to_bucket() -> None:
    clip = VideoClip(np.zeros((10, 90, 160, 3), np.uint8), fps=8)
    out = fit_to_bucket(clip, Bucket(4, 48, 80), start=0.5)
    assert out.frames.shape == (4, 48, 80, 3)
    assert out.metadata["frame_times"] == [0.5, 0.625, 0.75, 0.875]


def test_bucket_batches_one_shape_each_item_once() -> None:
    rng = np.random.default_rng(0)
    shapes = [(8, 90, 160), (8, 160, 90), (5, 64, 64), (2, 64, 64)]
    items = [(i, shapes[int(rng.integers(4))]) for i in range(50)]

    def key(item: tuple[int, tuple[int, int, int]]) -> Bucket | None:
        return assign_bucket(*item[1], BUCKETS)

    batches = list(bucket_batches(items, 4, key=key))
    assert batches == list(bucket_batches(items, 4, key=key))  # deterministic
    seen = [i for _, batch in batches for i, _ in batch]
    fitting = [i for i, s in items if key((i, s)) is not None]
    assert sorted(seen) == fitting
    for bucket, batch in batches:
        assert {key(item) for item in batch} == {bucket}
        assert len(batch) <= 4
    full = list(bucket_batches(items, 4, key=key, drop_last=True))
    assert all(len(b) == 4 for _, b in full)


def test_bucketed_batches_over_shards_with_workers(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, max_count=3) as writer:
        for i in range(20):
            h, w = [(72, 128), (128, 72), (64, 64)][i % 3]
            frames = np.full((8, h, w, 3), i, np.uint8)
            writer.write(ShardSample(key=f"s{i:03d}", clip=VideoClip(frames, fps=8)))

    def key(s: ShardSample) -> Bucket | None:
        return assign_bucket(s.clip.num_frames, s.clip.height, s.clip.width, BUCKETS)

    def collate(samples: list[ShardSample]) -> torch.Tensor:
        clips = [fit_to_bucket(s.clip, key(s)).frames for s in samples]
        return torch.from_numpy(np.stack(clips))  # (B, T, H, W, 3): one shape

    ds = BucketedBatches(ShardDataset(tmp_path), 3, key=key, collate=collate)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    total = collections.Counter()
    for bucket, batch in loader:
        assert batch.shape[1:] == (bucket.num_frames, bucket.height, bucket.width, 3)
        total[bucket] += batch.shape[0]
    assert sum(total.values()) == 20 and len(total) == 3


def test_bucket_batch_sampler_ranks_disjoint_and_deterministic() -> None:
    rng = np.random.default_rng(1)
    buckets = [None if i % 11 == 0 else int(rng.integers(3)) for i in range(100)]

    def batches(rank: int, world_size: int, epoch: int) -> list[list[int]]:
        sampler = BucketBatchSampler(buckets, 4, seed=5, rank=rank, world_size=world_size)
        sampler.set_epoch(epoch)
        return list(sampler)

    for world_size in (1, 3):
        everything = [i for r in range(world_size) for b in batches(r, world_size, 0) for i in b]
        assert sorted(everything) == [i for i, b in enumerate(buckets) if b is not None]
    for batch in batches(0, 1, 0):
        assert len({buckets[i] for i in batch}) == 1
    assert batches(1, 3, 2) == batches(1, 3, 2)
    assert batches(0, 1, 0) != batches(0, 1, 1)
    dataset = torch.arange(100)
    sampler = BucketBatchSampler(buckets, 4, seed=5, drop_last=True)
    loaded = list(torch.utils.data.DataLoader(dataset, batch_sampler=sampler))
    assert len(loaded) == len(sampler) and all(len(b) == 4 for b in loaded)

"""WebDataset shards: round trips, size limits, manifest, exactly-once reading across consumers."""

from __future__ import annotations

import collections
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset

from mugv.data import (
    CaptionedClip,
    QAPair,
    Relation,
    SceneGraph,
    SceneObject,
    Trajectory,
    VideoClip,
)
from mugv.data.shards import (
    ShardDataset,
    ShardError,
    ShardSample,
    ShardWriter,
    read_manifest,
    read_shard,
)


def make_sample(i: int, num_frames: int = 6, size: int = 32) -> CaptionedClip:
    rng = np.random.default_rng(i)
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    frames[:] = rng.integers(40, 200, 3, dtype=np.uint8)
    for t in range(num_frames):
        frames[t, 8:16, 2 * t : 2 * t + 8] = (230, 30, 30)
    graph = SceneGraph(
        objects=[
            SceneObject(0, "square", ["red", "small"], (1.5, 8.0, 8.0, 8.0)),
            SceneObject(1, "circle", ["blue"], None, rng.random(5).astype(np.float32)),
        ],
        relations=[Relation(0, "left of", 1)],
    )
    boxes = rng.random((num_frames, 4)).astype(np.float32)
    return CaptionedClip(
        key=f"clip-{i:05d}",
        clip=VideoClip(frames, fps=8.0, source=f"world/{i}", span=(0.0, 0.75), metadata={"i": i}),
        captions=[f"a red square {i}", "ünïcode caption"],
        scene_graph=graph,
        trajectories=[Trajectory(0, boxes, "square")],
        qa=[QAPair("what colour is the square?", "red")],
    )


def write_dataset(directory: Path, n: int, **kwargs) -> list[str]:
    with ShardWriter(directory, **kwargs) as writer:
        for i in range(n):
            writer.write(make_sample(i), latent=np.full((2, 3), i, np.float32))
    return [f"clip-{i:05d}" for i in range(n)]


def assert_same_annotations(got: ShardSample, want: CaptionedClip) -> None:
    assert got.key == want.key
    assert got.captions == want.captions and got.qa == want.qa
    assert [o.name for o in got.scene_graph.objects] == ["square", "circle"]
    assert got.scene_graph.objects[0].box == want.scene_graph.objects[0].box
    np.testing.assert_array_equal(
        got.scene_graph.objects[1].feature, want.scene_graph.objects[1].feature
    )
    assert got.scene_graph.relations == want.scene_graph.relations
    np.testing.assert_array_equal(got.trajectories[0].boxes, want.trajectories[0].boxes)
    assert got.trajectories[0].label == "square"


@pytest.mark.parametrize("clip_format", ["mp4", "mp4-444", "png", "jpg"])
@pytest.mark.parametrize("tensor_format", ["safetensors", "npy"])
def test_round_trip(tmp_path: Path, clip_format: str, tensor_format: str) -> None:
    pix_fmt = "yuv444p" if clip_format == "mp4-444" else "yuv420p"
    clip_format = clip_format.removesuffix("-444")
    with ShardWriter(
        tmp_path, clip_format=clip_format, pix_fmt=pix_fmt, tensor_format=tensor_format
    ) as writer:
        for i in range(3):
            writer.write(
                make_sample(i),
                latent=np.arange(24, dtype=np.float32).reshape(2, 3, 4) + i,
                text_embedding=torch.full((4, 8), float(i), dtype=torch.float16),
            )
    (info,) = read_manifest(tmp_path)
    samples = list(read_shard(tmp_path / info.shard))
    assert [s.key for s in samples] == list(info.keys) == [f"clip-{i:05d}" for i in range(3)]
    for i, got in enumerate(samples):
        want = make_sample(i)
        assert_same_annotations(got, want)
        clip = got.clip
        assert (clip.fps, clip.source, clip.span) == (8.0, f"world/{i}", (0.0, 0.75))
        assert clip.metadata == {"i": i}
        err = np.abs(clip.frames.astype(int) - want.clip.frames).mean()
        assert err == 0 if clip_format == "png" else err < 4
        np.testing.assert_array_equal(
            got.tensors["latent"], np.arange(24, dtype=np.float32).reshape(2, 3, 4) + i
        )
        assert got.tensors["text_embedding"].dtype == np.float16


def test_latent_only_samples_and_video_options(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, clip_format="png") as writer:
        writer.write(ShardSample(key="latent-only", captions=["x"], tensors={"z": np.ones(3)}))
        writer.write(make_sample(7))
    only, clip = read_shard(tmp_path / "shard-000000.tar", video_options={"num_frames": 3})
    assert only.clip is None and only.captions == ["x"]
    assert clip.clip.num_frames == 3 and clip.clip.metadata["frame_times"] == [0.0, 0.25, 0.625]
    with pytest.raises(ShardError, match="holds no clip"):
        only.to_captioned()
    ds = ShardDataset(tmp_path, decode_video=False)
    assert [s.clip for s in ds] == [None, None]


def test_count_and_byte_limits(tmp_path: Path) -> None:
    keys = write_dataset(tmp_path / "count", 10, max_count=4)
    infos = read_manifest(tmp_path / "count")
    assert [i.count for i in infos] == [4, 4, 2]
    assert [k for i in infos for k in i.keys] == keys
    limit = 40_000
    write_dataset(tmp_path / "bytes", 12, max_bytes=limit)
    infos = read_manifest(tmp_path / "bytes")
    assert len(infos) > 1
    for info in infos:
        size = (tmp_path / "bytes" / info.shard).stat().st_size
        assert size == info.bytes and (size <= limit or info.count == 1)
    assert sum(i.count for i in infos) == 12
    # A sample bigger than the limit on its own gets a shard of its own.
    write_dataset(tmp_path / "tiny", 3, max_bytes=1000)
    assert [i.count for i in read_manifest(tmp_path / "tiny")] == [1, 1, 1]


def test_shards_are_plain_webdataset_tars(tmp_path: Path) -> None:
    keys = write_dataset(tmp_path, 5, max_count=2)
    urls = [str(tmp_path / i.shard) for i in read_manifest(tmp_path)]
    seen = list(webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in seen] == keys
    assert {"json", "mp4", "safetensors"} <= set(seen[0])
    with tarfile.open(urls[0]) as tar:
        names = tar.getnames()
    assert sorted(names[:3]) == ["clip-00000.json", "clip-00000.mp4", "clip-00000.safetensors"]


def test_writes_are_atomic(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, max_count=2) as writer:
        for i in range(5):
            writer.write(make_sample(i))
        raise RuntimeError("the job died")
    # The two finished shards are listed; the open one left nothing behind.
    assert sorted(os.listdir(tmp_path)) == [
        "shard-000000.tar",
        "shard-000001.tar",
        "shard.manifest.jsonl",
    ]
    assert [i.count for i in read_manifest(tmp_path)] == [2, 2]


def test_manifest_parts_from_many_writers(tmp_path: Path) -> None:
    """N ranks x M workers each write their slice under their own prefix; all of it reads back."""
    n = 23
    for rank in range(3):
        for worker in range(2):
            with ShardWriter(tmp_path, prefix=f"r{rank}-w{worker}", max_count=2) as writer:
                for i in range(rank * 2 + worker, n, 6):
                    writer.write(make_sample(i))
    infos = read_manifest(tmp_path)
    assert sorted(k for i in infos for k in i.keys) == [f"clip-{i:05d}" for i in range(n)]
    counts = collections.Counter(s.key for s in ShardDataset(tmp_path, decode_video=False))
    assert sorted(counts) == [f"clip-{i:05d}" for i in range(n)] and set(counts.values()) == {1}
    with pytest.raises(ShardError, match="another writer used prefix"):
        ShardWriter(tmp_path, prefix="r0-w0")


def read_keys(ds: ShardDataset, num_workers: int) -> list[str]:
    if num_workers == 0:
        return [s.key for s in ds]
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=num_workers, multiprocessing_context="fork"
    )
    return [s.key for s in loader]


@pytest.mark.parametrize("split", ["shard", "sample"])
@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 0), (2, 2), (3, 2)])
def test_every_sample_exactly_once(
    tmp_path: Path, split: str, world_size: int, num_workers: int
) -> None:
    keys = write_dataset(tmp_path, 26, max_count=2)  # 13 shards
    per_rank = []
    for rank in range(world_size):
        ds = ShardDataset(
            tmp_path,
            split=split,
            rank=rank,
            world_size=world_size,
            shuffle=True,
            seed=3,
            decode_video=False,
        )
        per_rank.append(read_keys(ds, num_workers))
    got = [k for r in per_rank for k in r]
    assert sorted(got) == keys  # no duplicates, no gaps
    if split == "sample":  # contiguous runs: rank loads differ by at most one per worker
        sizes = [len(r) for r in per_rank]
        assert max(sizes) - min(sizes) <= max(num_workers, 1)


def test_idle_consumer_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_dataset(tmp_path, 3, max_count=2)  # 2 shards for 3 ranks
    ds = ShardDataset(tmp_path, rank=2, world_size=3, decode_video=False)
    assert list(ds) == []
    assert "consumer 2 of 3 gets no data" in caplog.text
    assert len(list(ShardDataset(tmp_path, split="sample", rank=2, world_size=3))) == 1


def test_shuffle_is_deterministic_by_seed_and_epoch(tmp_path: Path) -> None:
    keys = write_dataset(tmp_path, 20, max_count=3)

    def order(seed: int, epoch: int) -> list[str]:
        ds = ShardDataset(tmp_path, shuffle=True, seed=seed, shuffle_buffer=8, decode_video=False)
        ds.set_epoch(epoch)
        return [s.key for s in ds]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    assert sorted(order(0, 1)) == keys
    plain = [s.key for s in ShardDataset(tmp_path, decode_video=False)]
    assert plain == keys


@pytest.mark.distributed
def test_torch_distributed_ranks_and_workers(tmp_path: Path) -> None:
    """Two gloo ranks, each with two DataLoader workers, rank taken from torch.distributed."""
    write_dataset(tmp_path, 15, max_count=2)
    torch.multiprocessing.start_processes(
        _rank_main, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    got = sorted(line for r in range(2) for line in (tmp_path / f"keys{r}.txt").read_text().split())
    assert got == [f"clip-{i:05d}" for i in range(15)]


def _rank_main(rank: int, world_size: int, directory: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        ds = ShardDataset(directory, split="sample", decode_video=False)
        keys = read_keys(ds, num_workers=2)
        Path(directory, f"keys{rank}.txt").write_text("\n".join(keys))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_transform_and_batching(tmp_path: Path) -> None:
    write_dataset(tmp_path, 6)
    ds = ShardDataset(
        tmp_path,
        video_options={"num_frames": 4, "size": (16, 16)},
        transform=lambda s: {
            "video": torch.from_numpy(s.clip.frames),
            "latent": torch.from_numpy(s.tensors["latent"]),
        },
    )
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4))
    assert batches[0]["video"].shape == (4, 4, 16, 16, 3)
    assert batches[1]["latent"][:, 0, 0].tolist() == [4.0, 5.0]


def test_bad_input(tmp_path: Path) -> None:
    good = make_sample(0)
    with ShardWriter(tmp_path / "w") as writer:
        bad_key = CaptionedClip("clip.0", good.clip)
        with pytest.raises(ShardError, match="no dots"):
            writer.write(bad_key)
        with pytest.raises(ShardError, match="JSON"):
            writer.write(
                CaptionedClip("x", VideoClip(good.clip.frames, 8, metadata={"a": object()}))
            )
        with pytest.raises(ShardError, match="bfloat16"):
            writer.write(good, z=torch.zeros(2, dtype=torch.bfloat16))
        with pytest.raises(ShardError, match="identifier"):
            writer.write(good, **{"not-ok": np.zeros(2)})
        writer.write(good)
        with pytest.raises(ShardError, match="twice"):
            writer.write(good)
    (tmp_path / "junk.tar").write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(ShardError, match=r"junk\.tar"):
        list(read_shard(tmp_path / "junk.tar"))
    data = (tmp_path / "w" / "shard-000000.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:1500])
    with pytest.raises(ShardError, match=r"cut\.tar"):
        list(read_shard(tmp_path / "cut.tar"))
    with tarfile.open(tmp_path / "nojson.tar", "w") as tar:
        tar.add(tmp_path / "junk.tar", arcname="a.mp4")
    with pytest.raises(ShardError, match=r"no \.json"):
        list(read_shard(tmp_path / "nojson.tar"))
    meta = {"key": "k", "captions": [], "scene_graph": None, "trajectories": [], "qa": []}
    meta["clip"] = None
    with tarfile.open(tmp_path / "badtensor.tar", "w") as tar:
        for name, data in [("k.json", json.dumps(meta).encode()), ("k.safetensors", b"garbage")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(
        ShardError, match=r"badtensor\.tar: sample 'k' is malformed: SafetensorError"
    ):
        list(read_shard(tmp_path / "badtensor.tar"))
    with pytest.raises(ShardError, match="manifest"):
        read_manifest(tmp_path)
    with pytest.raises(ShardError, match="split='sample'"):
        ShardDataset([str(tmp_path / "cut.tar")], split="sample")
    with pytest.raises(ValueError, match="rank"):
        list(ShardDataset(tmp_path / "w", rank=2, world_size=2))
    (tmp_path / "w" / "shard-000000.tar").unlink()
    with pytest.raises(ShardError, match="missing"):
        read_manifest(tmp_path / "w")

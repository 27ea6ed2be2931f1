"""`mugv train-vae`, `mugv encode`, `mugv train-dit`, `mugv caption` end to end on tiny configs.

Real models at toy width on the synthetic world; single-threaded. The kill/resume test and the
torchrun test run the command in subprocesses, as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mugv.apps.cli import main

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUGV_ALL_PACKAGES": "1", "HF_HUB_OFFLINE": "1"}
LAUNCHER = """\
import sys
import torch
torch.set_num_threads(1)
from mugv.apps.cli import main
sys.exit(main(sys.argv[2:], commands=(sys.argv[1],)))
"""
WORLD = {"train_size": 8, "val_size": 1, "test_size": 1, "max_objects": 1}


def run_app(module: str, *argv: str) -> int:
    return main([*argv], commands=(module,))


def write_config(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Clip shards of 8 world clips (17 frames, 16x16, 2 shards), a tiny VAE, latent shards."""
    import torch

    from mugv.data.shards import ShardWriter
    from mugv.data.world import SyntheticWorld, WorldConfig
    from mugv.vae import CONFIGS, VideoVAE

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train-apps")
    world = SyntheticWorld(WorldConfig(num_frames=17, height=16, width=16, **WORLD))
    with ShardWriter(root / "clips", max_count=4) as writer:
        for i in range(8):
            writer.write(world.sample("train", i))
    torch.manual_seed(0)
    VideoVAE(CONFIGS["tiny"]).save_pretrained(root / "vae")
    argv = [str(root / "clips"), "-o", str(root / "latents"), "--vae", str(root / "vae")]
    assert (
        run_app("encode", "encode", *argv, "--text-encoder", "default", "--max-text-length", "16")
        == 0
    )
    keys = [world.sample("train", i).key for i in range(8)]
    return root, keys


def dit_config(latents: Path, **extra) -> dict:
    return {
        "model": {"config": "tiny", "fields": {"depth": 1, "hidden_size": 24}},
        "data": {"source": "latents", "latents": str(latents), "fps": 8},
        "flow": {"base_pixels": 256},
        "train": {"lr": 1e-3, "log_every": 1, "ema_decay": 0.9, "checkpoint_every": 2},
        "batch_size": 2,
        **extra,
    }


def test_latent_shards_carry_the_clips_fps(assets):
    """`mugv encode` keeps each clip's frame rate with its latents, so train-dit needs no
    data.fps for them."""
    from mugv.apps._latent_data import read_latent_shards
    from mugv.data.world import WorldConfig

    root, keys = assets
    clips = read_latent_shards(str(root / "latents"), None)
    assert sorted(clips.keys) == sorted(keys)
    assert set(clips.fps) == {WorldConfig(**WORLD).fps}


def test_world_latents_in_bf16_stay_close_to_float32(assets):
    """The demo encodes its clips under bf16 autocast: float32 latents within a few per cent
    of the float32 encoding, the same clips and captions."""
    import torch

    from mugv.apps._latent_data import world_latents
    from mugv.data.world import SyntheticWorld, WorldConfig
    from mugv.dit.text_encoder import HFTextEncoder
    from mugv.vae import VideoVAE

    root, _ = assets
    world = SyntheticWorld(WorldConfig(num_frames=9, height=16, width=16, **WORLD))
    vae = VideoVAE.from_pretrained(root / "vae").eval()
    encoder = HFTextEncoder(max_length=16)
    full, half = (world_latents(world, vae, encoder, 9, bf16=bf16) for bf16 in (False, True))
    assert full.keys == half.keys and full.fps == half.fps
    assert all(torch.equal(a, b) for x, y in zip(full.texts, half.texts) for a, b in zip(x, y))
    a, b = torch.stack(full.latents), torch.stack(half.latents)
    assert b.dtype == torch.float32 and a.shape == b.shape
    error = ((a - b).norm() / a.norm()).item()
    assert 0 < error < 0.03  # bf16 did run (not bit-equal), and stayed close


# ---- train-vae ------------------------------------------------------------------------------


def vae_config(**data) -> dict:
    return {
        "model": {"config": "tiny"},
        "data": {"num_frames": 9, "height": 16, "width": 16, "batch_size": 2, **data},
        "train": {"steps": 2, "lr": 1e-3, "log_every": 1},
        "stats": {"clips": 4},
    }


def test_train_vae_world_saves_stats_and_resumes(tmp_path, capsys):
    from mugv.vae import VideoVAE

    config = write_config(tmp_path / "vae.yaml", vae_config(source="world", world=WORLD))
    out = tmp_path / "out"
    assert run_app("train_vae", "train-vae", config, "-o", str(out)) == 0
    vae = VideoVAE.from_pretrained(out / "vae")
    assert not (vae.latent_std == 1).all() and not (vae.latent_mean == 0).all()
    assert (out / "checkpoints" / "step_00000002" / "meta.json").is_file()
    # Two more steps: the rerun resumes at step 2 instead of starting over.
    assert run_app("train_vae", "train-vae", config, "-o", str(out), "--set", "train.steps=4") == 0
    assert (out / "checkpoints" / "step_00000004" / "meta.json").is_file()
    assert "latent std" in capsys.readouterr().out


def test_train_vae_two_stages_pass_through(tmp_path):
    """MUG-V's two-stage recipe as two runs: spatial, then temporal from the spatial VAE."""
    from mugv.vae import VideoVAE

    config = write_config(tmp_path / "vae.yaml", vae_config(source="world", world=WORLD))
    first, second = tmp_path / "spatial", tmp_path / "temporal"
    argv = ["train-vae", config, "--set", "train.steps=1"]
    assert run_app("train_vae", *argv, "-o", str(first), "--set", "vae_train.stage=spatial") == 0
    sets = ["--set", "vae_train.stage=temporal", "--set", f"model.init={first / 'vae'}"]
    assert run_app("train_vae", *argv, "-o", str(second), *sets) == 0
    a = VideoVAE.from_pretrained(first / "vae").state_dict()
    b = VideoVAE.from_pretrained(second / "vae").state_dict()
    spatial = [k for k in a if k.startswith(("spatial_encoder.", "spatial_decoder."))]
    temporal = [k for k in a if k.startswith("temporal_") and k.endswith("weight")]
    assert spatial and temporal
    assert all(a[k].equal(b[k]) for k in spatial)  # frozen in the temporal stage
    assert not all(a[k].equal(b[k]) for k in temporal)


def test_train_vae_fits_the_temporal_start_unless_told_to_keep(tmp_path):
    """Before a temporal stage: the spatial scaling factor and, with a linear shortcut, the
    PCA start are fitted ('fit', the default); 'keep' trains model.init's temporal stage as is."""
    import torch

    from mugv.vae import CONFIGS, VideoVAE, clips_to_batch

    assert CONFIGS["tiny"].temporal.linear_shortcut
    config = vae_config(source="world", world=WORLD)
    path = write_config(tmp_path / "vae.yaml", config)
    first = tmp_path / "spatial"
    argv = ["train-vae", path, "--set", "train.steps=1"]
    assert run_app("train_vae", *argv, "-o", str(first), "--set", "vae_train.stage=spatial") == 0
    sets = ["--set", "vae_train.stage=temporal", "--set", f"model.init={first / 'vae'}"]
    runs = {}
    for start in ("fit", "keep"):
        out = tmp_path / start
        more = ["--set", f"model.temporal_start={start}"]
        assert run_app("train_vae", *argv, "-o", str(out), *sets, *more) == 0
        runs[start] = VideoVAE.from_pretrained(out / "vae").eval()
    spatial_scale = VideoVAE.from_pretrained(first / "vae").config.spatial.scaling_factor
    assert runs["keep"].config.spatial.scaling_factor == spatial_scale
    assert runs["fit"].config.spatial.scaling_factor != spatial_scale

    from mugv.data.world import SyntheticWorld, WorldConfig

    world = SyntheticWorld(WorldConfig(num_frames=9, height=16, width=16, seed=0, **WORLD))
    video = clips_to_batch([world.sample("train", i).clip for i in range(4)])[:, :, 1:]

    def feature_error(vae):  # the temporal stage's relative error on its own features
        with torch.no_grad():
            feats = vae.spatial_features(video)
            back = vae.temporal_decode(vae.temporal_posterior(feats).mean, feats.shape[2])
        return float((back - feats).pow(2).mean() / feats.var())

    # one step from the PCA start already gives back most of the features (0.29 measured:
    # 4 latent channels for 128 values); from the random start it does not (1.97)
    errors = {start: feature_error(vae) for start, vae in runs.items()}
    assert errors["fit"] < 0.25 * errors["keep"], errors


def test_train_vae_on_clip_shards(assets, tmp_path):
    root, _ = assets
    config = vae_config(source="shards", shards=str(root / "clips"), height=32, width=32)
    path = write_config(tmp_path / "vae.yaml", config)
    assert run_app("train_vae", "train-vae", path, "-o", str(tmp_path / "out")) == 0
    assert (tmp_path / "out" / "vae" / "model.safetensors").is_file()


def test_shard_batches_resume_where_they_stopped(assets):
    import torch

    from mugv.apps.train_vae import ShardBatches

    root, _ = assets

    def batches() -> ShardBatches:
        kwargs = {"batch_size": 2, "num_frames": 9, "size": (16, 16), "images": True}
        return ShardBatches(str(root / "clips"), seed=3, data_rank=0, data_size=1, **kwargs)

    whole = batches()
    epoch = [b["video"] for b in whole] + [b["video"] for b in whole]  # two epochs
    assert len(epoch) == 8 and not epoch[0].equal(epoch[4])  # reshuffled per epoch
    first = batches()
    it = iter(first)
    seen = [next(it)["video"] for _ in range(2)]
    resumed = batches()
    resumed.load_state_dict(first.state_dict())
    rest = [b["video"] for b in resumed] + [b["video"] for b in resumed]
    assert all(torch.equal(a, b) for a, b in zip(seen + rest, epoch))
    assert rest[0].shape == (2, 3, 9, 16, 16)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trian.steps=3", "config (top level).trian: unknown field"),
        ("data.source=web", "data.source='web'"),
        ("data.source=shards", "config data.shards=None"),
        ("train.steps=0", "config train: TrainerConfig.steps=0"),
        ("model.config=huge", "model.config: unknown VAE 'huge'"),
        ("vae_train.loss.kl_weight=-1", "vae_train.loss: LossConfig.kl_weight"),
        ("data.world.sizes=3", "config data.world.sizes: unknown field"),
        ("model.temporal_start=refit", "model.temporal_start='refit': use 'fit'"),
        ("stats.weight_power=-1", "config stats.weight_power must be a number >= 0"),
        ("stats.weight_power=lots", "standardisation); got 'lots'"),
    ],
)
def test_train_vae_bad_config_is_one_line(tmp_path, capsys, override, needle):
    config = write_config(tmp_path / "vae.yaml", vae_config(source="world", world=WORLD))
    argv = ["train-vae", config, "-o", str(tmp_path / "out"), "--set", override]
    assert run_app("train_vae", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


# ---- encode ---------------------------------------------------------------------------------


def test_encode_writes_latents_and_text_and_skips_on_rerun(assets, capsys):
    from mugv.data.shards import read_manifest, read_shard

    root, keys = assets
    latents = root / "latents"
    samples = [s for info in read_manifest(latents) for s in read_shard(latents / info.shard)]
    assert sorted(s.key for s in samples) == sorted(keys)
    sample = samples[0]
    assert sample.tensors["latents"].shape == (4, 3, 2, 2)  # 17 frames, 16x16 -> (C, 3, 2, 2)
    emb, mask = sample.tensors["text_embeddings"], sample.tensors["text_mask"]
    assert emb.shape[0] == len(sample.captions) == mask.shape[0] and emb.shape[2] == 384
    argv = [str(root / "clips"), "-o", str(latents), "--vae", str(root / "vae")]
    assert run_app("encode", "encode", *argv) == 0
    assert "0 shards encoded (0 samples), 2 done before" in capsys.readouterr().out


@pytest.mark.distributed
def test_encode_under_torchrun_splits_the_shards(assets, tmp_path):
    from mugv.data.shards import read_manifest

    root, keys = assets
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone"),
        *(_launcher(tmp_path), "encode", "encode", str(root / "clips")),
        *("-o", str(tmp_path / "latents"), "--vae", str(root / "vae")),
    ]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 shards encoded (8 samples), 0 done before; 2 rank(s)" in result.stdout
    assert sorted(k for s in read_manifest(tmp_path / "latents") for k in s.keys) == sorted(keys)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["nowhere", "-o", "x", "--vae", "."], "input nowhere: no such folder"),
        (["{clips}", "-o", "x"], "give --vae"),
        (["{clips}", "-o", "x", "--vae", "missing"], "--vae missing: no such VideoVAE folder"),
        (["{clips}", "-o", "x", "--vae", "{vae}", "--text-encoder", "nope"], "--text-encoder"),
        (["{clips}", "--vae", "{vae}", "--set", "encode.tiles=2"], "encode.tiles: unknown field"),
    ],
)
def test_encode_bad_input(assets, capsys, argv, needle):
    root, _ = assets
    argv = [a.format(clips=root / "clips", vae=root / "vae") for a in argv]
    assert run_app("encode", "encode", *argv) == 2
    assert needle in capsys.readouterr().err


# ---- train-dit ------------------------------------------------------------------------------


def test_curriculum_runs_stages_in_order_with_sft_filter(assets, tmp_path, capsys):
    from mugv.dit import MUGDiT
    from mugv.infra import single_process

    root, keys = assets
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {"key": k, "status": "kept" if i != 7 else "filtered", "scores": {"aesthetic": i / 8}}
        for i, k in enumerate(keys)
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages = [
        {"name": "images", "frames": 1, "steps": 2, "flow": {"task_probs": {"t2i": 1.0}}},
        {"name": "clips", "frames": 9, "steps": 2, "lr": 5e-4},
        {
            "name": "sft",
            "steps": 2,
            "filter": {"manifest": str(manifest), "min": {"aesthetic": 0.5}},
        },
    ]
    config = write_config(tmp_path / "dit.yaml", dit_config(root / "latents", stages=stages))
    out = tmp_path / "out"
    assert run_app("train_dit", "train-dit", config, "-o", str(out)) == 0
    done = [
        json.loads((out / "stages" / s / "done.json").read_text())
        for s in ("0-images", "1-clips", "2-sft")
    ]
    assert [d["latent_shape"][1] for d in done] == [1, 2, 3]  # 1, 9, 17 frames
    assert done[2]["clips"] == 3  # aesthetic >= 0.5 and kept: clips 4, 5, 6
    with single_process():
        model = MUGDiT.from_pretrained(out / "stages" / "2-sft" / "ema")
    assert model.dit.hidden_size == 24 and model.dit.text_dim == 384
    assert run_app("train_dit", "train-dit", config, "-o", str(out)) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before, skipped") == 3


def test_train_dit_on_the_world(assets, tmp_path):
    root, _ = assets
    config = dit_config(
        root / "latents",
        data={"source": "world", "vae": str(root / "vae"), "max_text_length": 16, "world": WORLD},
        stages=[{"name": "clips", "frames": 9, "height": 16, "width": 16, "steps": 2}],
    )
    path = write_config(tmp_path / "dit.yaml", config)
    assert run_app("train_dit", "train-dit", path, "-o", str(tmp_path / "out")) == 0
    done = json.loads((tmp_path / "out" / "stages" / "0-clips" / "done.json").read_text())
    assert done["latent_shape"] == [4, 2, 2, 2] and done["pairs"] == 32


def _launcher(tmp_path: Path) -> str:
    path = tmp_path / "launch.py"
    path.write_text(LAUNCHER)
    return str(path)


def test_train_dit_resumes_inside_a_stopped_stage(assets, tmp_path):
    root, _ = assets
    stages = [
        {"name": "images", "frames": 1, "steps": 2},
        {"name": "clips", "steps": 100},
        {"name": "sft", "steps": 2, "lr": 1e-4},
    ]
    config = write_config(tmp_path / "dit.yaml", dit_config(root / "latents", stages=stages))
    out = tmp_path / "out"
    cmd = [sys.executable, _launcher(tmp_path), "train_dit", "train-dit", config, "-o", str(out)]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    checkpoints = out / "stages" / "1-clips" / "checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("step_*/meta.json")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint of stage 1 in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # what Slurm sends before the time limit
    first = proc.communicate(timeout=300)[0]
    assert proc.returncode == 3, first
    assert "1-clips: stopped at step" in first
    assert not (out / "stages" / "1-clips" / "done.json").exists()
    stopped = int(first.split("1-clips: stopped at step ")[1].split()[0])
    assert 2 <= stopped < 100

    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    log = second.stdout + second.stderr
    assert "0-images: done before, skipped" in log
    assert f"at step {stopped}" in log  # the Trainer's "resumed from ... at step N"
    assert "step 1/100" not in log
    assert json.loads((out / "stages" / "1-clips" / "done.json").read_text())["steps"] == 100
    assert (out / "stages" / "2-sft" / "ema" / "model.safetensors").is_file()


@pytest.mark.distributed
@pytest.mark.parametrize(
    "parallel", [{}, {"tensor": 2, "sequence_parallel": True}, {"pipeline": 2}]
)
def test_train_dit_under_torchrun(assets, tmp_path, parallel):
    root, _ = assets
    stages = [{"name": "images", "frames": 1, "steps": 2}, {"name": "clips", "steps": 2}]
    config = dit_config(root / "latents", parallel=parallel, stages=stages)
    config["model"]["fields"]["depth"] = 2  # one block per pipeline stage
    path = write_config(tmp_path / "dit.yaml", config)
    out = tmp_path / "out"
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--standalone", _launcher(tmp_path), "train_dit", "train-dit", path),
        *("-o", str(out)),
    ]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[train-dit] done" in result.stdout
    assert result.stdout.count("[train-dit] stage") == 2  # printed by rank 0 only
    assert (out / "stages" / "1-clips" / "ema" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"stages": []}, "config stages: give a non-empty list"),
        ({"stages": [{"name": "a"}]}, "stages[0].steps: say how many"),
        ({"stages": [{"name": "a", "steps": 1, "frames": 10}]}, "stages[0].frames=10: use 1 + 8k"),
        ({"stages": [{"name": "a", "steps": 1, "sizes": 2}]}, "stages[0].sizes: unknown field"),
        ({"stages": [{"name": "a", "steps": 1}] * 2}, "stages[1].name='a': used twice"),
        ({"parallel": {"tensor": 0}}, "config parallel: ParallelConfig.tensor=0"),
        ({"parallel": {"tensor": 2}}, "config parallel: ParallelConfig: world size 1"),
        ({"model": {"config": "2B"}}, "model.config='2B': use one of"),
        ({"flow": {"task_probs": {"t3v": 1}}}, "config flow: FlowConfig.task_probs has unknown"),
        ({"data": {"source": "latents", "latents": "nowhere"}}, "data.latents='nowhere'"),
        (
            {"stages": [{"name": "a", "steps": 1, "filter": {"manifest": "no.jsonl"}}]},
            "filter.manifest no.jsonl: no such manifest",
        ),
        (
            {"stages": [{"name": "a", "steps": 1, "train": {"steps": 3}}]},
            "stages[0].train.steps: set by the curriculum",
        ),
    ],
)
def test_train_dit_bad_config_is_one_line(assets, tmp_path, capsys, change, needle):
    root, _ = assets
    config = dit_config(root / "latents", stages=[{"name": "a", "steps": 1}])
    config |= change
    path = write_config(tmp_path / "dit.yaml", config)
    assert run_app("train_dit", "train-dit", path, "-o", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_manifest_filter_selects_by_status_and_score_band(tmp_path):
    from mugv.apps._curriculum import ManifestFilter

    path = tmp_path / "manifest.jsonl"
    rows = [
        {"key": "a", "status": "kept", "scores": {"aesthetic": 0.9, "motion": 2.0}},
        {"key": "b", "status": "kept", "scores": {"aesthetic": 0.2, "motion": 2.0}},
        {"key": "c", "status": "filtered", "scores": {"aesthetic": 0.9, "motion": 2.0}},
        {"key": "d", "status": "kept", "scores": {"aesthetic": 0.9, "motion": 9.0}},
        {"key": "e", "status": "kept", "scores": {"motion": 2.0}},
        {"key": "f", "source": "x.mp4", "status": "failed", "stage": "decode", "reason": "bad"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    band = ManifestFilter(manifest=str(path), min={"aesthetic": 0.5}, max={"motion": 5.0})
    assert band.keys() == {"a"}
    assert ManifestFilter(manifest=str(path)).keys() == {"a", "b", "d", "e"}
    assert ManifestFilter(manifest=str(path), status=None).keys() == set("abcdef")


# ---- caption --------------------------------------------------------------------------------


def test_caption_shards_and_videos(assets, tmp_path, capsys):
    import torch

    from mugv.captioning import TSG, TSGCaptioner, build_vocabularies, tsg_config, world_examples
    from mugv.data.video import write_video
    from mugv.data.world import SyntheticWorld, WorldConfig

    root, keys = assets
    world = SyntheticWorld(WorldConfig(num_frames=9, height=32, width=32, **WORLD))
    words, labels = build_vocabularies(world_examples(world, "train"))
    torch.manual_seed(0)
    model = TSG(tsg_config("tiny", vocab_size=len(words), num_labels=len(labels), max_length=12))
    TSGCaptioner(model, words, labels).save(tmp_path / "tsg")
    write_video(tmp_path / "videos" / "one.mp4", world.sample("train", 0).clip)
    out = tmp_path / "captions.jsonl"
    argv = ["caption", str(root / "clips"), str(tmp_path / "videos"), "--captioner"]
    assert run_app("caption", *argv, str(tmp_path / "tsg"), "--beam", "2", "-o", str(out)) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["key"] for r in rows] == [*keys, "one"]
    assert [r["graph"] for r in rows] == ["stored"] * 8 + ["oracle"]
    assert all(isinstance(r["caption"], str) for r in rows)
    assert capsys.readouterr().out.count("\t") == 9


def test_caption_bad_input(assets, tmp_path, capsys):
    root, _ = assets
    assert run_app("caption", "caption", str(root / "clips"), "--captioner", str(tmp_path)) == 2
    assert "not a TSGCaptioner folder" in capsys.readouterr().err


# ---- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["train_vae", "encode", "train_dit", "caption"])
def test_help_explains_every_option(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([module.replace("_", "-"), "--help"], commands=(module,))
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--set", "-o") if module != "caption" else ("--captioner", "--beam"):
        assert option in text


@pytest.mark.parametrize("module", ["train_vae", "train_dit"])
def test_help_example_config_is_valid(module, tmp_path):
    import importlib
    import textwrap

    app = importlib.import_module(f"mugv.apps.{module}")
    config = yaml.safe_load(textwrap.dedent(app.EXAMPLE.split("\n", 1)[1]))
    if module == "train_dit":
        plan = app.load_plan(config)
        plan.check_layout(world_size=1)
        assert [s.name for s in plan.stages] == ["images", "clips", "sft"]
    else:
        assert app.load_settings(config, tmp_path).trainer_config.steps == 300

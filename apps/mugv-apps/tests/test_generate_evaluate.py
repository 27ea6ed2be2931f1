"""`mugv generate` and `mugv evaluate` through the command line on real (tiny) checkpoints."""

import json

import pytest

from mugv.apps.cli import main
from mugv.data.video import probe, read_video, write_video
from mugv.data.world import SyntheticWorld, WorldConfig


def test_generate_writes_mp4s_at_the_asked_fps(tmp_path, tiny_checkpoints, capsys):
    dit, vae = tiny_checkpoints
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a small red circle moves to the left\n\na large blue square stays still\n")
    out = tmp_path / "out"
    code = main(
        [
            "generate",
            "--prompts",
            str(prompts),
            "--dit",
            str(dit),
            "--vae",
            str(vae),
            "-o",
            str(out),
            "--frames",
            "9",
            "--height",
            "32",
            "--width",
            "32",
            "--fps",
            "12",
            "--steps",
            "2",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [
        "a small red circle moves to the left",
        "a large blue square stays still",
    ]
    for row in rows:
        info = probe(out / row["video"])
        assert (info.num_frames, info.height, info.width) == (9, 32, 32)
        assert info.fps == pytest.approx(12.0)


def test_generate_with_contrasts_changes_the_video(tmp_path, tiny_checkpoints):
    import torch

    from mugv.dit import MUGDiT
    from mugv.infra import single_process

    dit, vae = tiny_checkpoints
    with single_process(seed=0):  # a freshly initialised DiT outputs zero (adaLN-zero): perturb it
        model = MUGDiT.from_pretrained(dit)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
        model.save_pretrained(tmp_path / "dit")
    dit = tmp_path / "dit"
    base = ["generate", "a small red circle", "--dit", str(dit), "--vae", str(vae)]
    base += ["--steps", "3", "--height", "32", "--width", "32", "--frames", "9"]
    assert main([*base, "-o", str(tmp_path / "plain.mp4")]) == 0
    rivals = ["--contrast", "a small red square", "--contrast", "a small red triangle"]
    assert main([*base, *rivals, "-o", str(tmp_path / "contrast.mp4")]) == 0
    plain = read_video(tmp_path / "plain.mp4").frames
    contrast = read_video(tmp_path / "contrast.mp4").frames
    assert plain.shape == contrast.shape == (9, 32, 32, 3)
    assert abs(plain.astype(int) - contrast.astype(int)).max() > 0
    bf16 = tmp_path / "bf16.mp4"
    assert main([*base, "--precision", "bf16", "-o", str(bf16)]) == 0
    moved = abs(read_video(bf16).frames.astype(int) - plain.astype(int))
    assert moved.mean() < 2.0, f"bf16 sampling moved pixels by {moved.mean():.2f} on average"


def test_generate_takes_patch_and_length_from_the_checkpoints(tmp_path, tiny_checkpoints, capsys):
    """A DiT with patch (1, 4, 4) on the stride-8 VAE needs sizes in multiples of 32, and its
    RoPE table of 2 latent frames bounds the length: both refused in one line, not in the model."""
    from mugv.dit import MUGDiT, dit_config
    from mugv.infra import single_process

    _, vae = tiny_checkpoints
    with single_process(seed=0):
        config = dit_config("tiny", in_channels=4, depth=1, patch_size=(1, 4, 4), max_frames=2)
        MUGDiT(config).save_pretrained(tmp_path / "dit")
    base = ["generate", "a red circle", "--dit", str(tmp_path / "dit"), "--vae", str(vae)]
    base += ["--steps", "1", "--width", "32"]
    for extra, message in (
        (["--height", "48", "--frames", "9"], "height=48 is not a multiple of 32"),
        (["--height", "32", "--frames", "17"], "longer than the 3D RoPE table (2)"),
    ):
        assert main([*base, *extra, "-o", str(tmp_path / "bad.mp4")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    out = tmp_path / "ok.mp4"
    assert main([*base, "--height", "32", "--frames", "9", "-o", str(out)]) == 0
    info = probe(out)
    assert (info.num_frames, info.height, info.width) == (9, 32, 32)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--height", "40"], "height=40"),
        (["--frames", "10"], "num_frames=10"),
        (["--prompts", "MISSING"], "no such file"),
        (["--dit", "MISSING"], "no such checkpoint folder"),
        (["--contrast", " "], "a --contrast caption is empty"),
        (["--contrast", "a red square", "--contrast-scale", "-1"], "contrast_scale must be >= 0"),
    ],
)
def test_generate_bad_requests_fail_in_one_line(tmp_path, tiny_checkpoints, capsys, extra, message):
    dit, vae = tiny_checkpoints
    args = ["generate", "--dit", str(dit), "--vae", str(vae), "-o", str(tmp_path / "x.mp4")]
    args += ["--steps", "1", "--height", "32", "--width", "32"]
    if "--prompts" not in extra:
        args.insert(1, "a red circle")
    args += [str(tmp_path / a) if a == "MISSING" else a for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_evaluate_scores_real_world_clips_perfectly(tmp_path, capsys):
    world = SyntheticWorld(WorldConfig(num_frames=17, height=64, width=64))
    rows = []
    for i in range(4):
        sample = world.sample("test", i)
        write_video(tmp_path / f"{i}.mp4", sample.clip)
        rows.append({"video": f"{i}.mp4", "prompt": sample.captions[0]})
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["evaluate", str(tmp_path), "--out", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert len(scores) == 4
    assert all(s["all"] == 1.0 for s in scores), scores
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].split()[-6:] == ["1.000"] * 6
    # four hits out of four: Wilson's interval, 0.51-1.00
    assert lines[-1].split() == ["95%", "interval"] + ["0.51-1.00"] * 6

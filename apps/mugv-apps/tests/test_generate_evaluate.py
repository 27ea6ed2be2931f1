"""`mugv generate` and `mugv evaluate` through the command line on real (tiny) checkpoints."""

import json

import pytest

from mugv.apps.cli import main
from mugv.data.video import probe, write_video
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


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--height", "40"], "height=40"),
        (["--frames", "10"], "num_frames=10"),
        (["--prompts", "MISSING"], "no such file"),
        (["--dit", "MISSING"], "no such checkpoint folder"),
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

"""`mugv demo --smoke`: every stage runs and writes files that parse; a rerun reuses them."""

import json
import re

from mugv.apps._demo_steps import shape_contrasts
from mugv.apps.cli import main
from mugv.data.video import probe
from mugv.data.world import ObjectSpec, SceneSpec
from mugv.infra import fast_bf16


def test_demo_smoke_runs_every_stage_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    # two data-parallel DiT ranks here (the default trains in this process, as the next test)
    assert main(["demo", "--smoke", "-o", str(out), "--threads", "2", "--dit-ranks", "2"]) == 0
    first = capsys.readouterr().out
    stages = sorted(p.stem for p in (out / "stages").glob("*.json"))
    assert stages == [
        "dit_clips",
        "dit_images",
        "dit_short_clips",
        "generate_and_score",
        "vae",
    ]
    gen = json.loads((out / "stages" / "generate_and_score.json").read_text())
    videos = [r for r in gen["rows"] if "video" in r]
    assert {r["kind"] for r in videos} == {"t2v", "i2v"} and len(videos) == 4
    for row in videos:
        info = probe(out / row["video"])
        assert (info.num_frames, info.height, info.width) == (17, 32, 32)
    real = [a for a in gen["accuracy"] if a["videos"] == "real" and a["prompts"] == "all"]
    assert real[0]["all"] == 1.0  # the oracle reads the world's own clips exactly
    page = (out / "report.html").read_text()
    assert page.count("<video") == 4 and "<svg" in page
    # the DiT's precision follows the CPU: bf16 where it has AMX tiles, else fp32
    assert f"trained in {'bf16' if fast_bf16('cpu') else 'fp32'};" in page
    assert "contrast guidance 4 against the prompt with its shape swapped" in page
    assert "for each other shape (t in [0.3, 1])." in page
    vae = json.loads((out / "stages" / "vae.json").read_text())
    assert {k: len(v) > 0 for k, v in vae["curves"].items()} == {
        "vae spatial loss": True,
        "vae temporal loss": True,
    }
    assert "vae spatial loss" in page and "vae temporal loss" in page
    assert "http://" not in page and "https://" not in page
    assert "report:" in first

    assert main(["demo", "--smoke", "-o", str(out), "--threads", "2"]) == 0
    second = capsys.readouterr().out
    assert len(re.findall(r"done before, reused", second)) == 5


def test_shape_contrasts_swap_one_shape_at_a_time():
    spec = SceneSpec(
        objects=(
            ObjectSpec(shape="diamond", colour="blue", size="small", motion="left", speed=0.1),
        ),
        background=(30, 30, 30),
    )
    assert spec.caption() == "a small blue diamond moving left slowly"
    assert shape_contrasts(spec) == [
        "a small blue circle moving left slowly",
        "a small blue square moving left slowly",
        "a small blue triangle moving left slowly",
    ]
    two = SceneSpec(
        objects=(
            *spec.objects,
            ObjectSpec(shape="circle", colour="red", size="large", motion="static", speed=0.0),
        ),
        background=(30, 30, 30),
    )
    rivals = shape_contrasts(two)
    assert len(rivals) == 6 and len(set(rivals)) == 6 and two.caption() not in rivals
    assert all(r.count("diamond") + r.count("circle") >= 1 for r in rivals)


def test_demo_refuses_a_folder_of_another_size(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"plan": "full", "seed": 0}))
    assert main(["demo", "--smoke", "-o", str(out)]) == 2
    assert "another size or seed" in capsys.readouterr().err


def test_demo_refuses_ranks_that_do_not_split_the_batch(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "-o", str(out), "--dit-ranks", "3"]) == 2
    assert not out.exists()  # refused before anything is written
    err = capsys.readouterr().err
    assert "--dit-ranks 3" in err and "batch of 4" in err


def test_a_stopped_stage_is_not_marked_done_and_resumes(tmp_path, capsys, monkeypatch):
    """A signal during a stage (the Trainer saves and returns early) stops the demo with
    status 3 and keeps the stage unfinished: no marker, no model; a rerun resumes it."""
    from mugv.infra.trainer import Trainer

    out = tmp_path / "demo"
    args = ["demo", "--smoke", "-o", str(out), "--threads", "1", "--dit-ranks", "1"]

    def signal_in_short_clips(self):  # as if SIGTERM arrived during that stage's first step
        return "dit-short-clips" in str(self.config.checkpoint_dir)

    monkeypatch.setattr(Trainer, "_stop_requested", signal_in_short_clips)
    assert main(args) == 3
    assert "dit short clips stopped at step 1 of 2" in capsys.readouterr().out
    assert sorted(p.stem for p in (out / "stages").glob("*.json")) == ["dit_images", "vae"]
    assert [p.name for p in sorted((out / "dit").iterdir())] == ["stage-0-images"]
    assert (out / "checkpoints" / "dit-short-clips" / "step_00000001").is_dir()

    monkeypatch.undo()
    assert main(args) == 0
    assert len(re.findall(r"done before, reused", capsys.readouterr().out)) == 2
    assert [p.name for p in sorted((out / "dit").iterdir())] == [
        "stage-0-images",
        "stage-1-short-clips",
        "stage-2-clips",
    ]

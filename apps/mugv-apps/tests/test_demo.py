"""`mugv demo --smoke`: every stage runs and writes files that parse; a rerun reuses them."""

import dataclasses
import json
import re

import pytest

from mugv.apps._demo_steps import demo_contrasts, goal_note, motion_contrasts, shape_contrasts
from mugv.apps._stats import score_interval, wilson_interval
from mugv.apps.cli import main
from mugv.apps.demo import PLANS
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
    assert real[0]["colour_shape 95%"] == pytest.approx(list(wilson_interval(1.0, 2)))
    page = (out / "report.html").read_text()
    assert page.count("<video") == 4 and "<svg" in page
    # the DiT's precision follows the CPU: bf16 where it has AMX tiles, else fp32
    assert f"trained in {'bf16' if fast_bf16('cpu') else 'fp32'};" in page
    assert "<th>colour_shape 95%</th>" in page and "<th>motion 95%</th>" in page
    assert '<td class="n">0.34-1.00</td>' in page  # 'real': 2 of 2 right
    assert "Goals on held-out prompts (colour+shape &gt;= 0.80, motion &gt;= 0.70)" in page
    assert "contrast guidance 6 against the prompt with its shape swapped for each other" in page
    assert "and (weighted 0.33) its motion for each other motion (t in [0.3, 1])." in page
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


def test_wilson_interval_matches_the_textbook_values():
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion", method 3
    # (Wilson score, no continuity correction), its worked examples
    assert wilson_interval(81 / 263, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15 / 148, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson_interval(0.0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert wilson_interval(1 / 29, 29) == pytest.approx((0.0061, 0.1718), abs=1e-4)
    assert wilson_interval(1.0, 2) == pytest.approx((0.3424, 1.0), abs=1e-4)
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0.5, 0)


def test_score_interval_is_wilson_for_hits_and_normal_for_fractions():
    hits = [1.0] * 81 + [0.0] * 182
    assert score_interval(hits) == pytest.approx(wilson_interval(81 / 263, 263))
    # mean 0.5, sample sd 0.4082 over 4 videos: 0.5 +- 1.96 * 0.4082 / 2
    assert score_interval([0.5, 0.5, 0.0, 1.0]) == pytest.approx((0.1, 0.9), abs=1e-4)
    assert score_interval([0.5, 1.0, 1.0, 1.0])[1] == 1.0  # clipped to [0, 1]
    assert score_interval([0.5]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        score_interval([])


def test_goal_note_reads_the_held_out_rows():
    def row(videos, prompts, n, cs, motion):
        return {
            "videos": videos,
            "prompts": prompts,
            "n": n,
            "colour_shape": cs,
            "motion": motion,
            "colour_shape 95%": wilson_interval(cs, n),
            "motion 95%": wilson_interval(motion, n),
        }

    table = [
        row("t2v", "all", 48, 0.9, 0.9),  # not the held-out row: ignored
        row("t2v", "held-out", 20, 0.25, 0.75),
        row("i2v", "held-out", 20, 0.85, 0.5),
    ]
    assert goal_note(table) == (
        "Goals on held-out prompts (colour+shape >= 0.80, motion >= 0.70): "
        "t2v on 20 held-out prompts, colour+shape 0.25 (95% interval 0.11-0.47; not met), "
        "motion 0.75 (95% interval 0.53-0.89; met); "
        "i2v on 20 held-out prompts, colour+shape 0.85 (95% interval 0.64-0.95; met), "
        "motion 0.50 (95% interval 0.30-0.70; not met)."
    )
    assert goal_note(table[:1]).endswith("this run drew no held-out test prompt.")


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


def test_motion_contrasts_swap_the_motion_and_weigh_below_shapes():
    spec = SceneSpec(
        objects=(
            ObjectSpec(shape="diamond", colour="blue", size="small", motion="left", speed=0.2),
        ),
        background=(30, 30, 30),
    )
    assert motion_contrasts(spec) == [
        "a small blue diamond moving right quickly",
        "a small blue diamond moving up quickly",
        "a small blue diamond moving down quickly",
        "a small blue diamond staying still",
    ]
    still = SceneSpec(
        objects=(ObjectSpec(shape="circle", colour="red", size="large"),),
        background=(30, 30, 30),
    )
    assert motion_contrasts(still)[0] == "a large red circle moving left slowly"
    texts, weights = demo_contrasts(spec, PLANS["standard"])
    assert texts == shape_contrasts(spec) + motion_contrasts(spec)
    assert weights == [1.0] * 3 + [PLANS["standard"].contrast_motion_weight] * 4
    no_motion = dataclasses.replace(PLANS["standard"], contrast_motion_weight=0.0)
    assert demo_contrasts(spec, no_motion) == (shape_contrasts(spec), [1.0] * 3)


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
    assert "--dit-ranks 3" in err and "batches [4]" in err


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

"""`mugv retrieve` train / evaluate / search through the command line, on a tiny real model."""

import json

import pytest
import torch

from mugv.apps.cli import main
from mugv.data.video import write_video
from mugv.data.world import SyntheticWorld, WorldConfig


def retrieve(*args: str) -> int:
    return main(["retrieve", *args], commands=("retrieve",))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`mugv retrieve train` of the tiny preset for a few steps on 8 world clips."""
    out = tmp_path_factory.mktemp("retrieve") / "run"
    config = out.parent / "config.yaml"
    config.write_text(
        "model:\n  preset: tiny\n  video: {num_frames: 4, image_size: 32}\n"
        "data: {source: world, clips: 8}\n"
        "recipe: {steps: 2, vtm_steps: 1, batch_size: 4, vtm_batch: 2, log_every: 1}\n"
    )
    code = main(
        ["retrieve", "train", str(config), "--set", "model.cross_attention=p2w", "-o", str(out)],
        commands=("retrieve",),
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """Four world clips as mp4 + prompts.jsonl, one broken file and one empty prompt."""
    folder = tmp_path_factory.mktemp("videos")
    world = SyntheticWorld(WorldConfig(num_frames=8, height=32, width=32, fps=4.0))
    rows = []
    for i in range(4):
        sample = world.sample("test", i)
        write_video(folder / f"{i}.mp4", sample.clip)
        rows.append({"video": f"{i}.mp4", "prompt": sample.captions[0]})
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    rows.append({"video": "broken.mp4", "prompt": "a red circle"})
    rows.append({"video": "3.mp4", "prompt": "   "})
    rows.append({"video": "2.mp4", "prompt": "a small red circle " * 40})  # over-long: truncated
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder, [r["prompt"] for r in rows[:4]]


def test_train_writes_a_loadable_model_with_the_overrides(trained):
    from mugv.retrieval import TWBert

    model = TWBert.from_pretrained(trained / "model")
    assert model.config.cross_attention == "p2w"  # from --set
    assert (model.config.video.num_frames, model.config.video.image_size) == (4, 32)
    stats = json.loads((trained / "train.json").read_text())
    assert stats["clips"] == 8
    assert stats["align"]["steps"] == 2 and stats["match"]["steps"] == 1
    assert "vtm" in stats["match"]["last"]  # stage 2 trained the matching head
    assert "model:" in (trained / "config.yaml").read_text()


def test_evaluate_folder_skips_bad_items_and_prints_the_table(trained, video_folder, capsys):
    folder, _ = video_folder
    out = folder / "metrics.json"
    code = retrieve(
        "evaluate",
        "--model",
        str(trained / "model"),
        "--folder",
        str(folder),
        "--k",
        "2",
        "--out",
        str(out),
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "broken.mp4" in captured.err and "cannot read" in captured.err
    report = json.loads(out.read_text())
    # 4 readable videos; captions: 4 good + the truncated long one (the empty one is dropped)
    assert (report["videos"], report["captions"]) == (4, 5)
    assert "broken.mp4" in report["skipped"]
    for direction in ("t2v", "v2t"):
        m = report[direction]
        assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 100
        assert m["R@5"] == 100.0  # 4 videos: everything is in the top 5
    assert "t2v" in captured.out and "R@10" in captured.out


def test_search_ranks_every_readable_video(trained, video_folder, capsys):
    folder, prompts = video_folder
    code = retrieve(
        "search",
        prompts[1],
        "",
        "--model",
        str(trained / "model"),
        "--videos",
        str(folder),
        "--top",
        "10",
        "--json",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(r["path"].rsplit("/", 1)[1] for r in rows) == [f"{i}.mp4" for i in range(4)]
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert "skipped" in captured.err and "broken.mp4" in captured.err
    assert "empty query" in captured.err


def test_search_agrees_with_the_library(trained, video_folder, capsys):
    from mugv.retrieval import TWBert, VideoLibrary

    folder, prompts = video_folder
    retrieve("search", prompts[0], "--model", str(trained / "model"), "--videos", str(folder))
    lines = capsys.readouterr().out.splitlines()
    library = VideoLibrary.from_folder(TWBert.from_pretrained(trained / "model"), folder)
    hits = library.search(prompts[0], k=10, rerank=16)
    assert [line.split("\t")[2] for line in lines] == [h.path for h in hits]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--model", "MISSING", "--world", "4"], "no such checkpoint folder"),
        (["search", "a red circle", "--model", "MODEL", "--videos", "MISSING"], "no such folder"),
        (["evaluate", "--model", "MODEL", "--folder", "EMPTY"], "prompts.jsonl: no prompt file"),
        (["evaluate", "--model", "MODEL", "--world", "4", "--k", "-1"], "--k -1"),
        (["train", "--set", "model.colour=red", "-o", "OUT"], "model.colour: unknown field"),
        (["train", "--set", "model.preset=huge", "-o", "OUT"], "model.preset='huge'"),
        (["train", "--set", "recipe.steps=0", "-o", "OUT"], "Recipe.steps"),
        (["train", "--set", "data.source=web", "-o", "OUT"], "data.source='web'"),
        (["train", "--set", "model.patch_pool=3", "-o", "OUT"], "patch_pool=3"),
    ],
)
def test_bad_requests_fail_in_one_line(trained, tmp_path, capsys, args, message):
    (tmp_path / "EMPTY").mkdir()
    subs = {
        "MODEL": str(trained / "model"),
        "MISSING": str(tmp_path / "missing"),
        "EMPTY": str(tmp_path / "EMPTY"),
        "OUT": str(tmp_path / "out"),
    }
    assert retrieve(*[subs.get(a, a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err

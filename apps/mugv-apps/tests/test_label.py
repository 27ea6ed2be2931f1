"""`mugv label`: choices made in headless Chromium survive a restart and export; auto labelling."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mugv.apps._config import AppError
from mugv.apps._label_server import LabelServer
from mugv.apps._label_store import LabelStore, read_pairs
from mugv.apps.cli import build_parser, main
from mugv.data.preference import read_labels
from mugv.data.video import write_video
from mugv.data.world import SyntheticWorld, WorldConfig, parse_prompt

from .conftest import CHROMIUM_ARGS

PROMPTS = ["a large red square moving right", "a small blue circle", "a large green triangle"]
OTHER = ["a large yellow circle moving left", "a small green square", "a large blue diamond"]
EXPECTED = ["a", "b", "a"]  # the side showing the video rendered from the prompt


def label(*argv: str) -> int:
    return main(["label", *map(str, argv)], commands=("label",))


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    """Three pairs of 64x64 H.264 yuv420p mp4s; the prompt's own clip on side `EXPECTED`."""
    root = tmp_path_factory.mktemp("label")
    world = SyntheticWorld(WorldConfig(num_frames=9, fps=4))
    lines = []
    for i, (prompt, other, side) in enumerate(zip(PROMPTS, OTHER, EXPECTED)):
        good = write_video(root / "videos" / f"good{i}.mp4", world.render(parse_prompt(prompt)))
        bad = write_video(root / "videos" / f"bad{i}.mp4", world.render(parse_prompt(other)))
        a, b = (good, bad) if side == "a" else (bad, good)
        lines.append(
            {"prompt": prompt, "video_a": f"videos/{a.name}", "video_b": f"videos/{b.name}"}
        )
    lines[1]["metadata"] = {"seed": 7}
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _serve(pairs_file, db, port=0):
    return LabelServer(
        read_pairs(pairs_file), LabelStore(db), annotator="tester", port=port
    ).start()


def _close(server):
    server.close()
    server.store.close()


def _videos(page):
    page.wait_for_function(
        "['a', 'b'].every(s => { const v = document.getElementById('video-' + s);"
        " return v.readyState >= 2 || v.error; })",
        timeout=30_000,
    )
    return page.evaluate(
        "['a', 'b'].map(s => { const v = document.getElementById('video-' + s);"
        " return {ready: v.readyState, error: v.error && v.error.code, width: v.videoWidth,"
        " src: v.currentSrc}; })"
    )


def test_choices_in_chromium_survive_a_restart_and_export(
    tmp_path, pairs_file, chromium_path, capsys
):
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)  # the CI machine is shared: allow slow page updates
    db = tmp_path / "labels.sqlite"
    server = _serve(pairs_file, db)
    port = server.httpd.server_port
    ids = [p.id for p in read_pairs(pairs_file)]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(server.url)
            expect(page.locator("#prompt")).to_have_text(PROMPTS[0])
            expect(page.locator("#progress")).to_contain_text("1 of 3")
            for state in _videos(page):  # the H.264 files play in Chromium
                assert state["error"] is None and state["ready"] >= 2 and state["width"] == 64
            # a seek needs Range requests: jump to the middle and wait for the frame
            page.evaluate(
                "new Promise(r => { const v = document.getElementById('video-a');"
                " v.pause(); v.addEventListener('seeked', r, {once: true}); v.currentTime = 1.0; })"
            )

            page.click("#choose-a")
            expect(page.locator("#progress")).to_contain_text("2 of 3")
            expect(page.locator("#prompt")).to_have_text(PROMPTS[1])
            page.keyboard.press("b")
            expect(page.locator("#progress")).to_contain_text("3 of 3")

            with sqlite3.connect(db) as con:
                rows = con.execute(
                    "SELECT pair_id, annotator, choice FROM choices ORDER BY created_at"
                ).fetchall()
            assert rows == [(ids[0], "tester", "a"), (ids[1], "tester", "b")]

            _close(server)
            server = _serve(pairs_file, db, port=port)  # a new server on the same database
            page.reload()
            expect(page.locator("#prompt")).to_have_text(PROMPTS[2])
            expect(page.locator("#progress")).to_contain_text("3 of 3 (2 labelled")
            assert all(s["error"] is None and s["width"] == 64 for s in _videos(page))

            assert label("export", "--db", db, "-o", tmp_path / "out.jsonl") == 0
            exported = read_labels(tmp_path / "out.jsonl")
            assert [(x.prompt, x.choice) for x in exported] == [
                (PROMPTS[0], "a"),
                (PROMPTS[1], "b"),
            ]
            assert exported[1].metadata["seed"] == 7 and exported[1].metadata["pair_id"] == ids[1]
            assert all(x.source == "human" and os.path.isfile(x.video_a) for x in exported)

            page.keyboard.press("u")  # undo "b" on pair 2, then call it a tie
            expect(page.locator("#prompt")).to_have_text(PROMPTS[1])
            page.keyboard.press("3")
            expect(page.locator("#prompt")).to_have_text(PROMPTS[2])
            page.keyboard.press("Space")  # skip pair 3
            expect(page.locator("#finished")).to_be_visible()
            browser.close()
    finally:
        _close(server)
    assert [r[2] for r in LabelStore(db).choices("tester")] == ["a", "tie", "skip"]
    assert label("export", "--db", db, "-o", tmp_path / "out.jsonl") == 0
    assert "wrote 2 labels" in capsys.readouterr().out  # the skip is left out


def test_the_command_serves_until_sigterm(tmp_path, pairs_file):
    """`mugv label serve` itself: prints the address, answers, stops cleanly on SIGTERM."""
    code = "import sys; from mugv.apps.cli import main; sys.exit(main(sys.argv[1:], ('label',)))"
    argv = ["label", "serve", str(pairs_file), "--db", str(tmp_path / "db.sqlite"), "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout.readline().startswith("0 of 3 pairs labelled")
        url = re.search(r"http://\S+", proc.stdout.readline())[0]
        with urllib.request.urlopen(url + "api/state") as r:
            assert json.load(r)["pair"]["prompt"] == PROMPTS[0]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped: 0 of 3 pairs labelled" in out


def test_videos_are_served_with_ranges(tmp_path, pairs_file):
    server = _serve(pairs_file, tmp_path / "labels.sqlite")
    pair = server.pairs[0]
    data = Path(pair.video_b).read_bytes()
    try:
        url = f"{server.url}video/{pair.id}/b"
        with urllib.request.urlopen(url) as r:
            assert r.status == 200 and r.read() == data
            assert r.headers["Accept-Ranges"] == "bytes"
        for spec, lo, hi in [
            ("10-19", 10, 19),
            ("100-", 100, len(data) - 1),
            ("-7", len(data) - 7, len(data) - 1),
        ]:
            request = urllib.request.Request(url, headers={"Range": f"bytes={spec}"})
            with urllib.request.urlopen(request) as r:
                assert r.status == 206 and r.read() == data[lo : hi + 1]
                assert r.headers["Content-Range"] == f"bytes {lo}-{hi}/{len(data)}"
        request = urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-"})
        with pytest.raises(urllib.error.HTTPError, match="416"):
            urllib.request.urlopen(request)
        with pytest.raises(urllib.error.HTTPError, match="404"):  # only the pairs' files
            urllib.request.urlopen(f"{server.url}video/..%2Fpairs.jsonl/a")
        request = urllib.request.Request(
            f"{server.url}api/choice", data=json.dumps({"pair_id": pair.id, "choice": "c"}).encode()
        )
        with pytest.raises(urllib.error.HTTPError, match="400"):
            urllib.request.urlopen(request)
    finally:
        _close(server)


def test_store_keeps_one_row_per_pair_and_annotator(tmp_path, pairs_file):
    pairs = read_pairs(pairs_file)
    store = LabelStore(tmp_path / "labels.sqlite")
    store.add_pairs(pairs)
    store.record(pairs[0].id, "x", "a")
    store.record(pairs[1].id, "x", "b")
    store.record(pairs[0].id, "y", "tie")
    store.record(pairs[0].id, "y", "b")  # a second choice replaces the first
    assert store.undo("x", among={pairs[0].id}) == pairs[0].id  # only pairs on the page
    assert [(r[0], r[1], r[2]) for r in store.choices()] == [
        (pairs[1].id, "x", "b"),
        (pairs[0].id, "y", "b"),
    ]
    assert [(x.metadata["annotator"], x.prompt) for x in store.labels()] == [
        ("y", PROMPTS[0]),
        ("x", PROMPTS[1]),
    ]
    assert store.undo("x") == pairs[1].id and store.undo("x") is None
    store.close()
    # ids come from the content: reordering the file keeps every choice on its pair
    reordered = tmp_path / "pairs.jsonl"
    lines = pairs_file.read_text().splitlines()
    rows = [json.loads(line) for line in reversed(lines)]
    rows = [r | {k: str(pairs_file.parent / r[k]) for k in ("video_a", "video_b")} for r in rows]
    reordered.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p.id for p in read_pairs(reordered)] != [p.id for p in reversed(pairs)]  # paths differ
    reordered.write_text("".join(line + "\n" for line in reversed(lines)))
    (tmp_path / "videos").symlink_to(pairs_file.parent / "videos")
    assert [p.id for p in read_pairs(reordered)] == [p.id for p in reversed(pairs)]


def test_auto_labels_with_the_oracle(tmp_path, pairs_file, capsys):
    out = tmp_path / "oracle.jsonl"
    assert label("auto", pairs_file, "-o", out) == 0
    labels = read_labels(out)
    assert [x.choice for x in labels] == EXPECTED
    assert all(x.source == "oracle" for x in labels)
    assert labels[1].metadata["seed"] == 7 and labels[1].metadata["index"] == 1
    assert "labelled 3 of 3 pairs with the oracle" in capsys.readouterr().out


def test_auto_skips_a_prompt_outside_the_world(tmp_path, pairs_file, capsys):
    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    rows[0]["prompt"] = "a purple hexagon"
    rows = [r | {k: str(pairs_file.parent / r[k]) for k in ("video_a", "video_b")} for r in rows]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert label("auto", pairs, "-o", tmp_path / "out.jsonl") == 0
    assert "skipped pair 1" in capsys.readouterr().out
    assert [x.choice for x in read_labels(tmp_path / "out.jsonl")] == EXPECTED[1:]


def test_auto_labels_with_a_retrieval_model(tmp_path, pairs_file, capsys):
    import torch

    from mugv.retrieval import TWBert, tiny

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    TWBert(tiny()).save_pretrained(tmp_path / "twbert")
    out = tmp_path / "retrieval.jsonl"
    assert (
        label(
            "auto", pairs_file, "-o", out, "--by", "retrieval", "--retrieval", tmp_path / "twbert"
        )
        == 0
    )
    labels = read_labels(out)
    assert len(labels) == 3 and all(x.source == "scorer" for x in labels)
    for x in labels:  # an untrained model: only the plumbing is checked, choice follows scores
        a, b = x.metadata["score_a"], x.metadata["score_b"]
        assert x.choice == ("a" if a > b else "b" if b > a else "tie")
        assert x.metadata["scorer"] == "tw-bert vtm"
    assert label("auto", pairs_file, "-o", out, "--by", "retrieval") == 2
    assert "needs --retrieval DIR" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{oops"], "pairs.jsonl:1: not JSON"),
        (['{"prompt": "p", "video_a": "V/good0.mp4"}'], 'pairs.jsonl:1: "video_b" must be'),
        (['{"prompt": "p", "video_a": "x.mp4", "video_b": "x.mp4", "vid": 1}'], "unknown field"),
        (
            ["", '{"prompt": "p", "video_a": "V/good0.mp4", "video_b": "V/nope.mp4"}'],
            'pairs.jsonl:2: "video_b" .*nope.mp4: no such video file',
        ),
        (
            ['{"id": "x", "prompt": "p", "video_a": "V/good0.mp4", "video_b": "V/bad0.mp4"}'] * 2,
            "pairs.jsonl:2: pair 'x' repeats line 1",
        ),
        ([], "holds no pair"),
    ],
)
def test_bad_pairs_files_are_one_line_errors(tmp_path, pairs_file, capsys, lines, message):
    path = tmp_path / "pairs.jsonl"
    videos = str(pairs_file.parent / "videos")
    path.write_text("".join(line.replace("V/", videos + "/") + "\n" for line in lines))
    for action in (["serve", path, "--db", tmp_path / "db"], ["auto", path, "-o", tmp_path / "o"]):
        assert label(*action) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mugv label: error:") and len(err.splitlines()) == 1
        assert re.search(message, err), err


def test_port_in_use_and_other_errors(tmp_path, pairs_file, capsys):
    server = _serve(pairs_file, tmp_path / "labels.sqlite")
    try:
        port = server.httpd.server_port
        assert label("serve", pairs_file, "--db", tmp_path / "other.sqlite", "--port", port) == 2
        assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
    finally:
        _close(server)
    assert label("export", "--db", tmp_path / "missing.sqlite", "-o", tmp_path / "o.jsonl") == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_text("not a database" * 100)
    assert label("export", "--db", tmp_path / "junk.sqlite", "-o", tmp_path / "o.jsonl") == 2
    assert "not a labels database" in capsys.readouterr().err
    with pytest.raises(AppError, match="choice must be one of"):
        LabelStore(tmp_path / "labels.sqlite").record("x", "tester", "A")


def test_every_option_is_documented():
    parser = build_parser(("label",))
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    label_parser = commands.choices["label"]
    (actions,) = [a for a in label_parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(actions.choices) == {"serve", "export", "auto"}
    for name, sub in actions.choices.items():
        options = [a for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        assert options, name
        for option in options:
            assert option.help and len(option.help) > 10, (name, option.dest)
        assert "--annotator" in sub.format_help() or name == "auto"

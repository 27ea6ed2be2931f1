"""The curation pipeline end to end on a corpus with known answers: accuracy, nothing lost,
resume after kill -9, and the Ray executor giving the same manifest."""

import os
import signal
import subprocess
import sys
import time

import pytest

from mugv.data.curation import (
    CurationConfig,
    LocalExecutor,
    read_manifest,
    run_curation,
    write_report,
)
from mugv.data.curation.synthetic import evaluate_curation, make_corpus
from mugv.data.shards import read_shard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return make_corpus(root, num_videos=15, seed=7, height=64, width=96)


@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("curated")
    return run_curation([item.path for item in corpus], out, CurationConfig()), out


def test_every_input_accounted_for_and_filters_work(corpus, curated):
    result, _ = curated
    rows = read_manifest(result.manifest)
    scores = evaluate_curation(corpus, rows)
    assert scores["unaccounted"] == []
    assert scores["cuts"]["f1"] >= 0.95, scores["cuts"]
    for name in ("blur", "still", "overlay", "broken"):
        assert scores["filters"][name]["recall"] == 1.0, (name, scores["filters"])
        assert scores["filters"][name]["precision"] >= 0.8, (name, scores["filters"])
    assert scores["filters"]["dedup"]["tp"] > 0, scores["filters"]
    statuses = {row["status"] for row in rows}
    assert statuses <= {"kept", "filtered", "failed"}
    for row in rows:
        if row["status"] != "kept":
            assert row["stage"] and row["reason"], row


def test_shards_hold_exactly_the_kept_clips(curated):
    result, _ = curated
    rows = read_manifest(result.manifest)
    kept = {r["key"] for r in rows if r["status"] == "kept"}
    stored = {}
    for shard in result.shards:
        for sample in read_shard(shard):
            stored[sample.key] = sample
    assert set(stored) == kept
    for row in rows:
        if row["status"] == "kept":
            sample = stored[row["key"]]
            assert sample.clip.num_frames == row["end_frame"] - row["start_frame"]
            assert sample.clip.metadata["scores"]["sharpness"] == pytest.approx(
                row["scores"]["sharpness"]
            )


def test_summary_and_report(curated):
    result, out = curated
    summary = result.summary()
    assert summary["inputs"] == 15 and summary["inputs_failed"] == 3
    assert summary["kept"] + sum(summary["filtered"].values()) + summary["clips_failed"] >= 1
    page = write_report(result, out / "report.html").read_text()
    assert "data:image/jpeg;base64," in page and "filtered: blur" in page


def test_rerun_is_a_no_op_with_the_same_manifest(corpus, curated, tmp_path):
    result, out = curated
    before = result.manifest.read_text()
    again = run_curation([item.path for item in corpus], out, CurationConfig())
    assert again.manifest.read_text() == before


_KILLABLE = """
import sys
from mugv.data.curation import CurationConfig, run_curation
run_curation(sys.argv[2:], sys.argv[1], CurationConfig())
"""


def test_kill_9_then_rerun_gives_the_same_manifest(corpus, curated, tmp_path):
    result, _ = curated
    inputs = [item.path for item in corpus]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(out), *inputs])
    inputs_dir = out / "work" / "inputs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if inputs_dir.exists() and len(list(inputs_dir.glob("*.json"))) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "manifest.jsonl").exists()
    resumed = run_curation(inputs, out, CurationConfig())
    assert resumed.manifest.read_text() == result.manifest.read_text()


def test_process_pool_executor_gives_the_same_manifest(corpus, curated, tmp_path):
    result, _ = curated
    inputs = [item.path for item in corpus]
    pooled = run_curation(inputs, tmp_path, CurationConfig(), executor=LocalExecutor(workers=2))
    assert pooled.manifest.read_text() == result.manifest.read_text()


def test_ray_executor_gives_the_same_manifest(corpus, curated, tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra mugv-data[ray]")
    from mugv.data.curation import RayExecutor

    result, _ = curated
    inputs = [item.path for item in corpus]
    ray_run = run_curation(inputs, tmp_path, CurationConfig(), executor=RayExecutor(num_cpus=2))
    assert ray_run.manifest.read_text() == result.manifest.read_text()

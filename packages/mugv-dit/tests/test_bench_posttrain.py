"""The preference benchmark's pair selection and paired gains, and a tiny end-to-end run of
the script: the second run reads the first run's generated videos from `--pair-cache`."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_posttrain import paired_gain, preference_pairs  # noqa: E402


def test_pairs_best_against_worst_or_every_ordered_pair():
    # 2 prompts x K = 3 videos; video j of prompt i is number j * 2 + i
    score = [0.5, 1.0, 0.0, 1.0, 0.5, 1.0]  # prompt 0: 0.5, 0.0, 0.5; prompt 1: all 1.0
    assert preference_pairs(score, 2, 3, "best-worst") == ([0], [2])  # first of equals wins
    best, worst = preference_pairs(score, 2, 3, "all")
    assert sorted(zip(best, worst)) == [(0, 2), (4, 2)]  # the tie 0 vs 4 gives no pair


def test_paired_gains_of_attributes_and_colour_shape():
    before = {"per_video": [0.5, 0.25, 1.0], "per_video_cs": [0.0, 1.0, 0.0]}
    after = {"per_video": [0.75, 0.25, 1.0], "per_video_cs": [1.0, 1.0, 1.0]}
    out = paired_gain(before, after)
    # attribute differences 0.25, 0, 0: mean 1/12, sd 0.25 / sqrt(3), se = sd / sqrt(3)
    assert math.isclose(out["gain"], 0.25 / 3)
    assert math.isclose(out["gain_se"], 0.25 / 3)
    # colour+shape differences 1, 0, 1: mean 2/3, sd 1 / sqrt(3)
    assert math.isclose(out["cs_gain"], 2 / 3)
    assert math.isclose(out["cs_gain_se"], 1 / 3)


def test_script_runs_and_reuses_its_pair_videos(tmp_path):
    common = [
        sys.executable,
        str(BENCH / "bench_posttrain.py"),
        "--train-clips", "16", "--sft-steps", "4", "--pair-prompts", "6", "--test-clips", "4",
        "--dpo-steps", "2", "--sample-steps", "2", "--hidden", "48", "--heads", "2",
        "--eval-repeats", "1", "--seeds", "0", "--pair-cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    runs = []
    for extra in (
        ["--pairing", "all"],
        ["--sft-weight", "0", "--unlikelihood-weight", "0", "--dpo-guidance", "2"],
    ):
        out = tmp_path / f"run{len(runs)}.json"
        proc = subprocess.run(
            [*common, *extra, "--out", str(out)], env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(out.read_text()))
    assert (tmp_path / "cache" / "pairs-seed0.pt").is_file()
    first, second = (r["per_seed"][0] for r in runs)
    assert first["labels"]["sft_pair_score"] == second["labels"]["sft_pair_score"]
    # every prompt with a pair gives one best-worst pair and at least that many "all" pairs
    with_pair = 6 - second["labels"]["prompts_without_pair"]
    assert second["labels"]["pairs"] == with_pair <= first["labels"]["pairs"]
    for row in (first, second):
        for variant in ("lora", "full"):
            assert row[variant]["steps"] == 2
            assert 0.0 <= row[variant]["attributes"] <= 1.0
            assert -1.0 <= row[variant]["cs_gain"] <= 1.0
    assert second["before"]["per_video"] == first["before"]["per_video"]  # same SFT and noise

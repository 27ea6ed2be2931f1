"""Resume is exact: runs killed (SIGKILL, also mid-save) and restarted match an unbroken run."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from mugv.infra import complete_checkpoints

SCRIPT = Path(__file__).with_name("_resume_run.py")


def _launch(tmp: Path, name: str, env_extra: dict[str, str], *args: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(var, None)
    cmd = [sys.executable, str(SCRIPT), "--ckpt", str(tmp / name / "ckpt")]
    cmd += ["--log", str(tmp / name / "log.jsonl"), "--export", str(tmp / name / "export")]
    proc = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, -9):
        raise AssertionError(f"run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def _losses(path: Path) -> list[tuple[int, str]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, path.read_text().splitlines())]


def test_sigkill_and_sigterm_resume_bitwise(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "broken").mkdir()
    assert _launch(tmp_path, "full", {}) == 0
    reference = dict(_losses(tmp_path / "full" / "log.jsonl"))
    assert sorted(reference) == list(range(1, 21))

    # Checkpoints every 4 steps (async writes); kill points drawn at random (seeded) from
    # the steps between checkpoints, plus one kill inside the save of checkpoint 12.
    rng = random.Random(0)
    first, last = rng.choice([5, 6, 7]), rng.choice([17, 18, 19])
    faults = [
        ({"MUGV_TEST_KILL_AT": str(first)}, -9),
        ({"MUGV_TEST_KILL_IN_SAVE": "12"}, -9),
        ({"MUGV_TEST_TERM_AT": "14"}, 0),
        ({"MUGV_TEST_KILL_AT": str(last)}, -9),
        ({}, 0),
    ]
    ckpt = tmp_path / "broken" / "ckpt"
    for env, code in faults:
        assert _launch(tmp_path, "broken", env, "--async-save") == code
        if "MUGV_TEST_KILL_IN_SAVE" in env:  # the half-written one is never taken as complete
            assert (ckpt / "step_00000012.partial").is_dir()
            assert [s for s, _ in complete_checkpoints(ckpt)][-1] == 8
        if "MUGV_TEST_TERM_AT" in env:  # graceful stop saved the step it finished
            assert [s for s, _ in complete_checkpoints(ckpt)][-1] == 14

    broken = _losses(tmp_path / "broken" / "log.jsonl")
    assert len(broken) > 20  # steps after each checkpoint were redone
    for step, loss in broken:  # every (re)computed step equals the unbroken run bitwise
        assert loss == reference[step], f"step {step} differs after resume"
    assert {s for s, _ in broken} == set(reference)
    full = load_file(tmp_path / "full" / "export" / "model.safetensors")
    resumed = load_file(tmp_path / "broken" / "export" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert [s for s, _ in complete_checkpoints(ckpt)] == [14, 16, 20]  # keep_last=3

"""infra/: every launch recipe parses, launches the command it means, and its config holds.

Each recipe's config goes through the app's own config loader and validation, and its
parallel layout through `ParallelConfig` at the world size the recipe launches (nodes x GPUs
per node) with the model's heads and depth, so a recipe cannot rot silently.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from mugv.apps._config import AppError, load_config
from mugv.apps.cli import build_parser

INFRA = Path(__file__).resolve().parents[3] / "infra"
REPO = INFRA.parent
SCRIPTS = sorted(
    [*INFRA.glob("torchrun/*.sh"), *INFRA.glob("slurm/*.sh"), *INFRA.glob("slurm/*.sbatch")]
)
RECIPES = [p for p in SCRIPTS if p.name != "launch.sh"]
APP_MODULES = {"train-dit": "train_dit", "train-vae": "train_vae", "encode": "encode"}


def _one(pattern: str, text: str, path: Path) -> str:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    assert len(found) == 1, f"{path}: expected one match of {pattern!r}, got {found}"
    return found[0]


def recipe(path: Path) -> dict:
    """APP, the default config, the --set overrides and the world size a recipe launches."""
    text = path.read_text()
    gpus = int(_one(r"^GPUS_PER_NODE=(\d+)$", text, path))
    if path.suffix == ".sbatch":
        nodes = int(_one(r"^#SBATCH --nodes=(\d+)$", text, path))
        assert int(_one(r"^#SBATCH --gpus-per-node=(\d+)$", text, path)) == gpus
    else:
        nodes = int(_one(r"^NNODES=(\d+)$", text, path))
    args = shlex.split(_one(r"^ARGS=\((.*)\)$", text, path))
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    return {
        "app": _one(r"^APP=(\S+)$", text, path),
        "config": REPO / _one(r"^CONFIG=\$\{CONFIG:-(\S+)\}$", text, path),
        "sets": sets,
        "world": nodes * gpus,
    }


def test_infra_has_recipes_for_every_size():
    names = {p.name for p in RECIPES}
    for size in ("1b", "4b", "10b", "18b"):
        assert {f"train-dit-{size}.sh", f"train-dit-{size}.sbatch"} <= names
    used = {recipe(p)["config"].name for p in RECIPES}
    assert used == {p.name for p in INFRA.glob("configs/*")}, "a config no recipe launches"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_is_valid_bash(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def validate(spec: dict, tmp_path: Path) -> None:
    """The recipe's config through the app's validation at the recipe's world size."""
    from mugv.apps.encode import OPTIONS
    from mugv.apps.train_dit import load_plan
    from mugv.apps.train_vae import load_settings

    if spec["app"] == "train-dit":
        plan = load_plan(load_config(spec["config"], spec["sets"]))
        plan.check_layout(spec["world"])
        assert plan.dit_config().depth == 56
    elif spec["app"] == "train-vae":
        # The data path is a placeholder for the cluster's shards: give it a real folder.
        sets = [*spec["sets"], f"data.shards={tmp_path}"]
        settings = load_settings(load_config(spec["config"], sets), tmp_path)
        assert settings.trainer_config.steps > 0
    else:
        config = load_config(spec["config"], spec["sets"])
        assert set(config) == {"encode"} and set(config["encode"]) <= set(OPTIONS)


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_config_is_valid_at_its_world_size(script, tmp_path):
    validate(recipe(script), tmp_path)


def test_validation_catches_a_rotten_recipe(tmp_path):
    spec = recipe(INFRA / "slurm" / "train-dit-10b.sbatch")
    with pytest.raises(AppError, match="world size 10 is not a multiple"):
        validate({**spec, "world": 10}, tmp_path)
    with pytest.raises(AppError, match=r"tensor=5 does not divide num_heads=48"):
        validate({**spec, "sets": ["parallel.tensor=5"], "world": 20}, tmp_path)
    with pytest.raises(AppError, match=r"stages\[1\].frames=50"):
        validate(
            {**spec, "sets": ["stages=[{name: a, steps: 1}, {name: b, steps: 1, frames: 50}]"]},
            tmp_path,
        )


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


@pytest.mark.parametrize("script", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_launches_a_command_the_app_parses(script, tmp_path):
    """Runs the recipe with torchrun/srun/scontrol stubs and parses what torchrun would run."""
    _stub(tmp_path, "torchrun", f'printf "%s\\n" "$@" > {tmp_path}/argv')
    _stub(tmp_path, "srun", 'shift; exec "$@"')  # drop --kill-on-bad-exit=1
    _stub(tmp_path, "scontrol", "echo node001; echo node002")
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(REPO),
        "SLURM_JOB_NODELIST": "node[001-002]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_ID": "42",
    }
    run = subprocess.run(
        ["bash", str(script), "--set", "train.log_every=5"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    argv = (tmp_path / "argv").read_text().splitlines()
    spec = recipe(script)
    gpus = argv[argv.index("--nproc-per-node") + 1]
    assert int(gpus) * (2 if script.suffix == ".sbatch" else 1) <= spec["world"]
    assert "--standalone" in argv if script.suffix == ".sh" else "node001:29500" in argv
    app_argv = argv[argv.index("mugv.apps.cli") + 1 :]
    assert app_argv[0] == spec["app"] and app_argv[-2:] == ["--set", "train.log_every=5"]
    args = build_parser((APP_MODULES[spec["app"]],)).parse_args(app_argv)
    assert args.set[-1] == "train.log_every=5"
    assert str(spec["config"]).endswith(args.config)

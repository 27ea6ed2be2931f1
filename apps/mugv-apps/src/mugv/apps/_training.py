"""Plumbing shared by the training apps: config sections to typed configs, process groups, logs.

A section of a config file maps onto one package dataclass (``train:`` onto
`mugv.infra.TrainerConfig`, ``flow:`` onto `mugv.dit.FlowConfig`, ...). Unknown fields and
values the dataclass rejects become one-line `AppError`s naming ``section.field``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mugv.apps._config import AppError

T = TypeVar("T")

STOPPED = 3  # exit status of a run stopped by a signal: rerun the same command to resume


def section(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``config[name]`` as a dict (empty when absent); anything but a mapping is an error."""
    value = config.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AppError(f"config {name}: must be a mapping of fields, got {value!r}")
    return dict(value)


def check_fields(values: Mapping[str, Any], known: set[str] | list[str], where: str) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise AppError(
            f"config {where}.{unknown[0]}: unknown field; use one of {', '.join(sorted(known))}"
        )


def build(cls: type[T], values: Mapping[str, Any], where: str) -> T:
    """``cls(**values)`` for a (frozen) dataclass; errors name ``where.field`` and the fix."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_fields(values, set(fields), where)
    kwargs = {}
    for name, value in values.items():
        default = fields[name].default
        if isinstance(value, list) and isinstance(default, tuple):
            value = tuple(value)  # YAML/TOML lists for tuple fields (betas, ...)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except AppError:
        raise
    except Exception as exc:  # the dataclass's own validation: its message names the fix
        raise AppError(f"config {where}: {exc}") from exc


def out_folder(args_out: str | None, config: Mapping[str, Any]) -> Path:
    out = args_out or config.get("out")
    if not out:
        raise AppError("no output folder: pass -o/--out DIR or set `out: DIR` in the config")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AppError(f"--out {out} is a file; give a folder")
    return out


@contextlib.contextmanager
def distributed(parallel: Any, seed: int) -> Iterator[Any]:
    """Process groups from torchrun/Slurm variables (a world of one without them), seeded."""
    from mugv.infra import destroy_distributed, init_distributed, manual_seed

    info = init_distributed(parallel)
    try:
        manual_seed(seed)
        yield info
    finally:
        destroy_distributed()


def setup_logging(is_main: bool) -> None:
    """Progress lines of `mugv.*` on rank 0; other ranks only warn."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mugv").setLevel(logging.INFO if is_main else logging.WARNING)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def checkpoint_step(checkpoint_dir: str | Path) -> int:
    """The optimizer step of the newest complete checkpoint under `checkpoint_dir` (0: none).

    A `Trainer.fit` that a signal stopped returns early after saving: a training app compares
    this with its steps to tell a finished run from a stopped one.
    """
    import json

    from mugv.infra import latest_checkpoint

    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        return 0
    return int(json.loads((Path(path) / "meta.json").read_text())["scheduler"]["step"])


def save_resolved(path: Path, config: Mapping[str, Any]) -> None:
    """The config as run (file + overrides), for the record."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))

"""The training curriculum of `mugv train-dit`: stages in one config file, run in order.

MUG-V pre-trains with growing resolution and duration, then anneals on curated data
(SPEC "MUG-V training"). Here each stage names its steps, learning rate, pixel frames,
resolution (its latent shards, or the world's render size), task mix and batch size; the last
stage(s) may keep only the clips a curation manifest selects (annealed SFT). Stage ``i`` lives
in ``OUT/stages/<i>-<name>/``: ``checkpoints/`` while it trains, ``model/`` (weights the next
stage starts from), ``ema/`` (EMA weights, for sampling) and ``done.json`` when finished.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mugv.apps._config import AppError
from mugv.apps._training import check_fields

STAGE_FIELDS = {
    "name",
    "steps",
    "lr",
    "frames",
    "height",
    "width",
    "batch_size",
    "flow",
    "train",
    "data",
    "filter",
}


@dataclass(frozen=True, kw_only=True)
class ManifestFilter:
    """Keeps the samples whose key a curation manifest (``manifest.jsonl``) selects.

    A row is selected when its ``status`` equals ``status`` (None: any) and each of its
    ``scores`` lies in ``[min[name], max[name]]``; a row without a named score is dropped.
    """

    manifest: str
    status: str | None = "kept"
    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)

    def keys(self) -> set[str]:
        path = Path(self.manifest)
        if not path.is_file():
            raise AppError(f"filter.manifest {path}: no such manifest.jsonl")
        keys = set()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, status, scores = row["key"], row.get("status"), row.get("scores") or {}
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise AppError(f"{path}:{n}: not a curation manifest row ({exc})") from exc
            if self.status is not None and status != self.status:
                continue
            low = all(name in scores and scores[name] >= v for name, v in self.min.items())
            high = all(name in scores and scores[name] <= v for name, v in self.max.items())
            if low and high:
                keys.add(key)
        return keys


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One curriculum stage; None fields take the run's defaults or the data's sizes."""

    index: int
    name: str
    steps: int
    lr: float | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    batch_size: int | None = None
    flow: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    filter: ManifestFilter | None = None

    @property
    def slug(self) -> str:
        return f"{self.index}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.name)}"

    def folder(self, out: Path) -> Path:
        return out / "stages" / self.slug

    def done(self, out: Path) -> bool:
        return (self.folder(out) / "done.json").is_file()


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise AppError(f"config {where}={value!r}: use a positive integer")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AppError(f"config {where}: must be a mapping, got {value!r}")
    return dict(value)


def parse_filter(value: Any, where: str) -> ManifestFilter | None:
    if value is None:
        return None
    values = _mapping(value, where)
    check_fields(values, {"manifest", "status", "min", "max"}, where)
    if not values.get("manifest"):
        raise AppError(f"config {where}.manifest: give the curation manifest.jsonl to filter by")
    for bound in ("min", "max"):
        table = _mapping(values.get(bound), f"{where}.{bound}")
        for name, v in table.items():
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise AppError(f"config {where}.{bound}.{name}={v!r}: use a number")
        values[bound] = table
    return ManifestFilter(**values)


def parse_stages(config: Mapping[str, Any], temporal_stride: int = 8) -> list[Stage]:
    """The ``stages:`` list, validated; errors name ``stages[i].field`` and the fix."""
    raw = config.get("stages")
    if not isinstance(raw, list) or not raw:
        raise AppError(
            "config stages: give a non-empty list of stages, e.g. "
            "[{name: images, frames: 1, steps: 1000}, {name: clips, steps: 5000}]"
        )
    stages, names = [], set()
    for i, item in enumerate(raw):
        where = f"stages[{i}]"
        values = _mapping(item, where)
        check_fields(values, STAGE_FIELDS, where)
        name = values.get("name")
        if not isinstance(name, str) or not name.strip():
            raise AppError(f"config {where}.name: give each stage a name, e.g. 'images-256'")
        if name in names:
            raise AppError(f"config {where}.name={name!r}: used twice; stage names must differ")
        names.add(name)
        if "steps" not in values:
            raise AppError(f"config {where}.steps: say how many optimizer steps the stage runs")
        _positive_int(values["steps"], f"{where}.steps")
        for key in ("frames", "height", "width", "batch_size"):
            if values.get(key) is not None:
                _positive_int(values[key], f"{where}.{key}")
        frames = values.get("frames")
        if frames is not None and (frames - 1) % temporal_stride:
            raise AppError(
                f"config {where}.frames={frames}: use 1 + {temporal_stride}k pixel frames "
                f"(e.g. 1 for images, {1 + 2 * temporal_stride} for clips)"
            )
        lr = values.get("lr")
        if lr is not None and (not isinstance(lr, int | float) or lr <= 0):
            raise AppError(f"config {where}.lr={lr!r}: use a positive learning rate")
        train = _mapping(values.get("train"), f"{where}.train")
        for reserved in ("steps", "checkpoint_dir"):
            if reserved in train:
                raise AppError(
                    f"config {where}.train.{reserved}: set by the curriculum; "
                    + ("use stages[i].steps" if reserved == "steps" else "remove it")
                )
        stages.append(
            Stage(
                index=i,
                name=name,
                steps=values["steps"],
                lr=lr,
                frames=frames,
                height=values.get("height"),
                width=values.get("width"),
                batch_size=values.get("batch_size"),
                flow=_mapping(values.get("flow"), f"{where}.flow"),
                train=train,
                data=_mapping(values.get("data"), f"{where}.data"),
                filter=parse_filter(values.get("filter"), f"{where}.filter"),
            )
        )
    return stages


def mark_done(stage: Stage, out: Path, summary: dict[str, Any]) -> None:
    path = stage.folder(out) / "done.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"stage": stage.name, **summary}, indent=1))
    tmp.replace(path)

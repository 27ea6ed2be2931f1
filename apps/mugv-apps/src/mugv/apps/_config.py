"""Config files for the apps: YAML or TOML, plus ``--set section.field=value`` overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml


class AppError(Exception):
    """A user-facing error of a `mugv` command: printed as one line, exit status 2."""


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Reads a ``.yaml``/``.yml``/``.toml`` file (or nothing) and applies the overrides.

    An override is ``dotted.key=value``; the value is parsed as YAML, so ``3``, ``0.5``,
    ``true`` and ``[1, 2]`` get their types.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AppError(f"config file {path} does not exist")
        text = path.read_text()
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(text)
            elif path.suffix in (".yaml", ".yml"):
                data = yaml.safe_load(text) or {}
            else:
                raise AppError(f"config file {path}: use a .yaml, .yml or .toml file")
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise AppError(f"config file {path} does not parse: {exc}") from exc
        if not isinstance(data, dict):
            raise AppError(f"config file {path} must hold a mapping of sections")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AppError(f"--set {item!r}: write it as section.field=value")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise AppError(f"--set {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(value)
    return data

"""Test fixtures shared by every package's tests (pytest finds this file above each tests/)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re

import pytest


def _mugv_requirements(dist: str, seen: set[str] | None = None) -> set[str]:
    """The mugv-* distributions `dist` declares, transitively, extras included."""
    seen = set() if seen is None else seen
    for req in importlib.metadata.requires(dist) or []:
        name = re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")
        if name.startswith("mugv-") and name not in seen:
            seen.add(name)
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                _mugv_requirements(name, seen)
    return seen


@pytest.fixture
def check_distribution():
    """Checks a distribution's public API, version and that no undeclared mugv-* is installed."""

    def check(dist: str, module_name: str) -> None:
        module = importlib.import_module(module_name)
        assert module.__version__ == importlib.metadata.version(dist)
        for name in module.__all__:
            assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, not defined"
        installed = {
            d.metadata["Name"].lower()
            for d in importlib.metadata.distributions()
            if d.metadata["Name"] and d.metadata["Name"].lower().startswith("mugv-")
        }
        undeclared = installed - _mugv_requirements(dist) - {dist}
        # `nox -s tests` installs every package into one env on purpose and says so.
        if os.environ.get("MUGV_ALL_PACKAGES") != "1":
            assert not undeclared, f"{dist} env holds undeclared mugv packages: {undeclared}"

    return check


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `nox -s gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

"""Every developer and CI entry point: `nox -l` lists them, `nox -t ci` is what CI runs.

Development envs pin the CPU build of torch through `constraints/dev.txt`; the packages
themselves only state ranges, so users bring their own torch.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints" / "dev.txt"))
PACKAGES = {
    "data": ROOT / "packages" / "mugv-data",
    "vae": ROOT / "packages" / "mugv-vae",
    "dit": ROOT / "packages" / "mugv-dit",
    "infra": ROOT / "packages" / "mugv-infra",
    "captioning": ROOT / "packages" / "mugv-captioning",
    "retrieval": ROOT / "packages" / "mugv-retrieval",
    "apps": ROOT / "apps" / "mugv-apps",
}
GPU_EXTRAS = {"te"}  # extras that only install on a CUDA machine
CPU_MARKERS = "not slow and not gpu"

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _pyproject(path: Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())


def _local_requirements(path: Path) -> list[str]:
    """Local install targets: the package with its CPU extras, plus the mugv deps it declares.

    A dependency gets only the extras its requirement names (`mugv-vae[train]`), so each env
    holds exactly what the package declares and an undeclared import fails.
    """
    targets: dict[Path, set[str]] = {}

    def visit(pkg: Path, extras: set[str]) -> None:
        if pkg in targets and extras <= targets[pkg]:
            return
        targets[pkg] = targets.get(pkg, set()) | extras
        project = _pyproject(pkg)["project"]
        reqs = list(project.get("dependencies", []))
        for extra in extras:
            reqs += project.get("optional-dependencies", {}).get(extra, [])
        for req in reqs:
            match = re.match(r"(mugv-[a-z]+)(?:\[([^\]]*)\])?", req)
            if match:
                dep = next(p for p in PACKAGES.values() if p.name == match[1])
                visit(dep, set(filter(None, (match[2] or "").split(","))))

    own = set(_pyproject(path)["project"].get("optional-dependencies", {})) - GPU_EXTRAS
    visit(path, own)
    return [f"{p}[{','.join(sorted(e))}]" if e else str(p) for p, e in targets.items()]


def _test_group(path: Path) -> list[str]:
    return _pyproject(path).get("dependency-groups", {}).get("test", [])


def _install_workspace(session: nox.Session) -> None:
    """Every package editable, with every CPU extra and test group: the development env."""
    session.install(*CONSTRAINTS, "pip>=24")
    editable = []
    tests = set()
    for path in PACKAGES.values():
        extras = sorted(
            set(_pyproject(path)["project"].get("optional-dependencies", {})) - GPU_EXTRAS
        )
        editable += ["-e", f"{path}[{','.join(extras)}]" if extras else str(path)]
        tests.update(_test_group(path))
    session.install(*CONSTRAINTS, *editable, *sorted(tests))


@nox.session(tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole CPU suite with every package installed editable into one env."""
    _install_workspace(session)
    session.env["MUGV_ALL_PACKAGES"] = "1"
    paths = [str(p / "tests") for p in PACKAGES.values()]
    session.run("pytest", *paths, "-m", CPU_MARKERS, *session.posargs)


def _package_session(name: str, path: Path) -> None:
    @nox.session(name=f"tests-{name}", tags=["ci", "isolated"])
    def package_tests(session: nox.Session) -> None:
        """One package installed alone (wheel build, declared deps only), then its tests."""
        session.install(*CONSTRAINTS, "pip>=24")
        session.install(*CONSTRAINTS, "--force-reinstall", "--no-deps", *_local_requirements(path))
        session.install(*CONSTRAINTS, *_local_requirements(path), *_test_group(path))
        session.run("pytest", str(path / "tests"), "-m", CPU_MARKERS, *session.posargs)

    package_tests.__doc__ = f"mugv-{name} alone in a fresh env, then its own tests."


for _name, _path in PACKAGES.items():
    _package_session(_name, _path)


@nox.session
def distributed(session: nox.Session) -> None:
    """Tests marked `distributed`: 2 CPU ranks over gloo."""
    _install_workspace(session)
    session.env["MUGV_ALL_PACKAGES"] = "1"
    paths = [str(p / "tests") for p in PACKAGES.values()]
    session.run("pytest", *paths, "-m", "distributed and not gpu", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """Tests marked `gpu` (needs CUDA; bring a CUDA torch: `nox -s gpu -- --no-constraints`)."""
    session.install("pip>=24")
    editable = []
    for path in PACKAGES.values():
        extras = sorted(set(_pyproject(path)["project"].get("optional-dependencies", {})))
        editable += ["-e", f"{path}[{','.join(extras)}]" if extras else str(path)]
    session.install(*editable, "pytest>=8")
    session.env["MUGV_ALL_PACKAGES"] = "1"
    paths = [str(p / "tests") for p in PACKAGES.values()]
    session.run("pytest", *paths, "-m", "gpu", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: each prints a table and writes JSON under bench-out/.

    `nox -s bench -- data dit` runs only those packages' benchmarks.
    """
    _install_workspace(session)
    chosen = session.posargs or list(PACKAGES)
    out = ROOT / "bench-out"
    out.mkdir(exist_ok=True)
    for name in chosen:
        for script in sorted((PACKAGES[name] / "benchmarks").glob("bench_*.py")):
            session.run("python", str(script), "--out", str(out / f"{name}-{script.stem}.json"))


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job: `mugv demo` end to end on the synthetic world."""
    _install_workspace(session)
    session.run("mugv", "demo", *session.posargs)

"""METEOR 1.5 through its Java jar (the metric has no faithful pure-Python port).

The jar and its paraphrase table ship inside the ``pycocoevalcap`` wheel, which the
``mugv-captioning[meteor]`` extra installs; ``MUGV_METEOR_JAR`` points at another copy (the
paraphrase table must sit in ``data/`` beside it). Java 11+ must be on ``PATH``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mugv.captioning._errors import MetricError
from mugv.captioning.metrics.scores import _check

_FIX = (
    "install the jar with `pip install 'mugv-captioning[meteor]'` (it ships in pycocoevalcap) or "
    "set MUGV_METEOR_JAR=/path/to/meteor-1.5.jar, and Java 11+ (e.g. `apt-get install "
    "openjdk-17-jre-headless`)"
)


def meteor_jar() -> Path:
    """Path of ``meteor-1.5.jar``: ``$MUGV_METEOR_JAR`` or the copy inside pycocoevalcap."""
    env = os.environ.get("MUGV_METEOR_JAR")
    if env:
        if not Path(env).is_file():
            raise MetricError(f"MUGV_METEOR_JAR={env} is not a file; {_FIX}")
        return Path(env)
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MetricError(f"METEOR needs the METEOR 1.5 jar, which was not found; {_FIX}")
    jar = Path(next(iter(spec.submodule_search_locations))) / "meteor" / "meteor-1.5.jar"
    if not jar.is_file():
        raise MetricError(f"pycocoevalcap is installed but {jar} is missing; {_FIX}")
    return jar


class Meteor:
    """A long-lived METEOR 1.5 process (``-l en -norm``); use as a context manager or close()."""

    def __init__(self, jar: str | Path | None = None) -> None:
        java = shutil.which("java")
        if java is None:
            raise MetricError(f"METEOR runs a Java jar but `java` is not on PATH; {_FIX}")
        jar = Path(jar) if jar is not None else meteor_jar()
        self._proc = subprocess.Popen(
            [
                java,
                "-XX:+UseSerialGC",
                "-jar",
                "-Xmx2G",
                jar.name,
                "-",
                "-",
                "-stdio",
                "-l",
                "en",
                "-norm",
            ],
            cwd=jar.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._lock = threading.Lock()

    def _ask(self, line: str) -> str:
        self._proc.stdin.write(f"{line}\n".encode())
        self._proc.stdin.flush()
        out = self._proc.stdout.readline().decode().strip()
        if not out:
            raise MetricError(
                f"the METEOR process stopped answering (exit {self._proc.poll()}); {_FIX}"
            )
        return out

    def compute_score(self, gts: Mapping, res: Mapping) -> tuple[float, np.ndarray]:
        """Corpus METEOR and per-item scores over tokenised captions (see ``scores.py``)."""
        _check(gts, res)
        with self._lock:
            stats = []
            for key in gts:
                hyp = res[key][0].replace("|||", "").replace("  ", " ")
                stats.append(self._ask(" ||| ".join(("SCORE", " ||| ".join(gts[key]), hyp))))
            self._proc.stdin.write(f"EVAL ||| {' ||| '.join(stats)}\n".encode())
            self._proc.stdin.flush()
            per_item = [float(self._proc.stdout.readline().strip()) for _ in stats]
            corpus = float(self._proc.stdout.readline().strip())
        return corpus, np.array(per_item)

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.stdin.close()
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Pairs to label and the SQLite store of choices behind `mugv label`.

A pairs file is JSON lines, one pair per line: ``{"prompt", "video_a", "video_b"}`` with an
optional ``"id"`` and ``"metadata"`` (a labels file of `mugv.data.preference` also serves:
its ``kind``, ``choice`` and ``source`` are ignored). Video paths are relative to the file's
folder when relative. A pair's id defaults to a hash of its prompt and the two paths as
written, so labels stay attached to their pair when the file is reordered or extended.

The store keeps the pairs and one row of choices per (pair, annotator), written and committed
at once (SQLite in WAL mode), so a killed server loses nothing and a restart resumes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mugv.apps._config import AppError

if TYPE_CHECKING:
    from mugv.data.preference import PreferencePair

CHOICES = ("a", "b", "tie", "skip")  # "skip" moves on without a label; export leaves it out
_KEYS = {"id", "prompt", "video_a", "video_b", "metadata", "kind", "choice", "source"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    video_a TEXT NOT NULL,
    video_b TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS choices (
    pair_id TEXT NOT NULL REFERENCES pairs(id),
    annotator TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'skip')),
    created_at REAL NOT NULL,
    PRIMARY KEY (pair_id, annotator)
);
"""


@dataclass(frozen=True)
class Pair:
    """One pair to label; `video_a`/`video_b` are paths usable from the current folder."""

    id: str
    prompt: str
    video_a: str
    video_b: str
    metadata: dict[str, Any] = field(default_factory=dict)


def read_pairs(path: str | Path, *, check_videos: bool = True) -> list[Pair]:
    """Parses a pairs file; any bad line, duplicate id or missing video raises `AppError`."""
    path = Path(path)
    if not path.is_file():
        raise AppError(f"pairs file {path}: no such file")
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise AppError(f"pairs file {path}: not UTF-8 text ({exc.reason})") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AppError(f"{where}: not JSON ({exc.msg}); write one object per line") from exc
        if not isinstance(row, dict):
            raise AppError(f'{where}: expected {{"prompt", "video_a", "video_b"}}; got {line!r}')
        if unknown := sorted(set(row) - _KEYS):
            raise AppError(f"{where}: unknown field(s) {unknown}; a pair has {sorted(_KEYS)}")
        for key in ("prompt", "video_a", "video_b"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise AppError(f'{where}: "{key}" must be a non-empty string')
        metadata = row.get("metadata", {})
        if not isinstance(metadata, dict):
            raise AppError(f'{where}: "metadata" must be an object')
        pair_id = row.get("id")
        if pair_id is None:
            key = "\0".join((row["prompt"], row["video_a"], row["video_b"]))
            pair_id = hashlib.sha1(key.encode()).hexdigest()[:16]
        elif not isinstance(pair_id, str) or not pair_id:
            raise AppError(f'{where}: "id" must be a non-empty string')
        if pair_id in seen:
            raise AppError(
                f"{where}: pair {pair_id!r} repeats line {seen[pair_id]}; give each pair once "
                f'(or a distinct "id")'
            )
        seen[pair_id] = n
        videos = []
        for key in ("video_a", "video_b"):
            video = path.absolute().parent / row[key]  # an absolute path stays as it is
            if check_videos and not video.is_file():
                raise AppError(f'{where}: "{key}" {video}: no such video file')
            videos.append(str(video))
        pairs.append(Pair(pair_id, row["prompt"], *videos, metadata=metadata))
    if not pairs:
        raise AppError(f"pairs file {path}: holds no pair")
    return pairs


class LabelStore:
    """The SQLite file of pairs and choices; safe to use from the server's threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise AppError(f"--db {self.path}: not a labels database ({exc})") from exc
        except OSError as exc:
            raise AppError(f"--db {self.path}: cannot create it ({exc.strerror})") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_pairs(self, pairs: list[Pair]) -> None:
        """Adds the pairs (updating ones already stored) in the order given."""
        with self._lock, self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO pairs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "position=excluded.position, prompt=excluded.prompt, video_a=excluded.video_a, "
                "video_b=excluded.video_b, metadata=excluded.metadata",
                [
                    (p.id, k, p.prompt, p.video_a, p.video_b, json.dumps(p.metadata))
                    for k, p in enumerate(pairs)
                ],
            )

    def record(self, pair_id: str, annotator: str, choice: str) -> None:
        """Stores (or replaces) the annotator's choice for the pair, committed at once."""
        if choice not in CHOICES:
            raise AppError(f"choice must be one of {list(CHOICES)}; got {choice!r}")
        with self._lock:
            if self._db.execute("SELECT 1 FROM pairs WHERE id=?", (pair_id,)).fetchone() is None:
                raise AppError(f"no pair with id {pair_id!r}")
            self._db.execute(
                "INSERT OR REPLACE INTO choices VALUES (?, ?, ?, ?)",
                (pair_id, annotator, choice, time.time()),
            )

    def undo(self, annotator: str, among: Collection[str] | None = None) -> str | None:
        """Removes the annotator's latest choice (of a pair in `among` when given).

        Returns the pair's id, None when there is no choice to undo.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT pair_id FROM choices WHERE annotator=? ORDER BY created_at DESC, rowid DESC",
                (annotator,),
            ).fetchall()
            pair_id = next((r[0] for r in rows if among is None or r[0] in among), None)
            if pair_id is not None:
                self._db.execute(
                    "DELETE FROM choices WHERE pair_id=? AND annotator=?", (pair_id, annotator)
                )
        return pair_id

    def pairs(self, ids: list[str] | None = None) -> list[Pair]:
        """Stored pairs in order (only `ids`, in that order, when given)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, prompt, video_a, video_b, metadata FROM pairs ORDER BY position, id"
            ).fetchall()
        found = {r[0]: Pair(*r[:4], metadata=json.loads(r[4])) for r in rows}
        return list(found.values()) if ids is None else [found[i] for i in ids if i in found]

    def choices(self, annotator: str | None = None) -> list[tuple[str, str, str, float]]:
        """(pair id, annotator, choice, unix time) rows, oldest first."""
        with self._lock:
            return self._db.execute(
                "SELECT pair_id, annotator, choice, created_at FROM choices "
                "WHERE ?1 IS NULL OR annotator=?1 ORDER BY created_at, rowid",
                (annotator,),
            ).fetchall()

    def labels(self, annotator: str | None = None) -> list[PreferencePair]:
        """Every choice but skips as a human `PreferencePair`, in pair order."""
        from mugv.data.preference import PreferencePair  # imports torch: only when exporting

        pairs = {p.id: (k, p) for k, p in enumerate(self.pairs())}
        rows = sorted(
            (r for r in self.choices(annotator) if r[2] != "skip"),
            key=lambda r: (pairs[r[0]][0], r[1]),
        )
        out = []
        for pair_id, who, choice, created in rows:
            pair = pairs[pair_id][1]
            when = datetime.datetime.fromtimestamp(created, datetime.UTC)
            out.append(
                PreferencePair(
                    prompt=pair.prompt,
                    video_a=pair.video_a,
                    video_b=pair.video_b,
                    choice=choice,
                    source="human",
                    metadata=pair.metadata
                    | {"pair_id": pair_id, "annotator": who, "labelled_at": when.isoformat()},
                )
            )
        return out

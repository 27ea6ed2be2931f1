"""What the curation pipeline records about every input and every clip.

Every input ends in exactly one state: ``failed`` (with the error), ``filtered`` (no usable
scene, with the reason) or ``ok``; every clip of an ``ok`` input ends ``kept``, ``filtered``
(with the stage and the reason) or ``failed`` (with the error).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ClipStatus = Literal["kept", "filtered", "failed"]
InputStatus = Literal["ok", "filtered", "failed"]


@dataclass
class ClipRecord:
    key: str
    source: str
    start_frame: int
    end_frame: int
    start: float  # seconds in the source
    end: float
    to_end: bool = False  # the clip runs to the end of the source
    status: ClipStatus = "kept"
    stage: str | None = None  # the stage that filtered or failed it
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    phash: str = ""
    caption: str | None = None
    entities: list[str] = field(default_factory=list)
    weight: float | None = None  # balanced-sampling weight from entity frequencies
    shard: str | None = None

    def mark(self, status: ClipStatus, stage: str, reason: str) -> None:
        self.status, self.stage, self.reason = status, stage, reason


@dataclass
class InputRecord:
    source: str
    input_id: str
    status: InputStatus = "ok"
    stage: str | None = None
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    clips: list[ClipRecord] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> InputRecord:
        data = json.loads(text)
        data["clips"] = [ClipRecord(**c) for c in data["clips"]]
        return cls(**data)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Writes a file so that a reader (or a rerun after a kill) sees all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

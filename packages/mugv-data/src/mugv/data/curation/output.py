"""The curation manifest: one JSON line per clip (and per input without clips)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mugv.data.curation.records import InputRecord, write_atomic


def manifest_rows(records: list[InputRecord]) -> list[dict]:
    """One row per clip, plus one per input that produced no clip, in a deterministic order."""
    rows = []
    for record in sorted(records, key=lambda r: r.source):
        if not record.clips:
            rows.append(
                {
                    "key": record.input_id,
                    "source": record.source,
                    "status": record.status,
                    "stage": record.stage,
                    "reason": record.reason,
                }
            )
        for clip in record.clips:
            rows.append(dataclasses.asdict(clip))
    return rows


def write_manifest(records: list[InputRecord], path: Path) -> Path:
    lines = [json.dumps(row, sort_keys=True) for row in manifest_rows(records)]
    write_atomic(path, "\n".join(lines) + "\n")
    return path

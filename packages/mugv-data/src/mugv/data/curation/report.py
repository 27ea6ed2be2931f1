"""A self-contained HTML report of a curation run: summary counts and sample thumbnails per
decision (kept, filtered by each stage, failed), embedded so the file works offline."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from mugv.data.curation.pipeline import CurationResult
from mugv.data.curation.records import write_atomic

_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}figure{display:inline-block;
margin:4px;width:160px;font-size:11px;vertical-align:top}img{width:160px}h2{margin-top:1.5em}"""


def write_report(result: CurationResult, path: str | Path, samples: int = 8) -> Path:
    """Writes the report; `samples` thumbnails at most per decision."""
    path = Path(path)
    work = result.manifest.parent / "work"
    summary = result.summary()
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in summary.items()
        if k != "filtered"
    )
    rows += "".join(
        f"<tr><th>filtered: {html.escape(stage)}</th><td>{n}</td></tr>"
        for stage, n in summary["filtered"].items()
    )
    groups: dict[str, list] = {}
    for record in result.inputs:
        for clip in record.clips:
            label = clip.status if clip.status != "filtered" else f"filtered: {clip.stage}"
            groups.setdefault(label, []).append(clip)
    sections = []
    for label in sorted(groups):
        figures = []
        for clip in groups[label][:samples]:
            thumb = work / "thumbs" / f"{clip.key}.jpg"
            img = (
                f'<img alt="{clip.key}" src="data:image/jpeg;base64,'
                f'{base64.b64encode(thumb.read_bytes()).decode()}">'
                if thumb.exists()
                else ""
            )
            note = html.escape(clip.reason or clip.caption or "")
            figures.append(
                f"<figure>{img}<figcaption>{html.escape(Path(clip.source).name)} "
                f"[{clip.start:.1f}-{clip.end:.1f}s] {note}</figcaption></figure>"
            )
        sections.append(f"<h2>{html.escape(label)} ({len(groups[label])})</h2>{''.join(figures)}")
    failed = [r for r in result.inputs if r.status != "ok"]
    if failed:
        items = "".join(
            f"<li>{html.escape(r.source)}: {html.escape(r.status)} "
            f"({html.escape(r.reason or '')})</li>"
            for r in failed
        )
        sections.append(f"<h2>inputs without clips ({len(failed)})</h2><ul>{items}</ul>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Curation report</title>"
        f"<style>{_STYLE}</style></head><body><h1>Curation report</h1>"
        f"<table>{rows}</table>{''.join(sections)}</body></html>"
    )
    write_atomic(path, page)
    return path


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

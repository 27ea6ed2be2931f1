"""The demo's HTML report: one self-contained page (no CDN, no scripts from elsewhere) with the
generated videos beside their prompts and scores, accuracy tables, loss curves drawn as inline
SVG, and stage timings. Videos are files next to the page, so it opens offline."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}
td.n{text-align:right}figure{display:inline-block;margin:6px;width:200px;vertical-align:top;
font-size:12px}video{width:200px;image-rendering:pixelated;background:#000}
.ok{color:#080}.bad{color:#b00}svg{background:#fafafa;border:1px solid #ddd;margin:4px}
"""


@dataclass
class GeneratedVideo:
    prompt: str
    video: str  # path relative to the report
    task: str  # "t2v" or "i2v"
    scores: dict[str, float] = field(default_factory=dict)
    held_out: bool = False


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.3f}</td>'
    if isinstance(value, (tuple, list)) and len(value) == 2:  # an interval (lo, hi)
        return f'<td class="n">{value[0]:.2f}-{value[1]:.2f}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(_cell(r.get(k, "")) for k in keys) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def loss_svg(
    name: str, points: Sequence[tuple[int, float]], width: int = 320, height: int = 180
) -> str:
    """A line plot of (step, loss) as inline SVG, log-scaled in loss when it spans a decade."""
    import math

    if len(points) < 2:
        return ""
    steps = [p[0] for p in points]
    values = [max(p[1], 1e-12) for p in points]
    log = max(values) / min(values) > 10
    ys = [math.log10(v) for v in values] if log else values
    x0, x1, y0, y1 = min(steps), max(steps), min(ys), max(ys)
    pad = 30
    sx = (width - 2 * pad) / max(x1 - x0, 1)
    sy = (height - 2 * pad) / max(y1 - y0, 1e-12)
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{pad + (s - x0) * sx:.1f},{height - pad - (y - y0) * sy:.1f}"
        for i, (s, y) in enumerate(zip(steps, ys))
    )
    label = f"{name}{' (log10)' if log else ''}: {values[0]:.3g} -> {values[-1]:.3g}"
    return (
        f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(label)}">'
        f'<text x="{pad}" y="18" font-size="12">{html.escape(label)}</text>'
        f'<path d="{path}" fill="none" stroke="#2060c0" stroke-width="1.5"/>'
        f'<text x="{pad}" y="{height - 8}" font-size="10">step {x0}</text>'
        f'<text x="{width - pad}" y="{height - 8}" font-size="10" text-anchor="end">{x1}</text>'
        "</svg>"
    )


def write_demo_report(
    path: str | Path,
    *,
    videos: Sequence[GeneratedVideo],
    accuracy: Sequence[Mapping[str, object]],
    curves: Mapping[str, Sequence[tuple[int, float]]],
    timings: Mapping[str, float],
    notes: Sequence[str] = (),
) -> Path:
    """Writes the report page; `accuracy` rows become the accuracy table as given."""
    path = Path(path)
    figures = []
    for v in videos:
        scores = " ".join(f"{k} {s:.2f}" for k, s in v.scores.items())
        tag = " (held-out)" if v.held_out else ""
        figures.append(
            f'<figure><video src="{html.escape(v.video)}" controls muted loop autoplay '
            f'playsinline preload="auto"></video><figcaption><b>{html.escape(v.task)}</b>{tag}: '
            f"{html.escape(v.prompt)}<br>{html.escape(scores)}</figcaption></figure>"
        )
    timing_rows = [{"stage": k, "seconds": float(s)} for k, s in timings.items()]
    timing_rows.append({"stage": "total", "seconds": float(sum(timings.values()))})
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MUG-V demo report</title>
<style>{_STYLE}</style></head><body>
<h1>MUG-V demo report</h1>
{"".join(f"<p>{html.escape(n)}</p>" for n in notes)}
<h2>Accuracy of generated videos (oracle)</h2>
<div id="accuracy">{_table(accuracy)}</div>
<h2>Generated videos</h2>
<div id="videos">{"".join(figures)}</div>
<h2>Training curves</h2>
<div id="curves">{"".join(loss_svg(k, v) for k, v in curves.items())}</div>
<h2>Timings</h2>
<div id="timings">{_table(timing_rows)}</div>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path

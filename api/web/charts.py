"""Charts drawn on the server as inline SVG, from the data itself: no script, no picture, no other host.

Each chart carries a <title> and a <desc> for screen readers, and the page shows its numbers in a table
beside it. Values are escaped; sizes are bounded (at most ``MAX_POINTS`` points a series).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["bar_chart", "line_chart"]

MAX_POINTS = 2000
COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 270, 56, 16, 16, 56


def _ticks(low: float, high: float, n: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    step = (high - low) / (n - 1)
    return [low + i * step for i in range(n)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _frame(title: str, desc: str, body: list[str], legend: Sequence[str]) -> str:
    items = "".join(
        f'<g transform="translate({PAD_L + i * 150},{H - 8})"><rect width="10" height="10" y="-9" fill="{COLOURS[i % 6]}"/>'
        f'<text x="14">{escape(name)}</text></g>'
        for i, name in enumerate(legend)
    )
    return (
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>{''.join(body)}{items}</svg>"
    )


def line_chart(
    title: str, series: Mapping[str, Sequence[Sequence[float]]], *, x_label: str = "", y_label: str = ""
) -> str:
    """Lines of (x, y) points, one per series, on shared axes."""
    clean = {
        name: [
            (float(p[0]), float(p[1]))
            for p in points[:MAX_POINTS]
            if len(p) >= 2 and all(math.isfinite(float(v)) for v in p[:2])
        ]
        for name, points in series.items()
    }
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return f'<p class="muted">{escape(title)}: no data</p>'
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return PAD_T + ph - (y - y0) / (y1 - y0) * ph

    body = [f'<rect class="plot" x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}"/>']
    for t in _ticks(y0, y1):
        body.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{sy(t):.1f}" y2="{sy(t):.1f}"/>')
        body.append(f'<text class="tick" x="{PAD_L - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        body.append(f'<text class="tick" x="{sx(t):.1f}" y="{PAD_T + ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    for i, (name, pts) in enumerate(clean.items()):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        colour = COLOURS[i % 6]
        body.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"><title>{escape(name)}</title></polyline>'
        )
        if len(pts) <= 24:
            body += [
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"><title>{escape(name)}: {_fmt(x)} → {_fmt(y)}</title></circle>'
                for x, y in pts
            ]
    if x_label:
        body.append(
            f'<text class="axis" x="{PAD_L + pw / 2}" y="{PAD_T + ph + 28}" text-anchor="middle">{escape(x_label)}</text>'
        )
    if y_label:
        body.append(
            f'<text class="axis" x="12" y="{PAD_T + ph / 2}" transform="rotate(-90 12 {PAD_T + ph / 2})" text-anchor="middle">{escape(y_label)}</text>'
        )
    desc = "; ".join(
        f"{name}: {len(pts)} points from {_fmt(pts[0][1])} to {_fmt(pts[-1][1])}" for name, pts in clean.items()
    )
    return _frame(title, desc, body, list(clean) if len(clean) > 1 else [])


def bar_chart(title: str, groups: Mapping[str, Mapping[str, float]], *, y_max: float | None = None) -> str:
    """Grouped bars: one group per metric (x), one bar per series (``groups[series][metric]``)."""
    series = {
        name: {k: float(v) for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        for name, values in groups.items()
    }
    series = {k: v for k, v in series.items() if v}
    metrics = sorted({m for values in series.values() for m in values})[:24]
    if not metrics:
        return f'<p class="muted">{escape(title)}: no scores</p>'
    top = y_max or max(1.0, max(v for values in series.values() for v in values.values()))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    slot = pw / len(metrics)
    bar = max(2.0, (slot - 12) / max(1, len(series)))
    body = [f'<rect class="plot" x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}"/>']
    for t in _ticks(0, top):
        y = PAD_T + ph - t / top * ph
        body.append(f'<line class="grid" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(f'<text class="tick" x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for m_i, metric in enumerate(metrics):
        x_slot = PAD_L + m_i * slot + 6
        for s_i, (name, values) in enumerate(series.items()):
            if metric not in values:
                continue
            h = max(0.0, min(values[metric], top)) / top * ph
            body.append(
                f'<rect x="{x_slot + s_i * bar:.1f}" y="{PAD_T + ph - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" '
                f'fill="{COLOURS[s_i % 6]}"><title>{escape(name)} · {escape(metric)}: {values[metric]:.3g}</title></rect>'
            )
        label = metric.replace("_", " ")
        body.append(
            f'<text class="tick" x="{x_slot + slot / 2 - 6:.1f}" y="{PAD_T + ph + 14}" text-anchor="middle">{escape(label[:18])}</text>'
        )
    desc = "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:.3g}" for k, v in values.items()) for name, values in series.items()
    )
    return _frame(title, desc, body, list(series))

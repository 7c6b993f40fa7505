"""Inline SVG for our self-contained pages: the servers are offline, so no script and no asset."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

HOUR_S = 3600
TICK_EVERY_H = 3
INK, MUTED, GRID = "#1d2330", "#5b6474", "#e5e7eb"
PASSED, FAILED = "#16a34a", "#f87171"


def seconds(value: float | None) -> str:
    """A duration for people: milliseconds below one second."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def sparkline(values: list[float], width: int = 160, height: int = 28) -> str:
    """An inline SVG polyline of recent values, scaled to the largest."""
    if len(values) < 2:
        return ""
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="e2e latency, last {len(values)} probes">'
        f'<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>'
    )


@dataclass(frozen=True)
class Line:
    """One series of an hourly chart: (hour start, value) pairs; a missing hour breaks the line."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    dash: str = ""  # stroke-dasharray: the legend must not depend on colour alone


@dataclass(frozen=True)
class Share:
    """How many of an hour's runs passed."""

    hour: float
    passed: int
    runs: int


@dataclass(frozen=True)
class Plot:
    """A chart's geometry, and the time span its x axis covers (Unix seconds)."""

    start_ts: float
    end_ts: float
    width: int = 680
    height: int = 170
    left: int = 56  # room for the y tick labels
    right: int = 10
    top: int = 24  # room for the legend
    bottom: int = 22  # room for the x tick labels

    def x(self, ts: float) -> float:
        span = self.end_ts - self.start_ts or 1.0
        return self.left + (ts - self.start_ts) / span * (self.width - self.left - self.right)

    def y(self, fraction: float) -> float:
        return self.height - self.bottom - fraction * (self.height - self.top - self.bottom)

    def hour_span(self, hour: float) -> tuple[float, float]:
        """The part of an hour inside the plotted span: the first and last are partial."""
        return max(hour, self.start_ts), min(hour + HOUR_S, self.end_ts)


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 up to at least `top`, in about `count` steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not top > 0:
        top = 1.0
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def latency_ticks(top: float) -> list[tuple[float, str]]:
    """Ticks with one unit for the whole axis, so labels line up: ms below a second, else s."""
    ticks = nice_ticks(top)
    if ticks[-1] < 1:
        return [(t, f"{t * 1000:.4g} ms") for t in ticks]
    return [(t, f"{t:.4g} s") for t in ticks]


def hourly_lines(
    plot: Plot,
    lines: Sequence[Line],
    label: str,
    ticks: Callable[[float], list[tuple[float, str]]] = latency_ticks,
) -> Markup:
    """Lines through one value per hour, each drawn at the middle of its hour."""
    y_ticks = ticks(max((v for line in lines for _, v in line.points), default=0.0))
    top = y_ticks[-1][0] or 1.0
    parts = _frame(plot, y_ticks, label)
    for line in lines:
        path, dots, previous = [], [], None
        for hour, value in line.points:
            start, end = plot.hour_span(hour)
            x, y = plot.x((start + end) / 2), plot.y(value / top)
            path.append(f"{'L' if previous == hour - HOUR_S else 'M'}{x:.1f} {y:.1f}")
            dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>')
            previous = hour
        dash = f' stroke-dasharray="{line.dash}"' if line.dash else ""
        parts.append(
            f'<path d="{"".join(path)}" fill="none" stroke="{line.colour}" stroke-width="1.5"{dash}/>'
            f'<g fill="{line.colour}">{"".join(dots)}</g>'
        )
    parts.append(_legend(plot, [(line.name, line.colour, line.dash) for line in lines]))
    return Markup("".join([*parts, "</svg>"]))


def hourly_shares(plot: Plot, shares: Sequence[Share], label: str) -> Markup:
    """One bar per hour, the passed part over the failed part; an hour without runs has none."""
    parts = _frame(plot, [(0.0, "0%"), (0.5, "50%"), (1.0, "100%")], label)
    for s in shares:
        start, end = plot.hour_span(s.hour)
        x0, x1 = plot.x(start) + 1, plot.x(end) - 1
        y_pass = plot.y(s.passed / s.runs)
        when = datetime.fromtimestamp(s.hour, UTC).strftime("%H:00")
        parts.append(
            f"<g><title>{when} UTC: {s.passed} of {s.runs} passed</title>"
            f'<rect x="{x0:.1f}" y="{plot.y(1):.1f}" width="{x1 - x0:.1f}" '
            f'height="{y_pass - plot.y(1):.1f}" fill="{FAILED}"/>'
            f'<rect x="{x0:.1f}" y="{y_pass:.1f}" width="{x1 - x0:.1f}" '
            f'height="{plot.y(0) - y_pass:.1f}" fill="{PASSED}"/></g>'
        )
    parts.append(_legend(plot, [("passed", PASSED, ""), ("failed", FAILED, "")], bars=True))
    return Markup("".join([*parts, "</svg>"]))


def _frame(plot: Plot, y_ticks: list[tuple[float, str]], label: str) -> list[str]:
    """The opening tag, a title, horizontal grid lines with y labels, and UTC hours along x."""
    w, h, left = plot.width, plot.height, plot.left
    top = y_ticks[-1][0] or 1.0
    parts = [
        f'<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
        f'aria-label="{escape(label)}" font-size="11" fill="{MUTED}">'
        f"<title>{escape(label)}</title>"
    ]
    for value, text in y_ticks:
        y = plot.y(value / top)
        parts.append(
            f'<line x1="{left}" x2="{w - plot.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        )
    every = TICK_EVERY_H * HOUR_S
    tick = math.ceil(plot.start_ts / every) * every
    base = h - plot.bottom
    while tick <= plot.end_ts:
        x = plot.x(tick)
        when = datetime.fromtimestamp(tick, UTC).strftime("%H:00")
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="{MUTED}"/>'
            f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle">{when}</text>'
        )
        tick += every
    parts.append(
        f'<line x1="{left}" x2="{w - plot.right}" y1="{base}" y2="{base}" stroke="{MUTED}"/>'
        f'<text x="{left - 6}" y="{base + 16}" text-anchor="end">UTC</text>'
    )
    return parts


def _legend(plot: Plot, items: list[tuple[str, str, str]], bars: bool = False) -> str:
    parts, x = [], plot.width - plot.right - 80 * len(items)
    for name, colour, dash in items:
        if bars:
            parts.append(f'<rect x="{x}" y="6" width="14" height="10" fill="{colour}"/>')
        else:
            stroke_dash = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<line x1="{x}" x2="{x + 22}" y1="11" y2="11" stroke="{colour}" '
                f'stroke-width="2"{stroke_dash}/>'
            )
        parts.append(f'<text x="{x + 28}" y="15" fill="{INK}">{escape(name)}</text>')
        x += 80
    return "".join(parts)

"""gpu_vram_leak: used VRAM keeps rising through the window, under the same processes.

A leak is sustained growth, not a step. Three things must hold over `leak.window`:
- a monotonic rise: the Mann–Kendall test says so (p < MAX_P), and the rise by Sen's slope
  (Theil–Sen, robust to one spike) over the window reaches `min_growth`;
- spread over time: the window's growth came in over at least SPREAD of it (from the time a
  tenth of it had come to the time nine tenths had). A model loading, a server starting, a
  batch reserving its KV cache are steps: most of their growth comes within seconds;
- the same processes: a PID that appeared in the window is a new process, not a leak, and one
  that exited took its memory with it. The load stays flat (its halves' utilisation medians
  within `max_load_change`), or the growth may be work.
The message names the process that grew most and its rate.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence

from watchdog.drift.stats import mann_kendall
from watchdog.gpu.detectors._format import duration, size
from watchdog.gpu.detectors.context import Context
from watchdog.gpu.nvml import GpuSample
from watchdog.result import Finding

MAX_POINTS = 120  # Theil–Sen and Mann–Kendall are quadratic: 30 min at 5 s is 360 points
MIN_COVER = 0.8  # of the window, before a slope means anything
MAX_P = 0.01  # Mann–Kendall, one-sided: a rise this steady by chance
SPREAD = 0.5  # share of the window over which the middle 80 % of the growth must come


def robust_slope(points: Sequence[tuple[float, float]]) -> float:
    """Theil–Sen: the median of pairwise slopes, so one spike or dip cannot tilt it."""
    points = _thinned(points)
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(points)
        for x2, y2 in points[i + 1 :]
        if x2 != x1
    ]
    return statistics.median(slopes) if slopes else 0.0


def _thinned(points: Sequence[tuple[float, float]]) -> Sequence[tuple[float, float]]:
    if len(points) <= MAX_POINTS:
        return points
    step = (len(points) - 1) / (MAX_POINTS - 1)
    return [points[round(i * step)] for i in range(MAX_POINTS)]


def detect(context: Context) -> list[Finding]:
    findings = []
    for uuid, history in context.history.items():
        finding = _one(context, uuid, history)
        if finding is not None:
            findings.append(finding)
    return findings


def _one(context: Context, uuid: str, history: Sequence[GpuSample]) -> Finding | None:
    limits = context.settings.leak
    since = context.now - limits.window
    window = [s for s in history if since <= s.at <= context.now and s.memory_used is not None]
    if len(window) < 3 or window[-1].at - window[0].at < MIN_COVER * limits.window:
        return None
    points = [(s.at, float(s.memory_used or 0)) for s in window]
    slope = robust_slope(points)
    span = window[-1].at - window[0].at
    name = context.names.get(uuid, uuid)
    rise = slope * limits.window
    trend = mann_kendall([y for _, y in _thinned(points)])
    spread = _spread(points)
    verdicts = []
    if rise < limits.min_growth:
        verdicts.append(
            f"used VRAM changed by {size(slope * span)} in {duration(span)} "
            f"({size(slope)}/s by Sen's slope), below the {size(limits.min_growth)} a leak needs"
        )
        return Finding(uuid, False, f"{name}: {verdicts[0]}", value=slope)
    text = (
        f"used VRAM rose {size(points[-1][1] - points[0][1])} in {duration(span)} "
        f"({size(slope)}/s by Sen's slope, Mann–Kendall p {_p(trend.p_increasing)})"
    )
    if trend.p_increasing >= MAX_P:
        verdicts.append("not steadily: no significant trend")
    if spread < SPREAD:
        at = _step_at(points)
        verdicts.append(
            f"in a step {duration(context.now - at)} ago (80% of it came "
            f"{_within(spread * span)}): a load, not a leak"
        )
    changed = _process_change(window)
    if changed:
        verdicts.append(f"{changed}: a new process, not a leak")
    halves = _load_halves(window)
    if halves is None:
        verdicts.append("load unknown (no utilisation reading), so a leak cannot be told from work")
    elif abs(halves[1] - halves[0]) >= limits.max_load_change:
        verdicts.append(
            f"load moved from {halves[0]:.0%} to {halves[1]:.0%}: more work, not a leak"
        )
    if verdicts:
        return Finding(uuid, False, f"{name}: {text}, but " + "; ".join(verdicts), value=slope)
    text += f", spread over {spread:.0%} of the window under the same processes"
    text += f" while load stayed flat at {statistics.median(halves or (0.0, 0.0)):.0%}"
    return Finding(uuid, True, f"{name}: {text}{_grew_most(window)}", value=slope)


def _spread(points: Sequence[tuple[float, float]]) -> float:
    """The share of the span between the times a tenth and nine tenths of the growth had come
    (against the first and last few readings' medians, so one spike moves neither end)."""
    k = max(1, len(points) // 10)
    start = statistics.median(y for _, y in points[:k])
    growth = statistics.median(y for _, y in points[-k:]) - start
    span = points[-1][0] - points[0][0]
    if growth <= 0 or span <= 0:
        return 0.0
    tenth = next(t for t, y in points if y - start >= 0.1 * growth)
    nine_tenths = next(t for t, y in points if y - start >= 0.9 * growth)
    return max(0.0, nine_tenths - tenth) / span


def _step_at(points: Sequence[tuple[float, float]]) -> float:
    """When the largest rise between two readings happened."""
    pairs = itertools.pairwise(points)
    (_, _), (t, _) = max(pairs, key=lambda ab: ab[1][1] - ab[0][1])
    return t


def _within(seconds: float) -> str:
    return f"within {duration(seconds)}" if seconds >= 1 else "between two readings"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _load_halves(window: Sequence[GpuSample]) -> tuple[float, float] | None:
    """Median utilisation of the window's first and second halves."""
    utils = [s.util_gpu for s in window if s.util_gpu is not None]
    if len(utils) < 2:
        return None
    middle = len(utils) // 2
    return statistics.median(utils[:middle]), statistics.median(utils[middle:])


def _process_change(window: Sequence[GpuSample]) -> str:
    """Which PIDs came or went over the window; empty when none did (or unknown)."""
    seen = [s for s in window if s.processes is not None]
    if not seen:
        return ""
    pid_sets = [{p.pid for p in s.processes or ()} for s in seen]
    names = {p.pid: p.name or "?" for s in seen for p in s.processes or ()}
    came = sorted(set().union(*pid_sets) - pid_sets[0])
    left = sorted(pid_sets[0] - pid_sets[-1])
    arrived = {
        pid: next(s.at for s, pids in zip(seen, pid_sets, strict=True) if pid in pids)
        for pid in came
    }
    parts = [
        f"pid {pid} ({names[pid]}) appeared {duration(seen[-1].at - arrived[pid])} ago"
        for pid in came
    ]
    parts += [f"pid {pid} ({names[pid]}) exited" for pid in left]
    return ", ".join(parts)


def _grew_most(window: Sequence[GpuSample]) -> str:
    """The process whose VRAM grew most between the window's first and last process lists,
    and its rate."""
    seen = [s for s in window if s.processes is not None]
    if len(seen) < 2:
        return "; the process list was not read twice in the window"
    first, last = seen[0], seen[-1]
    before = {p.pid: p.used_bytes or 0 for p in first.processes or ()}
    growth = [
        (p.used_bytes - before.get(p.pid, 0), p.pid, p.name)
        for p in last.processes or ()
        if p.used_bytes is not None
    ]
    if not growth:
        return "; the driver does not report per-process VRAM"
    grown, pid, name = max(growth)
    seconds = max(last.at - first.at, 1e-9)
    return (
        f"; pid {pid} ({name or '?'}) grew most: +{size(grown)} in {duration(seconds)}, "
        f"{size(grown / seconds)}/s"
    )

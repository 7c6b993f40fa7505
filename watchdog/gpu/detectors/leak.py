"""gpu_vram_leak: used VRAM keeps climbing while the load and the processes stay the same."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from watchdog.gpu.detectors._format import duration, size
from watchdog.gpu.detectors.context import Context
from watchdog.gpu.nvml import GpuSample
from watchdog.result import Finding

MAX_POINTS = 120  # Theil–Sen is quadratic: 30 min at 5 s would be 130k pairs, 120 points 7k
MIN_COVER = 0.8  # of the window, before a slope means anything


def robust_slope(points: Sequence[tuple[float, float]]) -> float:
    """Theil–Sen: the median of pairwise slopes, so one spike or dip cannot tilt it."""
    if len(points) > MAX_POINTS:
        step = (len(points) - 1) / (MAX_POINTS - 1)
        points = [points[round(i * step)] for i in range(MAX_POINTS)]
    slopes = [
        (y2 - y1) / (x2 - x1)
        for i, (x1, y1) in enumerate(points)
        for x2, y2 in points[i + 1 :]
        if x2 != x1
    ]
    return statistics.median(slopes) if slopes else 0.0


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
    slope = robust_slope([(s.at, float(s.memory_used or 0)) for s in window])
    span = window[-1].at - window[0].at
    verb = "grew" if slope > 0 else "changed by"
    text = (
        f"used VRAM {verb} {size(slope * span)} in {duration(span)} ({size(slope)}/s robust slope)"
    )
    halves = _load_halves(window)
    flat = halves is not None and abs(halves[1] - halves[0]) < limits.max_load_change
    changed = _process_change(window)
    if halves is None:
        text += "; load unknown (no utilisation reading), so a leak cannot be told from work"
    elif not flat:
        text += f" while load moved from {halves[0]:.0%} to {halves[1]:.0%}: more work, not a leak"
    else:
        text += f" while load stayed flat at {statistics.median(halves):.0%}"
    if changed:
        text += f"; {changed}: contention, not a leak"
    failing = slope * limits.window >= limits.min_growth and flat and not changed
    if failing:
        text += _grew_most(window[0], window[-1])
    return Finding(uuid, failing, f"{context.names.get(uuid, uuid)}: {text}", value=slope)


def _load_halves(window: Sequence[GpuSample]) -> tuple[float, float] | None:
    """Median utilisation of the window's first and second halves."""
    utils = [s.util_gpu for s in window if s.util_gpu is not None]
    if len(utils) < 2:
        return None
    middle = len(utils) // 2
    return statistics.median(utils[:middle]), statistics.median(utils[middle:])


def _process_change(window: Sequence[GpuSample]) -> str:
    """What changed in the set of PIDs over the window; empty when nothing did (or unknown)."""
    seen = [s.processes for s in window if s.processes is not None]
    if not seen:
        return ""
    pid_sets = [{p.pid for p in procs} for procs in seen]
    names = {p.pid: p.name or "?" for procs in seen for p in procs}
    came = sorted(set().union(*pid_sets) - pid_sets[0])
    left = sorted(pid_sets[0] - pid_sets[-1])
    parts = [f"pid {pid} ({names[pid]}) appeared" for pid in came]
    parts += [f"pid {pid} ({names[pid]}) exited" for pid in left]
    return ", ".join(parts)


def _grew_most(first: GpuSample, last: GpuSample) -> str:
    if first.processes is None or last.processes is None:
        return ""
    before = {p.pid: p.used_bytes or 0 for p in first.processes}
    growth = [
        (p.used_bytes - before.get(p.pid, 0), p.pid, p.name)
        for p in last.processes
        if p.used_bytes is not None
    ]
    if not growth:
        return "; the driver does not report per-process VRAM"
    grown, pid, name = max(growth)
    return f"; pid {pid} ({name or '?'}) grew most (+{size(grown)})"

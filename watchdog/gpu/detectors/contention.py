"""gpu_vram_contention: several processes share one GPU and its free VRAM runs low."""

from __future__ import annotations

from watchdog.gpu.detectors._format import size
from watchdog.gpu.detectors.context import Context
from watchdog.gpu.nvml import GpuProcess
from watchdog.result import Finding


def detect(context: Context) -> list[Finding]:
    limits = context.settings.contention
    findings = []
    for uuid, history in context.history.items():
        if not history:
            continue
        latest = history[-1]
        total, free, processes = latest.memory_total, latest.memory_free, latest.processes
        if not total or free is None or processes is None:
            continue  # no memory or process reading: no evidence either way
        ratio = free / total
        failing = len(processes) >= limits.min_processes and ratio < limits.min_free_ratio
        summary = (
            f"{context.names.get(uuid, uuid)}: {len(processes)} process(es), "
            f"{ratio:.0%} VRAM free ({size(free)} of {size(total)})"
        )
        if processes:
            summary += ": " + ", ".join(_process(p) for p in _largest_first(processes))
        if failing:
            summary += "; they compete for memory: expect out-of-memory errors or evictions"
        findings.append(Finding(uuid, failing, summary, value=ratio))
    return findings


def _largest_first(processes: tuple[GpuProcess, ...]) -> list[GpuProcess]:
    # Unknown usage (None) sorts last: it cannot be blamed.
    return sorted(processes, key=lambda p: (p.used_bytes is None, -(p.used_bytes or 0), p.pid))


def _process(p: GpuProcess) -> str:
    used = "VRAM unknown" if p.used_bytes is None else size(p.used_bytes)
    return f"pid {p.pid} ({p.name or '?'}) {used}"

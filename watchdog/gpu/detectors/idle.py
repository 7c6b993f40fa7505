"""gpu_idle_while_serving: an endpoint answers, yet its bound GPU does no work for it."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from watchdog.gpu.detectors.context import Context, ProbeWindow
from watchdog.gpu.nvml import GpuSample
from watchdog.result import Finding

CAUSE = (
    "the server likely runs on the CPU — a missing CUDA_VISIBLE_DEVICES, or a CPU fallback "
    "(e.g. n_gpu_layers=0 / no CUDA build)"
)


def detect(context: Context) -> list[Finding]:
    findings = []
    for endpoint, uuids in context.bindings.items():
        finding = _one(context, endpoint, uuids)
        if finding is not None:
            findings.append(finding)
    return findings


def _one(context: Context, endpoint: str, uuids: Sequence[str]) -> Finding | None:
    limits = context.settings.idle
    runs = [w for w in context.windows if w.endpoint == endpoint][-limits.runs :]
    if len(runs) < limits.runs or not all(w.answered for w in runs):
        return None  # too little evidence, or the endpoint is down: other kinds page for that
    busiest: dict[str, float] = {}  # UUID: highest utilisation over the runs
    for uuid in uuids:
        utils = [_utilization(context.history.get(uuid, ()), uuid, w) for w in runs]
        known = [u for u in utils if u is not None]
        if len(known) == len(utils):
            busiest[uuid] = max(known)
    if not busiest:
        return None
    busy = [u for u, util in busiest.items() if util > limits.max_utilization]
    if busy:
        return Finding(
            endpoint,
            False,
            f"{_gpus(context.names, busiest, busy, 'reached')} during probes to {endpoint}",
            gpu=busy[0],
            value=busiest[busy[0]],
        )
    speeds = [w.tokens_per_s for w in runs if w.tokens_per_s is not None]
    if not speeds:
        return None  # an idle GPU and no decode speed: nothing says a CPU does the work
    speed = statistics.median(speeds)
    idle = list(busiest)
    gpus = _gpus(context.names, busiest, idle, "stayed at")
    if speed >= limits.cpu_like_tokens_per_s:
        summary = (
            f"{gpus} during probes to {endpoint}, yet {speed:.0f} tok/s is faster than a CPU "
            "decodes: is the endpoint bound to the GPU it runs on?"
        )
        return Finding(endpoint, False, summary, gpu=idle[0], value=busiest[idle[0]])
    summary = (
        f"probes to {endpoint} succeed at {speed:.0f} tok/s but {gpus} during them "
        f"({len(runs)} runs): {CAUSE}"
    )
    return Finding(endpoint, True, summary, gpu=idle[0], value=busiest[idle[0]])


def _gpus(
    names: Mapping[str, str], busiest: Mapping[str, float], uuids: Sequence[str], verb: str
) -> str:
    return " and ".join(f"{names.get(u, u)} {verb} {busiest[u]:.0%}" for u in uuids)


def _utilization(history: Sequence[GpuSample], uuid: str, window: ProbeWindow) -> float | None:
    """The GPU's highest utilisation during the run, from the run or else from the history."""
    if uuid in window.gpu_utilization:
        return window.gpu_utilization[uuid]
    # NVML averages utilisation over the period before a read, so a read just after the run
    # still describes it.
    seen = [
        s.util_gpu
        for s in history
        if window.started <= s.at <= window.ended + 1 and s.util_gpu is not None
    ]
    return max(seen) if seen else None

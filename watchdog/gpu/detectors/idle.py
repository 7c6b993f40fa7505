"""gpu_idle_while_serving: an endpoint answers, yet its bound GPUs do no work for it.

Over the endpoint's last `idle.runs` probe runs, all answered, each bound GPU is idle when:
- it has no compute process at all (unless its utilisation says otherwise: then NVML cannot
  show this watchdog the processes), or
- the serving engine (the process listening on the endpoint's port, and its family: see
  gpu/serving.py) holds no memory on it, or
- the engine holds memory on it but ran no kernel there during the runs, by NVML's
  per-process samples (a CUDA build with no layers offloaded), or
- where those samples are missing: its utilisation stayed at or below `idle.max_utilization`
  during the runs, read from NVML's sample buffer around each run (a once-a-second reading
  of a GPU that answers a small model in 40 ms is 0 % most of the time: measured on an H200).

Every bound GPU idle is the finding, whatever the answers' decode speed: a small model, or any
model on a big CPU, decodes faster than a slow GPU. The speed is said in the message as
supporting evidence, never as a veto. A GPU whose processes and utilisation are both unknown
gives no evidence either way.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from watchdog.gpu.detectors._format import size
from watchdog.gpu.detectors.context import Context, ProbeWindow
from watchdog.gpu.nvml import GpuProcess, GpuSample
from watchdog.gpu.serving import Server
from watchdog.result import Finding

UTIL_PERIOD_S = 0.25  # NVML's utilisation sample buffer: about five samples a second
PROCESS_PERIOD_S = 1.1  # its per-process samples: about one a second
# A once-a-second reading at or below this proves nothing about a short probe run (see
# _utilization); above it, the GPU worked.
LOW_READING = 0.1
CAUSE = (
    "a missing or empty CUDA_VISIBLE_DEVICES, a CPU-only build, or no layers offloaded "
    "(n_gpu_layers=0)"
)


@dataclass(frozen=True)
class Evidence:
    """What one bound GPU showed during the runs; None: not known."""

    uuid: str
    name: str
    utilization: float | None  # the highest read during the runs
    processes: tuple[GpuProcess, ...] | None  # compute processes seen during the runs
    engine: tuple[GpuProcess, ...] | None  # those of the serving engine; None: no server known
    engine_sm: float | None = None  # the engine's highest SM utilisation in the runs' samples

    def idle(self, server: Server | None, limit: float) -> str | None:
        """Why this GPU is idle for the endpoint, or None when it is not (or nothing says)."""
        busy = self.utilization is not None and self.utilization > limit
        if self.processes is not None and not self.processes:
            # Busy with no process listed: the list is not visible here (a container without
            # the host's PIDs), so it proves nothing.
            return None if busy else f"{self.name} has no compute process at all"
        if server is not None and self.engine is not None and not self.engine:
            others = ", ".join(f"pid {p.pid} ({p.name or '?'})" for p in self.processes or ())
            return f"{server} holds no memory on {self.name} (its compute processes: {others})"
        if server is not None and self.engine and self.engine_sm is not None:
            if self.engine_sm > 0:
                return None
            held = sum(p.used_bytes or 0 for p in self.engine)
            return f"{server} holds {size(held)} on {self.name} but ran no kernel on it"
        if self.utilization is not None and self.utilization <= limit:
            return f"{self.name} stayed at {self.utilization:.0%}"
        return None

    @property
    def known(self) -> bool:
        return self.processes is not None or self.utilization is not None


def detect(context: Context) -> list[Finding]:
    findings = []
    for endpoint, uuids in context.bindings.items():
        finding = _one(context, endpoint, uuids)
        if finding is not None:
            findings.append(finding)
    return findings


def _one(context: Context, endpoint: str, uuids: Sequence[str]) -> Finding | None:
    limits = context.settings.idle
    runs = [w for w in context.windows if w.endpoint == endpoint]
    if any(_buffered(context.history.get(u, ())) for u in uuids):
        # Judge only runs whose samples NVML has posted (up to a second after each ends):
        # a verdict that turned on each new run would never hold for failure_threshold.
        runs = [w for w in runs if w.ended + PROCESS_PERIOD_S <= context.now]
    runs = runs[-limits.runs :]
    if len(runs) < limits.runs or not all(w.answered for w in runs):
        return None  # too little evidence, or the endpoint is down: other kinds page for that
    server = context.servers.get(endpoint)
    seen = [_evidence(context, u, runs, server) for u in uuids]
    if not all(e.known for e in seen):
        return None
    reasons = [e.idle(server, limits.max_utilization) for e in seen]
    speeds = [w.tokens_per_s for w in runs if w.tokens_per_s is not None]
    median = statistics.median(speeds) if speeds else None
    speed = "" if median is None else f" at {median:.0f} tok/s"
    if median is not None and median < limits.cpu_like_tokens_per_s:
        speed += ", a CPU's pace"
    first = seen[0]
    if all(reasons):
        said = "; ".join(r for r in reasons if r)
        who = "it" if server and str(server) in said else server or f"the server of {endpoint}"
        summary = (
            f"probes to {endpoint} succeed ({len(runs)} runs{speed}), but {said}: "
            f"{who} serves from the CPU — {CAUSE}"
        )
        return Finding(endpoint, True, summary, gpu=first.uuid, value=first.utilization)
    busy = next(e for e, r in zip(seen, reasons, strict=True) if r is None)
    return Finding(
        endpoint,
        False,
        _busy(busy, server, endpoint) + f" ({len(runs)} runs{speed})",
        gpu=busy.uuid,
        value=busy.utilization,
    )


def _busy(e: Evidence, server: Server | None, endpoint: str) -> str:
    held = sum(p.used_bytes or 0 for p in e.engine or e.processes or ())
    reached = "" if e.utilization is None else f", reaching {e.utilization:.0%}"
    if server is not None and e.engine:
        return f"{server} holds {size(held)} on {e.name}{reached} during probes to {endpoint}"
    if e.processes is not None and not e.processes:
        return (
            f"{e.name} works during probes to {endpoint}{reached}, though NVML lists no compute "
            "process on it here (the watchdog may not see the host's processes)"
        )
    return f"{e.name} works during probes to {endpoint}{reached}"


def _evidence(
    context: Context, uuid: str, runs: Sequence[ProbeWindow], server: Server | None
) -> Evidence:
    history = context.history.get(uuid, ())
    utils = [_utilization(history, uuid, w) for w in runs]
    known = [u for u in utils if u is not None]
    processes = _processes(history, runs[0].started, runs[-1].ended)
    engine = None
    if server is not None and processes is not None:
        engine = tuple(p for p in processes if p.pid in server.family)
    engine_sm = None
    kernels = [_kernels(history, w) for w in runs]
    if server is not None and all(k is not None for k in kernels):
        engine_sm = max(
            (sm for k in kernels for pid, sm in (k or {}).items() if pid in server.family),
            default=0.0,
        )
    return Evidence(
        uuid,
        context.names.get(uuid, uuid),
        max(known) if len(known) == len(utils) else None,
        processes,
        engine,
        engine_sm,
    )


def _buffered(history: Sequence[GpuSample]) -> bool:
    return bool(history) and (
        history[-1].process_sm is not None or history[-1].util_samples is not None
    )


def _kernels(history: Sequence[GpuSample], window: ProbeWindow) -> dict[int, float] | None:
    """Each process's highest SM utilisation in NVML's per-process samples of the run: those
    stamped after it began and within one sample period (a second) after it ended. None until
    that period has closed (no reading after it yet), or where NVML keeps no such samples."""
    closes = window.ended + PROCESS_PERIOD_S
    if not any(s.at >= closes and s.process_sm is not None for s in history):
        return None
    out: dict[int, float] = {}
    for s in history:
        for pid, at, sm in s.process_sm or ():
            if window.started < at <= closes:
                out[pid] = max(out.get(pid, 0.0), sm)
    return out


def _processes(
    history: Sequence[GpuSample], started: float, ended: float
) -> tuple[GpuProcess, ...] | None:
    """The compute processes read during the runs (each PID once, its largest reading); else
    the last list read before they ended (the list is read every 30 s, and at once when used
    VRAM moves)."""
    during = [
        s.processes for s in history if started <= s.at <= ended + 1 and s.processes is not None
    ]
    if not during:
        before = [s.processes for s in history if s.at <= ended + 1 and s.processes is not None]
        during = before[-1:]
    if not during:
        return None
    by_pid: dict[int, GpuProcess] = {}
    for processes in during:
        for p in processes:
            if p.pid not in by_pid or (p.used_bytes or 0) > (by_pid[p.pid].used_bytes or 0):
                by_pid[p.pid] = p
    return tuple(sorted(by_pid.values(), key=lambda p: p.pid))


def _utilization(history: Sequence[GpuSample], uuid: str, window: ProbeWindow) -> float | None:
    """The GPU's highest utilisation during the run, from NVML's sample buffer (about five a
    second). Without one, a reading that shows work counts; a low one says nothing: on an H200
    answering SmolLM2 in 40 ms, once-a-second readings were 0-6 % while the buffer read 11-15 %."""
    closes = window.ended + UTIL_PERIOD_S
    buffered = [
        value
        for s in history
        for at, value in s.util_samples or ()
        if window.started < at <= closes
    ]
    if any(s.util_samples is not None and s.at >= closes for s in history):
        return max(buffered, default=0.0)
    # NVML averages utilisation over the period before a read, so a read just after the run
    # still describes it.
    seen = [
        s.util_gpu
        for s in history
        if window.started <= s.at <= window.ended + 1 and s.util_gpu is not None
    ]
    if uuid in window.gpu_utilization:
        seen.append(window.gpu_utilization[uuid])
    busiest = max(seen, default=None)
    return busiest if busiest is not None and busiest > LOW_READING else None

"""Record a real GPU's NVML readings, as tests/fakenvml.py replays them.

A thread reads every field the watchdog samples through pynvml itself, every `every` seconds,
in the format of tests/fixtures/h100-nvml-trace.json: a refused field is stored as
{"nvml_error", "code"}, the compute processes with their VRAM, and each process's name. The
real-engine suite (test_engine_on_gpu.py) records each scenario so that `make test` can replay
it through the fake NVML on a machine without a GPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pynvml


def _read(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except pynvml.NVMLError as exc:
        return {"nvml_error": str(exc), "code": exc.value}


def meta(index: int = 0) -> dict[str, Any]:
    h = pynvml.nvmlDeviceGetHandleByIndex(index)
    bits = {
        name: getattr(pynvml, name)
        for name in dir(pynvml)
        if name.startswith("nvmlClocksEventReason") and isinstance(getattr(pynvml, name), int)
    }
    return {
        "driver": pynvml.nvmlSystemGetDriverVersion(),
        "nvml": pynvml.nvmlSystemGetNVMLVersion(),
        "name": pynvml.nvmlDeviceGetName(h),
        "uuid": pynvml.nvmlDeviceGetUUID(h),
        "pci_bus_id": pynvml.nvmlDeviceGetPciInfo(h).busId,
        "mig_mode": _read(lambda: list(pynvml.nvmlDeviceGetMigMode(h))),
        "persistence": _read(lambda: pynvml.nvmlDeviceGetPersistenceMode(h)),
        "clock_event_reason_bits": bits,
    }


def buffers(h: Any, seen: dict[str, int]) -> dict[str, Any]:
    """NVML's sample buffers since the last reading: utilisation ([timestamp, percent]) and
    each process's SM utilisation ([pid, timestamp, percent])."""
    out: dict[str, Any] = {}
    try:
        _, samples = pynvml.nvmlDeviceGetSamples(
            h, pynvml.NVML_GPU_UTILIZATION_SAMPLES, seen["util"]
        )
        out["util_samples"] = [[s.timeStamp, s.sampleValue.uiVal] for s in samples]
    except pynvml.NVMLError as exc:
        out["util_samples"] = (
            []
            if exc.value == pynvml.NVML_ERROR_NOT_FOUND
            else {"nvml_error": str(exc), "code": exc.value}
        )
    try:
        procs = pynvml.nvmlDeviceGetProcessUtilization(h, seen["proc"])
        out["proc_util"] = [[p.pid, p.timeStamp, p.smUtil] for p in procs]
    except pynvml.NVMLError as exc:
        none = (pynvml.NVML_SUCCESS, pynvml.NVML_ERROR_NOT_FOUND)
        out["proc_util"] = [] if exc.value in none else {"nvml_error": str(exc), "code": exc.value}
    for key, field_name, at in (("util", "util_samples", 0), ("proc", "proc_util", 1)):
        entries = out[field_name]
        if isinstance(entries, list) and entries:
            seen[key] = max(seen[key], *(int(e[at]) for e in entries))
    # An unsupported buffer is not stored at all: the fake answers NOT_SUPPORTED then.
    return {k: v for k, v in out.items() if isinstance(v, list)}


def sample(h: Any, names: dict[int, str], seen: dict[str, int] | None = None) -> dict[str, Any]:
    """One reading of every field, as the trace stores it."""
    v1 = _read(lambda: pynvml.nvmlDeviceGetMemoryInfo(h))
    v2 = _read(lambda: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2))
    util = _read(lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
    procs = _read(lambda: pynvml.nvmlDeviceGetComputeRunningProcesses(h))
    if isinstance(procs, list):
        for p in procs:
            if p.pid not in names:
                name = _read(lambda pid=p.pid: pynvml.nvmlSystemGetProcessName(pid))
                names[p.pid] = name.rsplit("/", 1)[-1] if isinstance(name, str) else "?"
        procs = [{"pid": p.pid, "used_bytes": p.usedGpuMemory} for p in procs]
    return {
        "t": time.time(),
        "util": util if isinstance(util, dict) else {"gpu": util.gpu, "memory": util.memory},
        "mem_v2": v2
        if isinstance(v2, dict)
        else {"total": v2.total, "used": v2.used, "free": v2.free, "reserved": v2.reserved},
        "mem_v1": v1
        if isinstance(v1, dict)
        else {"total": v1.total, "used": v1.used, "free": v1.free},
        "temp_c": _read(lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
        "power_mw": _read(lambda: pynvml.nvmlDeviceGetPowerUsage(h)),
        "energy_mj": _read(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)),
        "power_limit_mw": _read(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h)),
        "sm_clock_mhz": _read(lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
        "mem_clock_mhz": _read(lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
        "clock_event_reasons": _read(lambda: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)),
        "ecc_uncorrected_volatile": _read(
            lambda: pynvml.nvmlDeviceGetTotalEccErrors(
                h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
            )
        ),
        "ecc_corrected_aggregate": _read(
            lambda: pynvml.nvmlDeviceGetTotalEccErrors(
                h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC
            )
        ),
        "remapped_rows": _read(lambda: list(pynvml.nvmlDeviceGetRemappedRows(h))),
        "retired_pages_dbe": _read(
            lambda: len(
                pynvml.nvmlDeviceGetRetiredPages(
                    h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
                )
            )
        ),
        # KB/s over NVML's last 20 ms window, as in the H100 trace: the fake turns them back
        # into the cumulative counters the adapter differences.
        "pcie_tx_kbs": _read(
            lambda: pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_TX_BYTES)
        ),
        "pcie_rx_kbs": _read(
            lambda: pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_RX_BYTES)
        ),
        "fan_pct": _read(lambda: pynvml.nvmlDeviceGetFanSpeed(h)),
        "pstate": _read(lambda: pynvml.nvmlDeviceGetPerformanceState(h)),
        "compute_procs": procs,
        **(buffers(h, seen) if seen is not None else {}),
    }


class Recorder:
    """Samples GPU `index` every `every` seconds on a thread, until `stop()`."""

    def __init__(self, index: int = 0, every: float = 1.0):
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.meta = meta(index)
        self.every = every
        self.samples: list[dict[str, Any]] = []
        self.names: dict[int, str] = {}
        self.seen = {"util": 0, "proc": 0}  # the sample buffers' newest timestamps read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.samples.append(sample(self.handle, self.names, self.seen))
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if start <= s["t"] <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        pynvml.nvmlShutdown()


def verdicts(seen: list[dict[str, Any]], start: float) -> dict[str, dict[str, Any]]:
    """From a scenario's once-a-second polls of the daemon: each alert that was firing, when
    it was first seen firing (seconds from the scenario's start), and what it said."""
    out: dict[str, dict[str, Any]] = {}
    for poll in seen:
        for key, summary in poll.items():
            if key.startswith("firing:") and key not in out:
                _, kind, subject = key.split(":", 2)
                out[key] = {
                    "kind": kind,
                    "subject": subject,
                    "firing_after_s": round(poll["at"] - start, 1),
                    "summary": summary,
                }
    return out


def fixture(raw: dict[str, Any]) -> dict[str, Any]:
    """A scenario as tests/fixtures/gpu keeps it: the polls folded into the verdicts."""
    kept = {k: v for k, v in raw.items() if k not in ("seen", "alerts")}
    return {**kept, "verdicts": verdicts(raw["seen"], raw["start"])}

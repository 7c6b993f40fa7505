"""A fake pynvml that replays the recorded H100 trace and raises pynvml's real NVMLError codes.

It stands where the `pynvml` module stands: `Nvml(lib=FakeNvml(...))`. Constants come from the
real pynvml, so the adapter cannot depend on anything the real library lacks.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml

TRACE_PATH = Path(__file__).parent / "fixtures" / "h100-nvml-trace.json"
TRACE: dict[str, Any] = json.loads(TRACE_PATH.read_text())
PHASES: dict[str, list[dict[str, Any]]] = {p["phase"]: p["samples"] for p in TRACE["phases"]}
UUID = TRACE["meta"]["uuid"]


def samples(*phases: str) -> list[dict[str, Any]]:
    return [s for phase in phases for s in PHASES[phase]]


@dataclass
class Handle:
    index: int


@dataclass
class FakeGpu:
    uuid: str
    samples: list[dict[str, Any]]
    name: str = TRACE["meta"]["name"]
    position: int = 0
    process_names: dict[int, str] = field(default_factory=dict)
    xid_supported: bool = True

    @property
    def now(self) -> dict[str, Any]:
        return self.samples[min(self.position, len(self.samples) - 1)]

    def pcie_bytes(self, key: str) -> int:
        """A cumulative byte counter consistent with the recorded KB/s rates."""
        upto = self.samples[: min(self.position, len(self.samples) - 1) + 1]
        return int(sum(b[key] * 1024 * (b["t"] - a["t"]) for a, b in itertools.pairwise(upto)))


class FakeNvml:
    """pynvml's functions over recorded samples; `step()` moves every GPU to its next sample."""

    def __init__(self, gpus: list[FakeGpu] | None = None):
        self.gpus = [FakeGpu(UUID, samples("idle"))] if gpus is None else gpus
        self.initialised = False
        self.init_error: int | None = None  # nvmlInit raises this (e.g. LIBRARY_NOT_FOUND)
        self.call_error: int | None = None  # every device call raises this (e.g. GPU_IS_LOST)
        self.inits = 0
        self.shutdowns = 0
        self.calls = 0
        self.counts: dict[str, int] = {}  # device calls by function name
        self.pending_xids: list[tuple[int, int]] = []  # (gpu index, xid)
        self.on_idle: Callable[[], object] | None = None  # called when no event is pending

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("NVML_", "nvmlMemory_", "nvmlEventType", "nvmlClocksEvent")):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def step(self, n: int = 1) -> None:
        for gpu in self.gpus:
            gpu.position += n

    # --- session -------------------------------------------------------------------------------

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised = True
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised = False
        self.shutdowns += 1

    def _check(self) -> None:
        self.calls += 1
        if not self.initialised:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: Handle) -> FakeGpu:
        self._check()
        caller = sys._getframe(1).f_code.co_name
        if caller == "_field":
            caller = sys._getframe(2).f_code.co_name
        self.counts[caller] = self.counts.get(caller, 0) + 1
        if self.call_error is not None:
            raise pynvml.NVMLError(self.call_error)
        return self.gpus[handle.index]

    def _field(self, handle: Handle, key: str) -> Any:
        value = self._gpu(handle).now[key]
        if isinstance(value, dict) and "nvml_error" in value:
            raise pynvml.NVMLError(value["code"])
        return value

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return str(TRACE["meta"]["driver"])

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Handle:
        self._check()
        if index >= len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return Handle(index)

    def nvmlDeviceGetUUID(self, h: Handle) -> str:
        return self._gpu(h).uuid

    def nvmlDeviceGetName(self, h: Handle) -> str:
        return self._gpu(h).name

    def nvmlDeviceGetMigMode(self, h: Handle) -> list[int]:
        self._gpu(h)
        return list(TRACE["meta"]["mig_mode"])

    # --- samples -------------------------------------------------------------------------------

    def nvmlDeviceGetUtilizationRates(self, h: Handle) -> Any:
        return SimpleNamespace(**self._field(h, "util"))

    def nvmlDeviceGetMemoryInfo(self, h: Handle, version: int | None = None) -> Any:
        if version == pynvml.nvmlMemory_v2:
            return SimpleNamespace(**self._field(h, "mem_v2"))
        return SimpleNamespace(**self._field(h, "mem_v1"))

    def nvmlDeviceGetTemperature(self, h: Handle, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return int(self._field(h, "temp_c"))

    def nvmlDeviceGetPowerUsage(self, h: Handle) -> int:
        return int(self._field(h, "power_mw"))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Handle) -> int:
        return int(self._field(h, "energy_mj"))

    def nvmlDeviceGetEnforcedPowerLimit(self, h: Handle) -> int:
        return int(self._field(h, "power_limit_mw"))

    def nvmlDeviceGetClockInfo(self, h: Handle, kind: int) -> int:
        key = {pynvml.NVML_CLOCK_SM: "sm_clock_mhz", pynvml.NVML_CLOCK_MEM: "mem_clock_mhz"}
        return int(self._field(h, key[kind]))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Handle) -> int:
        return int(self._field(h, "clock_event_reasons"))

    def nvmlDeviceGetTotalEccErrors(self, h: Handle, error_type: int, counter: int) -> int:
        key = {
            (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC): (
                "ecc_uncorrected_volatile"
            ),
            (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC): (
                "ecc_corrected_aggregate"
            ),
        }[(error_type, counter)]
        return int(self._field(h, key))

    def nvmlDeviceGetRemappedRows(self, h: Handle) -> tuple[int, int, int, int]:
        corr, unc, pending, failed = self._field(h, "remapped_rows")
        return corr, unc, pending, failed

    def nvmlDeviceGetRetiredPages(self, h: Handle, cause: int) -> list[int]:
        assert cause == pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
        return [0] * int(self._field(h, "retired_pages_dbe"))

    def nvmlDeviceGetPcieThroughput(self, h: Handle, counter: int) -> int:
        key = {
            pynvml.NVML_PCIE_UTIL_TX_BYTES: "pcie_tx_kbs",
            pynvml.NVML_PCIE_UTIL_RX_BYTES: "pcie_rx_kbs",
        }
        return int(self._field(h, key[counter]))

    def nvmlDeviceGetFieldValues(self, h: Handle, fields: list[int]) -> list[Any]:
        gpu = self._gpu(h)
        keys = {
            pynvml.NVML_FI_DEV_PCIE_COUNT_TX_BYTES: "pcie_tx_kbs",
            pynvml.NVML_FI_DEV_PCIE_COUNT_RX_BYTES: "pcie_rx_kbs",
        }
        refused = [gpu.now[keys[f]] for f in fields if isinstance(gpu.now[keys[f]], dict)]
        if refused:
            return [
                SimpleNamespace(fieldId=f, nvmlReturn=refused[0]["code"], value=None)
                for f in fields
            ]
        return [
            SimpleNamespace(
                fieldId=f,
                nvmlReturn=pynvml.NVML_SUCCESS,
                value=SimpleNamespace(ullVal=gpu.pcie_bytes(keys[f])),
            )
            for f in fields
        ]

    def nvmlDeviceGetPerformanceState(self, h: Handle) -> int:
        return int(self._field(h, "pstate"))

    def nvmlDeviceGetFanSpeed(self, h: Handle) -> int:
        return int(self._field(h, "fan_pct"))

    def nvmlDeviceGetComputeRunningProcesses(self, h: Handle) -> list[Any]:
        return [
            SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used_bytes"])
            for p in self._field(h, "compute_procs")
        ]

    def _buffer(self, h: Handle, key: str) -> list[list[float]]:
        """Every entry of a sample buffer recorded up to the current sample; NOT_SUPPORTED
        where the trace has none (the H100 trace predates them)."""
        gpu = self._gpu(h)
        if key not in gpu.now:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        upto = gpu.samples[: min(gpu.position, len(gpu.samples) - 1) + 1]
        return [entry for s in upto for entry in s.get(key, [])]

    def nvmlDeviceGetSamples(self, h: Handle, kind: int, since: int) -> tuple[int, list[Any]]:
        assert kind == pynvml.NVML_GPU_UTILIZATION_SAMPLES
        found = [
            SimpleNamespace(timeStamp=int(ts), sampleValue=SimpleNamespace(uiVal=int(value)))
            for ts, value in self._buffer(h, "util_samples")
            if ts > since
        ]
        if not found:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, found

    def nvmlDeviceGetProcessUtilization(self, h: Handle, since: int) -> list[Any]:
        found = [
            SimpleNamespace(pid=int(pid), timeStamp=int(ts), smUtil=int(sm), memUtil=0)
            for pid, ts, sm in self._buffer(h, "proc_util")
            if ts > since
        ]
        if not found:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return found

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._check()
        self.counts["nvmlSystemGetProcessName"] = self.counts.get("nvmlSystemGetProcessName", 0) + 1
        for gpu in self.gpus:
            if pid in gpu.process_names:
                return gpu.process_names[pid]
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    # --- events --------------------------------------------------------------------------------

    def nvmlEventSetCreate(self) -> object:
        self._check()
        return object()

    def nvmlEventSetFree(self, events: object) -> None:
        pass

    def nvmlDeviceRegisterEvents(self, h: Handle, types: int, events: object) -> None:
        gpu = self._gpu(h)
        if not gpu.xid_supported:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlEventSetWait_v2(self, events: object, timeout_ms: int) -> Any:
        if self.pending_xids:
            index, xid = self.pending_xids.pop(0)
            return SimpleNamespace(device=Handle(index), eventData=xid)
        if self.on_idle is not None:
            self.on_idle()
        else:  # a watching thread: pace it as NVML would, briefly, without holding up a test
            threading.Event().wait(min(timeout_ms / 1000, 0.01))
        raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)

"""NVML through nvidia-ml-py: the only module that imports pynvml.

GPUs are keyed by UUID (NVML ignores CUDA_VISIBLE_DEVICES, so indexes differ from what a
serving process sees). A field the GPU does not support is None, never 0. When NVML loses the
GPU or the driver, the adapter shuts down and initialises again with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pynvml
from pynvml import NVMLError

log = logging.getLogger("mlops_watchdog.nvml")
# NVML must be shut down and initialised again after these.
REINIT_ERRORS = frozenset(
    {
        pynvml.NVML_ERROR_GPU_IS_LOST,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_UNINITIALIZED,
    }
)
# The field is absent on this GPU or driver, or we may not read it: leave it out.
ABSENT_ERRORS = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_NOT_FOUND,
        pynvml.NVML_ERROR_NO_DATA,
        pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
    }
)
# nvmlClocksEventReason* bits, named for operators.
CLOCK_EVENT_REASONS = {
    "gpu_idle": 0x1,
    "applications_clocks_setting": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal_slowdown": 0x20,
    "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80,
    "display_clock_setting": 0x100,
}
BACKOFF_S = (1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 300.0)
# Used VRAM that moved this much since the process list was read has it read again at once:
# the leak detector must see a process that came (a model load) in the sample that shows it.
PROCESSES_REREAD_BYTES = 256 << 20
XID_WAIT_MS = 1000


class NvmlOff(Exception):
    """NVML cannot be used on this machine: no driver, no library, or no GPU it can read."""


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used_bytes: int | None  # None: the driver does not say (e.g. under MIG without privileges)


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one moment. None means NVML does not support the field here."""

    uuid: str
    index: int
    name: str
    at: float  # Unix seconds
    util_gpu: float | None = None  # ratio 0..1
    util_memory: float | None = None
    memory_total: int | None = None  # bytes; used excludes `reserved` (nvmlMemory_v2)
    memory_used: int | None = None
    memory_free: int | None = None
    memory_reserved: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    energy_j: float | None = None  # since the driver loaded
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    clock_events: frozenset[str] | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_aggregate: int | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    retired_pages_dbe: int | None = None
    pcie_tx_bytes_s: float | None = None
    pcie_rx_bytes_s: float | None = None
    performance_state: int | None = None
    fan_ratio: float | None = None
    mig_enabled: bool | None = None
    processes: tuple[GpuProcess, ...] | None = None
    # NVML's own sample buffers since the previous read: utilisation about five times a second
    # ((Unix seconds, ratio)), and each process's SM utilisation about once a second ((pid, Unix
    # seconds, ratio); only processes that ran a kernel). A once-a-second utilisation reading
    # of a GPU that answers a small model in 40 ms is 0 % most of the time; these are not.
    util_samples: tuple[tuple[float, float], ...] | None = None
    process_sm: tuple[tuple[int, float, float], ...] | None = None
    unsupported: frozenset[str] = frozenset()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with unsupported fields left out."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name in ("util_samples", "process_sm"):
                continue
            if name == "unsupported" or (name == "clock_events" and value is not None):
                out[name] = sorted(value)
            elif name == "processes" and value is not None:
                out[name] = [p.__dict__ for p in value]
            elif value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Xid:
    uuid: str
    code: int
    at: float


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    name: str
    mig_enabled: bool | None
    power_limit_w: float | None
    absent: set[str] = field(default_factory=set)  # fields NVML refused this session
    slow: dict[str, Any] = field(default_factory=dict)  # the last slow-tier values
    slow_used: int | None = None  # used VRAM when the slow tier was last read
    buffers_seen: dict[str, int] = field(default_factory=dict)  # newest timestamp read, µs
    no_buffers: set[str] = field(default_factory=set)  # sample buffers NVML refused
    pcie: dict[str, Any] = field(default_factory=dict)  # the last PCIe rates
    pcie_counted: tuple[float, int, int] | None = None  # (at, tx bytes, rx bytes)


@dataclass
class Snapshot:
    at: float
    gpus: list[GpuSample]
    driver: str | None = None


class Nvml:
    """One NVML session: `sample()` reads every GPU; it re-initialises when the GPU or driver
    goes away, and answers None while NVML is off."""

    def __init__(
        self,
        lib: ModuleType | Any = None,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        slow_every: int = 6,
        pcie_every: int = 60,
    ):
        self.lib = lib if lib is not None else pynvml
        self.slow_every = max(1, slow_every)
        self.pcie_every = max(1, pcie_every)
        self._samples = 0
        self._names: dict[int, str] = {}  # pid: process name, while the pid is on a GPU
        self.energy_seen: dict[str, float] = {}  # UUID: the last energy counter read, joules
        self.wall = wall
        self.monotonic = monotonic
        self.devices: list[_Device] = []
        self.driver: str | None = None
        self.up = False
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str | None = None
        self._said_off = False
        self._warned: set[tuple[str, str]] = set()
        self._xids: list[Xid] = []
        self._xid_lock = threading.Lock()
        self._xid_stop = threading.Event()
        self._xid_thread: threading.Thread | None = None
        self.xid_registered: dict[str, bool] = {}  # uuid: events registered

    # --- session -------------------------------------------------------------------------------

    def start(self) -> bool:
        """Initialise NVML and list the GPUs; False (and one log line) when it cannot."""
        try:
            self.lib.nvmlInit()
        except NVMLError as exc:
            self._off(_why(exc))
            return False
        try:
            self.driver = _text(self.lib.nvmlSystemGetDriverVersion())
            self.devices = [self._device(i) for i in range(self.lib.nvmlDeviceGetCount())]
        except NVMLError as exc:
            self._shutdown()
            self._off(_why(exc))
            return False
        self.up = True
        self.failures = 0
        self.last_error = None
        if self._said_off:
            log.info("NVML is back: %d GPU(s), driver %s", len(self.devices), self.driver)
        self._said_off = False
        return True

    def _device(self, index: int) -> _Device:
        lib = self.lib
        handle = lib.nvmlDeviceGetHandleByIndex(index)
        mig = _optional(lambda: lib.nvmlDeviceGetMigMode(handle))
        limit = _optional(lambda: lib.nvmlDeviceGetEnforcedPowerLimit(handle))
        return _Device(
            index=index,
            handle=handle,
            uuid=_text(lib.nvmlDeviceGetUUID(handle)),
            name=_text(lib.nvmlDeviceGetName(handle)),
            mig_enabled=None if mig is None else bool(mig[0]),
            power_limit_w=None if limit is None else limit / 1000,
        )

    def _off(self, why: str) -> None:
        self.up = False
        self.last_error = why
        delay = BACKOFF_S[min(self.failures, len(BACKOFF_S) - 1)]
        self.failures += 1
        self.retry_at = self.monotonic() + delay
        if not self._said_off:
            log.warning("GPU telemetry off: %s; probing goes on (retrying with backoff)", why)
            self._said_off = True

    def _shutdown(self) -> None:
        with contextlib.suppress(NVMLError):
            self.lib.nvmlShutdown()
        self.devices = []

    def close(self) -> None:
        self.stop_xid_watch()
        if self.up:
            self._shutdown()
        self.up = False

    # --- sampling ------------------------------------------------------------------------------

    def sample(self, full: bool = False, buffers: Collection[str] | None = None) -> Snapshot | None:
        """Every GPU now, or None while NVML is off (between backoff retries).

        NVML's sample buffers (utilisation about five times a second, and per process) are read
        for the GPUs in `buffers` only, None meaning all: each read costs about 2.5 ms of CPU on
        an H200, forty times the rest of a sample, and a later read still returns what the
        buffer kept since the last one. Where they are not read, the sample holds `()`.

        Error counters and the process list are read every `slow_every` samples, and at once
        when used VRAM moved by PROCESSES_REREAD_BYTES since they were; PCIe every
        `pcie_every` (a rate needs two readings, so it appears from the second), and both are
        carried in between.
        The energy counter, which costs ~6 ms of CPU per read on an H100 (more than the rest of
        a sample together), is read only when `full` (one-off reads) or through `energy_j()`.
        """
        if not self.up and (self.monotonic() < self.retry_at or not self.start()):
            return None
        try:
            at = self.wall()
            due = {
                "slow": full or self._samples % self.slow_every == 0,
                "pcie": full or self._samples % self.pcie_every == 0,
                "full": full,
            }
            self._samples += 1
            gpus = [
                self._read(d, at, buffers=buffers is None or d.uuid in buffers, **due)
                for d in self.devices
            ]
            seen = {p.pid for g in gpus for p in g.processes or ()}
            self._names = {pid: n for pid, n in self._names.items() if pid in seen}
            return Snapshot(at, gpus, self.driver)
        except NVMLError as exc:
            if exc.value not in REINIT_ERRORS:
                raise
            log.error("NVML: %s; shutting down and initialising again", _why(exc))
            self._shutdown()
            self._off(_why(exc))
            return None

    def energy_j(self, uuids: Iterable[str]) -> float | None:
        """Total energy counter of these GPUs, for energy-per-token windows; None if unknown."""
        if not self.up:
            return None
        wanted = set(uuids)
        total = 0.0
        try:
            for d in self.devices:
                if d.uuid in wanted:
                    joules = self.lib.nvmlDeviceGetTotalEnergyConsumption(d.handle) / 1000
                    self.energy_seen[d.uuid] = joules
                    total += joules
        except NVMLError:
            return None
        return total

    def utilization(self, uuids: Iterable[str]) -> dict[str, float]:
        """GPU utilisation (0..1) of these GPUs now, for the probe-window reads."""
        wanted = set(uuids)
        out = {}
        for d in self.devices if self.up else []:
            if d.uuid in wanted:
                try:
                    out[d.uuid] = self.lib.nvmlDeviceGetUtilizationRates(d.handle).gpu / 100
                except NVMLError:
                    continue
        return out

    def _read(
        self, d: _Device, at: float, slow: bool, pcie: bool, full: bool, buffers: bool
    ) -> GpuSample:
        lib, h = self.lib, d.handle

        def read(name: str, call: Callable[[], Any]) -> Any:
            if name in d.absent:  # asked once per session: some refusals cost 0.4 ms each
                return None
            try:
                return call()
            except NVMLError as exc:
                if exc.value in REINIT_ERRORS:
                    raise
                if exc.value in ABSENT_ERRORS:
                    d.absent.add(name)
                elif (d.uuid, name) not in self._warned:
                    self._warned.add((d.uuid, name))
                    log.warning("NVML %s on %s: %s; left out", name, d.uuid, _why(exc))
                return None

        util = read("utilization", lambda: lib.nvmlDeviceGetUtilizationRates(h))
        memory = read("memory", lambda: _memory(lib, h))
        reasons = read("clock_events", lambda: lib.nvmlDeviceGetCurrentClocksEventReasons(h))
        fast: dict[str, Any] = {
            "util_gpu": None if util is None else util.gpu / 100,
            "util_memory": None if util is None else util.memory / 100,
            "memory_total": None if memory is None else memory[0],
            "memory_used": None if memory is None else memory[1],
            "memory_free": None if memory is None else memory[2],
            "memory_reserved": None if memory is None else memory[3],
            "temperature_c": read(
                "temperature", lambda: lib.nvmlDeviceGetTemperature(h, lib.NVML_TEMPERATURE_GPU)
            ),
            "power_w": _scaled(read("power", lambda: lib.nvmlDeviceGetPowerUsage(h)), 1e-3),
            "sm_clock_hz": _scaled(
                read("sm_clock", lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_SM)), 1e6
            ),
            "memory_clock_hz": _scaled(
                read("memory_clock", lambda: lib.nvmlDeviceGetClockInfo(h, lib.NVML_CLOCK_MEM)),
                1e6,
            ),
            "clock_events": None
            if reasons is None
            else frozenset(n for n, bit in CLOCK_EVENT_REASONS.items() if reasons & bit),
            "performance_state": read(
                "performance_state", lambda: lib.nvmlDeviceGetPerformanceState(h)
            ),
            "fan_ratio": _scaled(read("fan", lambda: lib.nvmlDeviceGetFanSpeed(h)), 0.01),
        }
        used = fast["memory_used"]
        moved = (
            used is not None
            and d.slow_used is not None
            and abs(used - d.slow_used) >= PROCESSES_REREAD_BYTES
        )
        if slow or not d.slow or moved:
            d.slow = self._read_slow(d, read)
            d.slow_used = used
        if pcie or not d.pcie:
            d.pcie = self._pcie(d, at, read, full)
        energy = None
        if full:
            energy = _scaled(
                read("energy", lambda: lib.nvmlDeviceGetTotalEnergyConsumption(h)), 1e-3
            )
        return GpuSample(
            uuid=d.uuid,
            index=d.index,
            name=d.name,
            at=at,
            util_samples=self._util_buffer(d) if buffers else _unread(d, "util"),
            process_sm=self._process_buffer(d) if buffers else _unread(d, "process"),
            power_limit_w=d.power_limit_w,
            energy_j=energy,
            mig_enabled=d.mig_enabled,
            unsupported=frozenset(d.absent),
            **fast,
            **d.slow,
            **d.pcie,
        )

    def _util_buffer(self, d: _Device) -> tuple[tuple[float, float], ...] | None:
        found = self._since(d, "util")
        if found is None:
            return None
        return tuple((s.timeStamp / 1e6, s.sampleValue.uiVal / 100) for s in found)

    def _process_buffer(self, d: _Device) -> tuple[tuple[int, float, float], ...] | None:
        found = self._since(d, "process")
        if found is None:
            return None
        return tuple((s.pid, s.timeStamp / 1e6, s.smUtil / 100) for s in found)

    def _since(self, d: _Device, which: str) -> list[Any] | None:
        """A sample buffer's entries newer than the last read; None where NVML keeps none
        (asked once per session). They are the detectors' evidence, not sample fields, so
        `unsupported` does not list them."""
        if which in d.no_buffers:
            return None
        lib, since = self.lib, d.buffers_seen.get(which, 0)
        try:
            if which == "util":
                _, found = lib.nvmlDeviceGetSamples(
                    d.handle, lib.NVML_GPU_UTILIZATION_SAMPLES, since
                )
            else:
                found = lib.nvmlDeviceGetProcessUtilization(d.handle, since)
        except NVMLError as exc:
            # pynvml raises "Success" for an empty process buffer; NVML says NOT_FOUND.
            if exc.value in (lib.NVML_SUCCESS, lib.NVML_ERROR_NOT_FOUND):
                return []
            if exc.value in REINIT_ERRORS:
                raise
            d.no_buffers.add(which)
            return None
        found = list(found)
        if found:
            d.buffers_seen[which] = max(since, *(s.timeStamp for s in found))
        return found

    def _read_slow(
        self, d: _Device, read: Callable[[str, Callable[[], Any]], Any]
    ) -> dict[str, Any]:
        """Error counters and the process list: slow to change, and the process list alone
        costs as much as the rest of a sample on a busy GPU."""
        lib, h = self.lib, d.handle
        processes = read("processes", lambda: lib.nvmlDeviceGetComputeRunningProcesses(h))
        remapped = read("remapped_rows", lambda: lib.nvmlDeviceGetRemappedRows(h))
        retired = read(
            "retired_pages_dbe",
            lambda: lib.nvmlDeviceGetRetiredPages(
                h, lib.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
            ),
        )
        return {
            "processes": None if processes is None else self._processes(processes),
            "ecc_uncorrected_volatile": read(
                "ecc_uncorrected_volatile",
                lambda: lib.nvmlDeviceGetTotalEccErrors(
                    h, lib.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, lib.NVML_VOLATILE_ECC
                ),
            ),
            "ecc_corrected_aggregate": read(
                "ecc_corrected_aggregate",
                lambda: lib.nvmlDeviceGetTotalEccErrors(
                    h, lib.NVML_MEMORY_ERROR_TYPE_CORRECTED, lib.NVML_AGGREGATE_ECC
                ),
            ),
            "remapped_rows_correctable": None if remapped is None else int(remapped[0]),
            "remapped_rows_uncorrectable": None if remapped is None else int(remapped[1]),
            "remap_pending": None if remapped is None else bool(remapped[2]),
            "remap_failed": None if remapped is None else bool(remapped[3]),
            "retired_pages_dbe": None if retired is None else len(retired),
        }

    def _pcie(
        self, d: _Device, at: float, read: Callable[[str, Callable[[], Any]], Any], full: bool
    ) -> dict[str, Any]:
        """PCIe bytes/s, averaged since the last reading. nvmlDeviceGetPcieThroughput waits
        ~20 ms per direction inside NVML, so samples difference the cumulative byte counters
        (one call of 0.3-0.5 ms on an H100, hence its own, slower cadence)."""
        lib, h = self.lib, d.handle
        rates: tuple[float | None, float | None] = (None, None)  # a rate needs two readings
        counted = None if full else read("pcie_counters", lambda: _pcie_counters(lib, h))
        if counted is not None:
            previous, d.pcie_counted = d.pcie_counted, (at, *counted)
            if previous is not None and at > previous[0]:
                seconds = at - previous[0]
                rates = (
                    max(counted[0] - previous[1], 0) / seconds,
                    max(counted[1] - previous[2], 0) / seconds,
                )
        else:
            tx = read(
                "pcie_tx", lambda: lib.nvmlDeviceGetPcieThroughput(h, lib.NVML_PCIE_UTIL_TX_BYTES)
            )
            rx = read(
                "pcie_rx", lambda: lib.nvmlDeviceGetPcieThroughput(h, lib.NVML_PCIE_UTIL_RX_BYTES)
            )
            rates = (_scaled(tx, 1024), _scaled(rx, 1024))
        return {"pcie_tx_bytes_s": rates[0], "pcie_rx_bytes_s": rates[1]}

    def _processes(self, running: list[Any]) -> tuple[GpuProcess, ...]:
        out = []
        for p in running:
            pid = int(p.pid)
            if pid not in self._names:  # a name lookup per process per sample adds up
                try:
                    self._names[pid] = _text(self.lib.nvmlSystemGetProcessName(pid)).rsplit("/", 1)[
                        -1
                    ]
                except NVMLError:
                    self._names[pid] = ""  # gone already, or another PID namespace
            used = getattr(p, "usedGpuMemory", None)
            out.append(GpuProcess(pid, self._names[pid], None if used is None else int(used)))
        return tuple(out)

    # --- XID events ----------------------------------------------------------------------------

    def start_xid_watch(self) -> None:
        """Watch critical XID events in a thread; `xids()` hands them over."""
        if not self.up or self._xid_thread is not None:
            return
        lib = self.lib
        try:
            events = lib.nvmlEventSetCreate()
        except NVMLError as exc:
            log.warning("XID events not watched: %s", _why(exc))
            return
        for d in self.devices:
            try:
                lib.nvmlDeviceRegisterEvents(d.handle, lib.nvmlEventTypeXidCriticalError, events)
                self.xid_registered[d.uuid] = True
            except NVMLError as exc:
                self.xid_registered[d.uuid] = False
                log.warning("XID events not watched on %s: %s", d.uuid, _why(exc))
        if not any(self.xid_registered.values()):
            lib.nvmlEventSetFree(events)
            return
        self._xid_stop.clear()
        self._xid_thread = threading.Thread(
            target=self._watch, args=(events,), name="nvml-xid", daemon=True
        )
        self._xid_thread.start()

    def _watch(self, events: Any) -> None:
        lib = self.lib
        try:
            while not self._xid_stop.is_set():
                try:
                    data = lib.nvmlEventSetWait_v2(events, XID_WAIT_MS)
                except NVMLError as exc:
                    if exc.value == lib.NVML_ERROR_TIMEOUT:
                        continue
                    log.error("XID watch stopped: %s", _why(exc))
                    return
                try:  # NVML is thread-safe; the event names its device by handle
                    uuid = _text(lib.nvmlDeviceGetUUID(data.device))
                except NVMLError:
                    uuid = "unknown"
                with self._xid_lock:
                    self._xids.append(Xid(uuid, int(data.eventData), self.wall()))
        finally:
            with contextlib.suppress(NVMLError):
                lib.nvmlEventSetFree(events)

    def xids(self) -> list[Xid]:
        """XID events seen since the last call."""
        with self._xid_lock:
            taken, self._xids = self._xids, []
        return taken

    def stop_xid_watch(self) -> None:
        if self._xid_thread is not None:
            self._xid_stop.set()
            self._xid_thread.join(timeout=(XID_WAIT_MS / 1000) * 3)
            self._xid_thread = None


def _memory(lib: Any, handle: Any) -> tuple[int, int, int, int | None]:
    """(total, used, free, reserved) from nvmlMemory_v2; v1 on drivers without it (no reserved,
    and its used includes the reserved memory)."""
    try:
        m = lib.nvmlDeviceGetMemoryInfo(handle, version=lib.nvmlMemory_v2)
        return int(m.total), int(m.used), int(m.free), int(m.reserved)
    except NVMLError as exc:
        if exc.value not in (
            lib.NVML_ERROR_FUNCTION_NOT_FOUND,
            lib.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
            lib.NVML_ERROR_NOT_SUPPORTED,
        ):
            raise
    m = lib.nvmlDeviceGetMemoryInfo(handle)
    return int(m.total), int(m.used), int(m.free), None


def _pcie_counters(lib: Any, handle: Any) -> tuple[int, int]:
    """Cumulative PCIe (tx, rx) bytes through nvmlDeviceGetFieldValues."""
    values = lib.nvmlDeviceGetFieldValues(
        handle, [lib.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, lib.NVML_FI_DEV_PCIE_COUNT_RX_BYTES]
    )
    for v in values:
        if v.nvmlReturn != lib.NVML_SUCCESS:
            raise NVMLError(v.nvmlReturn)
    return int(values[0].value.ullVal), int(values[1].value.ullVal)


def _optional(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except NVMLError as exc:
        if exc.value in REINIT_ERRORS:
            raise
        return None


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _why(exc: NVMLError) -> str:
    return f"{exc} (NVML error {exc.value})"


def _unread(d: _Device, which: str) -> tuple[()] | None:
    """A sample buffer not read this time: empty where NVML keeps one, None where it keeps none."""
    return None if which in d.no_buffers else ()

"""The NVML adapter on a real NVIDIA GPU: against nvidia-smi, idle and under a bf16 matmul load.

Run on an idle GPU (pick one with CUDA_VISIBLE_DEVICES: the load goes to CUDA device 0):
    python3 -m pytest --noconftest -c tests/gpu/pytest.ini tests/gpu
Tests run in file order: the idle ones first, then the ones that share one load.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pynvml
import pytest

from tests.gpu import load, smi
from watchdog.gpu.nvml import ABSENT_ERRORS, CLOCK_EVENT_REASONS, GpuSample, Nvml, Snapshot

pytestmark = pytest.mark.filterwarnings("error")

MiB = 1 << 20
TORCH_PYTHON = os.environ.get("GPU_TEST_TORCH_PYTHON", sys.executable)
LOAD_S = 120.0  # the load's own bound; the fixture stops it sooner
BUSY_TIMEOUT_S = 30.0
POWER_SETTLE_S = 2.0  # NVML and nvidia-smi report power averaged over about one second
ATTEMPTS = 3  # against nvidia-smi: a value may move between the two reads around our sample
COMPARED = (*smi.QUERY, "memory.free")  # free tells v1's memory.used from v2's

# Each name the adapter lists in `unsupported`, the raw pynvml call behind it, and its fields.
FIELDS: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "utilization": (pynvml.nvmlDeviceGetUtilizationRates, ("util_gpu", "util_memory")),
    "memory": (
        lambda h: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2),
        ("memory_total", "memory_used", "memory_free", "memory_reserved"),
    ),
    "clock_events": (pynvml.nvmlDeviceGetCurrentClocksEventReasons, ("clock_events",)),
    "remapped_rows": (
        pynvml.nvmlDeviceGetRemappedRows,
        (
            "remapped_rows_correctable",
            "remapped_rows_uncorrectable",
            "remap_pending",
            "remap_failed",
        ),
    ),
    "retired_pages_dbe": (
        lambda h: pynvml.nvmlDeviceGetRetiredPages(
            h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR
        ),
        ("retired_pages_dbe",),
    ),
    "processes": (pynvml.nvmlDeviceGetComputeRunningProcesses, ("processes",)),
    "temperature": (
        lambda h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        ("temperature_c",),
    ),
    "power": (pynvml.nvmlDeviceGetPowerUsage, ("power_w",)),
    "energy": (pynvml.nvmlDeviceGetTotalEnergyConsumption, ("energy_j",)),
    "sm_clock": (
        lambda h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
        ("sm_clock_hz",),
    ),
    "memory_clock": (
        lambda h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
        ("memory_clock_hz",),
    ),
    "ecc_uncorrected_volatile": (
        lambda h: pynvml.nvmlDeviceGetTotalEccErrors(
            h, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC
        ),
        ("ecc_uncorrected_volatile",),
    ),
    "ecc_corrected_aggregate": (
        lambda h: pynvml.nvmlDeviceGetTotalEccErrors(
            h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC
        ),
        ("ecc_corrected_aggregate",),
    ),
    "pcie_tx": (
        lambda h: pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_TX_BYTES),
        ("pcie_tx_bytes_s",),
    ),
    "pcie_rx": (
        lambda h: pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_RX_BYTES),
        ("pcie_rx_bytes_s",),
    ),
    "performance_state": (pynvml.nvmlDeviceGetPerformanceState, ("performance_state",)),
    "fan": (pynvml.nvmlDeviceGetFanSpeed, ("fan_ratio",)),
}


@pytest.fixture(scope="module")
def nvml() -> Iterator[Nvml]:
    adapter = Nvml()
    if not adapter.start():
        pytest.fail(
            f"NVML is off here ({adapter.last_error}): tests/gpu needs an NVIDIA GPU and driver",
            pytrace=False,
        )
    yield adapter
    adapter.close()


def take(nvml: Nvml) -> Snapshot:
    """A full sample: every field, as `mlops-watchdog gpu` reads it."""
    snapshot = nvml.sample(full=True)
    assert snapshot is not None, f"NVML went off: {nvml.last_error}"
    return snapshot


def gpu(snapshot: Snapshot, uuid: str) -> GpuSample:
    found = [g for g in snapshot.gpus if g.uuid == uuid]
    assert len(found) == 1, f"{uuid} not once in {[g.uuid for g in snapshot.gpus]}"
    return found[0]


@pytest.fixture(scope="module")
def idle(nvml: Nvml) -> Snapshot:
    """Taken before any load starts: the baseline for 'rises under load'."""
    return take(nvml)


@pytest.fixture(scope="module")
def busy(nvml: Nvml, idle: Snapshot) -> Iterator[load.Load]:
    """One load for the module's load tests, running flat out once this yields."""
    started = load.start(TORCH_PYTHON, LOAD_S)
    try:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while (gpu(take(nvml), started.uuid).util_gpu or 0) < 0.9:
            assert time.monotonic() < deadline, "the load never took the GPU to 90% utilisation"
            time.sleep(0.25)
        time.sleep(POWER_SETTLE_S)
        yield started
    finally:
        started.stop()


def within(ours: float | None, before: float | None, after: float | None, slack: float) -> None:
    """Ours lies between nvidia-smi's reads before and after it, widened by `slack`."""
    assert ours is not None and before is not None and after is not None
    low, high = min(before, after) - slack, max(before, after) + slack
    assert low <= ours <= high, f"{ours} outside nvidia-smi's [{before}, {after}] ± {slack}"


def agree_with_smi(nvml: Nvml) -> None:
    before = smi.query(COMPARED)
    snapshot = take(nvml)
    after = smi.query(COMPARED)
    assert set(before) == {g.uuid for g in snapshot.gpus}
    for g in snapshot.gpus:
        b, a = before[g.uuid], after[g.uuid]
        total = smi.number(b, "memory.total")
        assert g.memory_total is not None and g.memory_total // MiB == total
        assert g.memory_used is not None and g.memory_reserved is not None
        assert g.memory_free is not None
        used_b, used_a = smi.number(b, "memory.used"), smi.number(a, "memory.used")
        free_b, free_a = smi.number(b, "memory.free"), smi.number(a, "memory.free")
        assert total is not None and used_b is not None and free_b is not None
        within(g.memory_free / MiB, free_b, free_a, 2)
        if abs(used_b + free_b - total) <= 2:
            # An nvidia-smi whose memory.used is nvmlMemory v1: reserved memory counted as used.
            within((g.memory_used + g.memory_reserved) / MiB, used_b, used_a, 2)
        else:
            # Driver 580's nvidia-smi: memory.used is v2's (reserved is its own field).
            within(g.memory_used / MiB, used_b, used_a, 2)
            within(g.memory_reserved / MiB, total - used_b - free_b, total - used_b - free_b, 2)
        temp_b, temp_a = smi.number(b, "temperature.gpu"), smi.number(a, "temperature.gpu")
        within(g.temperature_c, temp_b, temp_a, 3)
        util = None if g.util_gpu is None else g.util_gpu * 100
        within(util, smi.number(b, "utilization.gpu"), smi.number(a, "utilization.gpu"), 10)
        power_b, power_a = smi.number(b, "power.draw"), smi.number(a, "power.draw")
        assert power_b is not None and power_a is not None
        within(g.power_w, power_b, power_a, max(30.0, 0.1 * max(power_b, power_a)))
        sm_b, sm_a = smi.number(b, "clocks.sm"), smi.number(a, "clocks.sm")
        assert sm_b is not None and sm_a is not None and g.sm_clock_hz is not None
        within(g.sm_clock_hz / 1e6, sm_b, sm_a, max(100.0, 0.1 * max(sm_b, sm_a)))
        reasons_b = smi.bits(b, "clocks_event_reasons.active")
        reasons_a = smi.bits(a, "clocks_event_reasons.active")
        assert g.clock_events is not None and reasons_b is not None and reasons_a is not None
        ours = sum(CLOCK_EVENT_REASONS[name] for name in g.clock_events)
        known = sum(CLOCK_EVENT_REASONS.values())
        assert ours in {reasons_b & known, reasons_a & known}, (
            f"{sorted(g.clock_events)} vs nvidia-smi {reasons_b:#x}, {reasons_a:#x}"
        )


def agree_with_smi_in_one_of(attempts: int, nvml: Nvml) -> None:
    for attempt in range(attempts):
        try:
            agree_with_smi(nvml)
            return
        except AssertionError:
            if attempt == attempts - 1:
                raise


# --- idle ----------------------------------------------------------------------------------------


def test_telemetry_is_up_and_keys_every_gpu_by_a_uuid_nvidia_smi_lists(
    nvml: Nvml, idle: Snapshot
) -> None:
    listed = smi.query(("uuid", "index", "name", "driver_version"))
    assert nvml.up and idle.gpus, "NVML is up but lists no GPU"
    assert [(g.index, g.uuid) for g in idle.gpus] == sorted(
        (int(row["index"] or -1), uuid) for uuid, row in listed.items()
    )
    for g in idle.gpus:
        assert g.uuid.startswith("GPU-") and g.name == listed[g.uuid]["name"]
    assert idle.driver == next(iter(listed.values()))["driver_version"]


def test_not_supported_fields_are_none_and_listed_never_zero(idle: Snapshot) -> None:
    for g in idle.gpus:
        handle = pynvml.nvmlDeviceGetHandleByIndex(g.index)
        for name, (call, fields) in FIELDS.items():
            try:
                call(handle)
                absent = False
            except pynvml.NVMLError as exc:
                assert exc.value in ABSENT_ERRORS, f"{name} on {g.uuid}: {exc}"
                absent = True
            values = {f: getattr(g, f) for f in fields}
            if absent:
                assert name in g.unsupported, f"{name} refused by NVML but not listed"
                assert all(v is None for v in values.values()), values
                assert not set(fields) & set(g.as_dict())
            else:
                assert name not in g.unsupported
                assert all(v is not None for v in values.values()), values
        assert g.unsupported <= set(FIELDS)


def test_idle_values_agree_with_nvidia_smi(nvml: Nvml, idle: Snapshot) -> None:
    agree_with_smi_in_one_of(ATTEMPTS, nvml)


def test_xid_events_register_on_every_gpu_and_stop_cleanly(
    nvml: Nvml, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mlops_watchdog.nvml")
    nvml.start_xid_watch()
    try:
        assert nvml.xid_registered == {g.uuid: True for g in take(nvml).gpus}
        assert [t for t in threading.enumerate() if t.name == "nvml-xid"]
        time.sleep(1.5)  # at least one whole wait (XID_WAIT_MS) inside NVML
    finally:
        started = time.monotonic()
        nvml.stop_xid_watch()
        stopped_in = time.monotonic() - started
    assert not [t for t in threading.enumerate() if t.name == "nvml-xid"]
    assert stopped_in < 2.0, f"stop_xid_watch took {stopped_in:.1f} s"
    assert nvml.xids() == [], "this GPU reported XID errors: look at `dmesg`"
    assert caplog.records == []
    assert take(nvml).gpus  # NVML still answers after the event set is freed


# --- under load ----------------------------------------------------------------------------------


def test_a_bf16_matmul_load_raises_utilisation_power_and_memory(
    nvml: Nvml, idle: Snapshot, busy: load.Load
) -> None:
    before, now = gpu(idle, busy.uuid), gpu(take(nvml), busy.uuid)
    assert before.util_gpu is not None and before.util_gpu <= 0.2, (
        "the GPU was busy before the test"
    )
    assert now.util_gpu is not None and now.util_gpu >= 0.9
    assert before.power_w is not None and now.power_w is not None
    rise = 0.2 * now.power_limit_w if now.power_limit_w else 0.5 * before.power_w
    assert now.power_w >= before.power_w + rise, (before.power_w, now.power_w, now.power_limit_w)
    assert before.memory_used is not None and now.memory_used is not None
    assert now.memory_used - before.memory_used >= busy.reserved_bytes


def test_the_loading_process_is_listed_with_the_vram_it_holds(nvml: Nvml, busy: load.Load) -> None:
    processes = {p.pid: p for p in gpu(take(nvml), busy.uuid).processes or ()}
    assert busy.pid in processes, f"pid {busy.pid} not in {processes}"
    process = processes[busy.pid]
    assert process.used_bytes is not None and process.used_bytes >= busy.reserved_bytes
    assert busy.reserved_bytes >= load.HOLD_GIB << 30
    assert "python" in process.name.lower(), process.name


def test_values_under_load_agree_with_nvidia_smi(nvml: Nvml, busy: load.Load) -> None:
    agree_with_smi_in_one_of(ATTEMPTS, nvml)


def test_energy_rises_under_load_and_energy_j_matches_the_sample(
    nvml: Nvml, idle: Snapshot, busy: load.Load
) -> None:
    at_idle = gpu(idle, busy.uuid).energy_j
    first = gpu(take(nvml), busy.uuid)
    time.sleep(2.0)
    second = gpu(take(nvml), busy.uuid)
    assert at_idle is not None and first.energy_j is not None and second.energy_j is not None
    assert at_idle <= first.energy_j < second.energy_j
    # The counter's rise over two seconds is the power NVML reports, give or take.
    mean_w = (second.energy_j - first.energy_j) / (second.at - first.at)
    assert first.power_w is not None and second.power_w is not None
    reported_w = (first.power_w + second.power_w) / 2
    assert abs(mean_w - reported_w) <= max(50.0, 0.2 * reported_w), (mean_w, reported_w)
    # energy_j() right after a sample: no more than the GPU can draw in between.
    started = time.monotonic()
    sampled = gpu(take(nvml), busy.uuid)
    total = nvml.energy_j([busy.uuid])
    elapsed = time.monotonic() - started
    assert sampled.energy_j is not None and total is not None
    most_w = sampled.power_limit_w or 1000.0
    assert 0 <= total - sampled.energy_j <= most_w * (elapsed + 0.1), (total, sampled.energy_j)


def test_periodic_samples_rate_pcie_from_counters_and_skip_energy(busy: load.Load) -> None:
    """The daemon's samples: the energy counter is left to probe runs, PCIe comes from the
    cumulative byte counters (nvmlDeviceGetPcieThroughput waits ~20 ms a direction)."""
    periodic = Nvml(slow_every=1, pcie_every=1)
    assert periodic.start(), periodic.last_error
    try:
        first = periodic.sample()
        time.sleep(1.0)
        second = periodic.sample()
    finally:
        periodic.close()
    assert first is not None and second is not None
    before, after = gpu(first, busy.uuid), gpu(second, busy.uuid)
    assert before.energy_j is None and after.energy_j is None
    assert before.pcie_tx_bytes_s is None  # one counter reading: no rate yet
    assert after.pcie_tx_bytes_s is not None and after.pcie_rx_bytes_s is not None
    assert 0 <= after.pcie_tx_bytes_s < 128e9 and 0 <= after.pcie_rx_bytes_s < 128e9

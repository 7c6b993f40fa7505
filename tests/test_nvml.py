"""The NVML adapter over the recorded H100 trace: fields, NOT_SUPPORTED, lost GPUs, no driver."""

from __future__ import annotations

import itertools
import logging

import pynvml
import pytest

from tests.fakenvml import PHASES, TRACE, UUID, FakeGpu, FakeNvml, samples
from watchdog.gpu.nvml import BACKOFF_S, Nvml


class Ticks:
    """Monotonic time that moves only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def adapter(fake: FakeNvml) -> tuple[Nvml, Ticks]:
    ticks = Ticks()
    return Nvml(lib=fake, wall=lambda: 1_795_400_000.0, monotonic=ticks), ticks


def test_idle_sample_matches_the_recording() -> None:
    nvml, _ = adapter(FakeNvml())
    snapshot = nvml.sample(full=True)
    assert snapshot is not None and snapshot.driver == TRACE["meta"]["driver"]
    (gpu,) = snapshot.gpus
    raw = PHASES["idle"][0]
    assert gpu.uuid == UUID and gpu.index == 0 and gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.util_gpu == 0 and gpu.util_memory == 0
    # nvmlMemory_v2: used excludes the reserved memory that v1 counts as used.
    assert gpu.memory_used == raw["mem_v2"]["used"] == 0
    assert gpu.memory_reserved == raw["mem_v2"]["reserved"]
    assert gpu.memory_total == raw["mem_v2"]["total"] and gpu.memory_free == raw["mem_v2"]["free"]
    assert gpu.temperature_c == raw["temp_c"]
    assert gpu.power_w == pytest.approx(raw["power_mw"] / 1000)
    assert gpu.power_limit_w == 700.0
    assert gpu.energy_j == pytest.approx(raw["energy_mj"] / 1000)
    assert gpu.sm_clock_hz == raw["sm_clock_mhz"] * 1e6
    assert gpu.memory_clock_hz == raw["mem_clock_mhz"] * 1e6
    assert gpu.clock_events == {"gpu_idle"}
    assert gpu.pcie_tx_bytes_s == raw["pcie_tx_kbs"] * 1024
    assert gpu.performance_state == 0 and gpu.mig_enabled is False
    assert gpu.ecc_uncorrected_volatile == 0 and gpu.ecc_corrected_aggregate == 0
    assert (gpu.remap_pending, gpu.remap_failed) == (False, False)
    assert gpu.processes == ()


def test_not_supported_fields_are_left_out_not_zero() -> None:
    nvml, _ = adapter(FakeNvml())
    snapshot = nvml.sample()
    assert snapshot is not None
    (gpu,) = snapshot.gpus
    assert gpu.fan_ratio is None and gpu.retired_pages_dbe is None
    assert gpu.unsupported == {"fan", "retired_pages_dbe"}
    shown = gpu.as_dict()
    assert "fan_ratio" not in shown and "retired_pages_dbe" not in shown
    assert shown["unsupported"] == ["fan", "retired_pages_dbe"]


def test_power_capped_load_and_the_leaking_process() -> None:
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load", "matmul_load_with_vram_leak"))])
    fake.gpus[0].process_names[396] = "/usr/bin/python3.11"
    nvml, _ = adapter(fake)
    fake.step(3)
    loaded = nvml.sample()
    assert loaded is not None
    assert loaded.gpus[0].clock_events == {"sw_power_cap"} and loaded.gpus[0].util_gpu == 0.99
    fake.step(len(PHASES["matmul_load"]) + len(PHASES["matmul_load_with_vram_leak"]))
    last = nvml.sample(full=True)
    assert last is not None
    (process,) = last.gpus[0].processes or ()
    assert process.pid == TRACE["meta"]["loader_pid"] and process.name == "python3.11"
    assert process.used_bytes == 22391291904
    assert last.gpus[0].memory_used == 22400532480


def test_no_driver_turns_telemetry_off_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeNvml()
    fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    nvml, ticks = adapter(fake)
    with caplog.at_level(logging.INFO, logger="mlops_watchdog.nvml"):
        assert nvml.sample() is None
        assert nvml.sample() is None  # inside the backoff: not even tried
        ticks.t += BACKOFF_S[0]
        assert nvml.sample() is None  # tried again, still off
    assert not nvml.up and fake.inits == 0
    (line,) = caplog.messages
    assert "GPU telemetry off" in line and "NVML error 12" in line and "probing goes on" in line
    assert nvml.retry_at == ticks.t + BACKOFF_S[1]


def test_a_lost_gpu_shuts_down_and_initialises_again_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlops_watchdog.nvml")
    fake = FakeNvml()
    nvml, ticks = adapter(fake)
    assert nvml.sample() is not None
    fake.call_error = pynvml.NVML_ERROR_GPU_IS_LOST
    assert nvml.sample() is None
    assert not nvml.up and fake.shutdowns == 1 and "NVML error 15" in caplog.text
    fake.call_error = None
    assert nvml.sample() is None  # waits out the backoff
    ticks.t += BACKOFF_S[0]
    snapshot = nvml.sample()
    assert snapshot is not None and nvml.up and fake.inits == 2
    assert [g.uuid for g in snapshot.gpus] == [UUID]
    assert "NVML is back" in caplog.text


@pytest.mark.parametrize(
    "code",
    [
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
        pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        pynvml.NVML_ERROR_UNINITIALIZED,
    ],
)
def test_every_reinit_error_reinitialises(code: int) -> None:
    fake = FakeNvml()
    nvml, ticks = adapter(fake)
    assert nvml.sample() is not None
    fake.call_error = code
    assert nvml.sample() is None and fake.shutdowns == 1
    fake.call_error = None
    ticks.t += BACKOFF_S[0]
    assert nvml.sample() is not None and fake.inits == 2


def test_an_unexpected_field_error_leaves_the_field_out_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeNvml()
    nvml, _ = adapter(fake)
    nvml.start()
    fake.call_error = pynvml.NVML_ERROR_UNKNOWN
    for _ in range(2):
        snapshot = nvml.sample()
        assert snapshot is not None and nvml.up
        (gpu,) = snapshot.gpus
        assert gpu.util_gpu is None and gpu.power_w is None
        assert "power" not in gpu.unsupported  # failed this time: not known to be unsupported
    warned = [m for m in caplog.messages if "power" in m]
    assert len(warned) == 1 and "NVML error 999" in warned[0]


def test_zero_devices_is_up_with_no_gpus() -> None:
    nvml, _ = adapter(FakeNvml([]))
    snapshot = nvml.sample()
    assert snapshot is not None and snapshot.gpus == [] and nvml.up


def test_gpus_are_keyed_by_uuid_in_nvml_order() -> None:
    second = "GPU-00000000-0000-0000-0000-000000000002"
    fake = FakeNvml([FakeGpu(UUID, samples("idle")), FakeGpu(second, samples("matmul_load"))])
    nvml, _ = adapter(fake)
    snapshot = nvml.sample()
    assert snapshot is not None
    assert [(g.index, g.uuid) for g in snapshot.gpus] == [(0, UUID), (1, second)]
    assert nvml.energy_j([second]) == pytest.approx(PHASES["matmul_load"][0]["energy_mj"] / 1000)


def test_xid_events_are_collected_with_their_gpu() -> None:
    fake = FakeNvml()
    nvml, _ = adapter(fake)
    nvml.start()
    fake.pending_xids = [(0, 79), (0, 48)]
    events = fake.nvmlEventSetCreate()
    fake.nvmlDeviceRegisterEvents(fake.nvmlDeviceGetHandleByIndex(0), 8, events)
    fake.on_idle = nvml._xid_stop.set  # the watch loop ends once the queue is drained
    nvml._watch(events)
    assert [(x.uuid, x.code) for x in nvml.xids()] == [(UUID, 79), (UUID, 48)]
    assert nvml.xids() == []


def test_xid_registration_that_is_not_supported_is_reported() -> None:
    fake = FakeNvml()
    fake.gpus[0].xid_supported = False
    nvml, _ = adapter(fake)
    nvml.start()
    nvml.start_xid_watch()
    assert nvml.xid_registered == {UUID: False} and nvml._xid_thread is None


def test_periodic_samples_read_slow_fields_every_nth_and_never_the_energy_counter() -> None:
    # From the second load sample on: used VRAM holds still (see the next test for a move).
    steady = samples("matmul_load", "matmul_load_with_vram_leak")[1:]
    fake = FakeNvml([FakeGpu(UUID, steady)])
    ticks = {"t": 0.0}

    def wall() -> float:
        return float(fake.gpus[0].now["t"])

    nvml = Nvml(lib=fake, wall=wall, monotonic=lambda: ticks["t"], slow_every=4, pcie_every=4)
    first = nvml.sample()
    assert first is not None
    assert first.gpus[0].energy_j is None  # ~6 ms of CPU on an H100: read around probe runs
    assert first.gpus[0].pcie_tx_bytes_s is None  # a rate needs two counter readings
    assert first.gpus[0].ecc_corrected_aggregate == 0
    fake.gpus[0].samples = [dict(s, ecc_corrected_aggregate=7) for s in fake.gpus[0].samples]
    for _ in range(3):
        fake.step()
        carried = nvml.sample()
        assert carried is not None and carried.gpus[0].ecc_corrected_aggregate == 0
    fake.step()
    fresh = nvml.sample()
    assert fresh is not None and fresh.gpus[0].ecc_corrected_aggregate == 7
    recorded = fake.gpus[0].samples[1:5]
    seconds = recorded[-1]["t"] - fake.gpus[0].samples[0]["t"]
    tx = sum(
        b["pcie_tx_kbs"] * 1024 * (b["t"] - a["t"])
        for a, b in itertools.pairwise(fake.gpus[0].samples[:5])
    )
    assert fresh.gpus[0].pcie_tx_bytes_s == pytest.approx(tx / seconds, rel=1e-6)
    assert fake.counts.get("nvmlDeviceGetTotalEnergyConsumption", 0) == 0
    assert fake.counts["nvmlDeviceGetFieldValues"] == 2
    assert fake.counts.get("nvmlDeviceGetPcieThroughput", 0) == 0
    assert fake.counts["nvmlDeviceGetUtilizationRates"] == 5


def test_refused_fields_are_asked_once_and_names_looked_up_once_per_pid() -> None:
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load"))])
    fake.gpus[0].process_names[396] = "python3"
    nvml, _ = adapter(fake)
    for _ in range(5):
        snapshot = nvml.sample()
        assert snapshot is not None and snapshot.gpus[0].unsupported == {"fan", "retired_pages_dbe"}
        fake.step()
    assert fake.counts["nvmlDeviceGetFanSpeed"] == 1
    assert fake.counts["nvmlSystemGetProcessName"] == 1
    assert snapshot.gpus[0].processes[0].name == "python3"


def test_used_vram_that_moves_has_the_process_list_read_at_once() -> None:
    """The load phase's first sample holds 3 MiB, its second 883 MiB: the PyTorch process has
    come. Its PID must show in that very sample, not up to `slow_every` samples later."""
    fake = FakeNvml([FakeGpu(UUID, [dict(s) for s in samples("idle", "matmul_load")])])
    fake.gpus[0].samples[-11]["compute_procs"] = []  # before the loader started
    fake.gpus[0].position = len(samples("idle"))
    nvml = Nvml(lib=fake, slow_every=100)
    before = nvml.sample()
    fake.step()
    after = nvml.sample()
    fake.step()
    steady = nvml.sample()
    assert before is not None and after is not None and steady is not None
    assert before.gpus[0].processes == ()
    assert [p.pid for p in after.gpus[0].processes or ()] == [TRACE["meta"]["loader_pid"]]
    assert fake.counts["nvmlDeviceGetComputeRunningProcesses"] == 2  # not again while steady

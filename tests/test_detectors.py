"""The GPU detectors over the recorded H100 trace, and over samples edited from it."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from tests.fakenvml import TRACE, UUID, FakeGpu, FakeNvml, samples
from watchdog.gpu.detectors import (
    DETECTORS,
    Context,
    ProbeWindow,
    XidCount,
    contention,
    hardware,
    idle,
    leak,
    missing,
    run_all,
    throttle,
)
from watchdog.gpu.detectors.leak import robust_slope
from watchdog.gpu.nvml import GpuProcess, GpuSample, Nvml
from watchdog.gpu.serving import Server
from watchdog.gpu.settings import Gpu, Leak, Throttle
from watchdog.result import Finding

GIB = 1 << 30
PID = TRACE["meta"]["loader_pid"]
LABEL = "GPU 0 (NVIDIA H100 80GB HBM3)"
NAMES = {UUID: LABEL}
OTHER = GpuProcess(4242, "vllm", 40 * GIB)


@functools.cache
def trace(*phases: str) -> tuple[GpuSample, ...]:
    """The phases as the adapter reads them, each sample stamped with its recorded time."""
    raw = samples(*phases)
    fake = FakeNvml([FakeGpu(UUID, raw, process_names={PID: "/usr/bin/python3.11"})])
    nvml = Nvml(  # every field of every recorded sample
        lib=fake,
        wall=lambda: float(fake.gpus[0].now["t"]),
        monotonic=lambda: 0.0,
        slow_every=1,
        pcie_every=1,
    )
    out = []
    for _ in raw:
        snapshot = nvml.sample()
        assert snapshot is not None
        out.append(snapshot.gpus[0])
        fake.step()
    return tuple(out)


def context(history: Sequence[GpuSample], settings: Gpu | None = None, **kw: Any) -> Context:
    """A context whose clock stands at the last sample, with `kw` for the fields a test needs."""
    base = Context(
        now=history[-1].at if history else 1_795_400_200.0,
        settings=settings or Gpu(),
        history={UUID: list(history)} if history else {},
        windows=[],
        bindings={},
        names=NAMES,
    )
    return replace(base, **kw)


def only(findings: list[Finding]) -> Finding:
    (finding,) = findings
    return finding


# --- leak ----------------------------------------------------------------------------------------

LEAK = Gpu(leak=Leak(window=8, min_growth=GIB))
SHORT = Gpu(leak=Leak(window=5, min_growth=GIB))  # matmul_load lasts 5.5 s


def spiked(history: Sequence[GpuSample]) -> list[GpuSample]:
    out = list(history)
    middle = len(out) // 2
    out[middle] = replace(out[middle], memory_used=(out[middle].memory_used or 0) + 20 * GIB)
    return out


def second_process(history: Sequence[GpuSample]) -> list[GpuSample]:
    half = len(history) // 2
    return [
        replace(s, processes=(*(s.processes or ()), OTHER)) if i >= half else s
        for i, s in enumerate(history)
    ]


def stepped(history: Sequence[GpuSample]) -> list[GpuSample]:
    """Used VRAM that jumps by 20 GiB at one reading and holds: a model loading."""
    half = len(history) // 2
    return [
        replace(s, memory_used=(s.memory_used or 0) + (20 * GIB if i >= half else 0))
        for i, s in enumerate(history)
    ]


def load_rises(history: Sequence[GpuSample]) -> list[GpuSample]:
    half = len(history) // 2
    return [replace(s, util_gpu=0.3) if i < half else s for i, s in enumerate(history)]


@pytest.mark.parametrize(
    ("name", "history", "settings", "failing"),
    [
        ("leak phase", trace("matmul_load_with_vram_leak"), LEAK, True),
        ("flat memory under load", trace("matmul_load"), SHORT, False),
        ("one spike", spiked(trace("matmul_load")), SHORT, False),
        (
            "a second process appears",
            second_process(trace("matmul_load_with_vram_leak")),
            LEAK,
            False,
        ),
        ("the load rises", load_rises(trace("matmul_load_with_vram_leak")), LEAK, False),
        ("a model loads in one step", stepped(trace("matmul_load")), SHORT, False),
        ("less than 80% of the window", trace("matmul_load_with_vram_leak")[-10:], LEAK, None),
    ],
)
def test_leak(name: str, history: list[GpuSample], settings: Gpu, failing: bool | None) -> None:
    findings = leak.detect(context(history, settings))
    if failing is None:
        assert findings == []
        return
    finding = only(findings)
    assert finding.subject == UUID and finding.failing is failing, finding.summary
    assert finding.value is not None
    if name in ("flat memory under load", "one spike"):
        assert abs(finding.value) < 1e6  # bytes/s: a spike does not tilt the robust slope


def test_leak_summary_names_the_growth_and_the_process() -> None:
    finding = only(leak.detect(context(trace("matmul_load_with_vram_leak"), LEAK)))
    # 1 GiB every 0.55 s, and one 2 GiB step, in the recording.
    assert finding.value == pytest.approx(1.97 * GIB, rel=0.01)
    assert finding.summary == (
        f"{LABEL}: used VRAM rose 15.0 GiB in 7.7s (2.0 GiB/s by Sen's slope, Mann–Kendall "
        "p < 0.001), spread over 79% of the window under the same processes while load stayed "
        f"flat at 99%; pid {PID} (python3.11) grew most: +15.0 GiB in 7.7s, 2.0 GiB/s"
    )


def test_leak_summary_says_why_a_new_process_is_not_a_leak() -> None:
    finding = only(leak.detect(context(second_process(trace("matmul_load_with_vram_leak")), LEAK)))
    assert "pid 4242 (vllm) appeared 4.9s ago: a new process, not a leak" in finding.summary


def test_robust_slope_subsamples_long_histories() -> None:
    points = [(float(t), 3.0 * t) for t in range(360)]  # 30 min at 5 s
    points[100] = (100.0, 1e12)
    assert robust_slope(points) == pytest.approx(3.0)
    assert robust_slope([(1.0, 5.0)]) == 0.0


# --- contention ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("others", "free", "failing"),
    [
        ((OTHER,), 2 * GIB, True),
        ((), 2 * GIB, False),  # one process may fill its GPU: that is how vLLM runs
        ((OTHER,), 30 * GIB, False),
    ],
)
def test_contention(others: tuple[GpuProcess, ...], free: int, failing: bool) -> None:
    last = trace("matmul_load_with_vram_leak")[-1]
    total = last.memory_total or 0
    sample = replace(last, processes=(*(last.processes or ()), *others), memory_free=free)
    finding = only(contention.detect(context([sample])))
    assert finding.failing is failing and finding.value == pytest.approx(free / total)


def test_contention_lists_processes_largest_first() -> None:
    last = trace("matmul_load_with_vram_leak")[-1]
    unknown = GpuProcess(77, "", None)
    sample = replace(last, processes=(*(last.processes or ()), OTHER, unknown), memory_free=GIB)
    finding = only(contention.detect(context([sample])))
    assert finding.summary == (
        f"{LABEL}: 3 process(es), 1% VRAM free (1.0 GiB of 79.6 GiB): pid 4242 (vllm) 40.0 GiB, "
        f"pid {PID} (python3.11) 20.9 GiB, pid 77 (?) VRAM unknown; they compete for memory: "
        "expect out-of-memory errors or evictions"
    )


# --- idle while serving --------------------------------------------------------------------------


def windows(
    history: Sequence[GpuSample], tokens: float, answered: bool = True
) -> list[ProbeWindow]:
    """Three probe runs spread over the history, with utilisation left to the history."""
    first, last = history[0].at, history[-1].at
    step = (last - first) / 3
    return [
        ProbeWindow("llama", first + i * step, first + i * step + 0.6, answered, tokens, {})
        for i in range(3)
    ]


@pytest.mark.parametrize(
    ("phase", "tokens", "answered", "count", "failing"),
    [
        ("idle", 12.0, True, 3, True),
        ("matmul_load", 12.0, True, 3, False),
        ("idle", 140.0, True, 3, True),  # fast answers never veto an idle GPU: CPUs are fast
        ("idle", 12.0, True, 2, None),  # fewer runs than idle.runs
        ("idle", 12.0, False, 3, None),  # a run failed: another kind's business
    ],
)
def test_idle_while_serving(
    phase: str, tokens: float, answered: bool, count: int, failing: bool | None
) -> None:
    history = trace(phase)
    runs = windows(history, tokens, answered)[-count:]
    seen = idle.detect(context(history, windows=runs, bindings={"llama": [UUID]}))
    if failing is None:
        assert seen == []
        return
    finding = only(seen)
    assert (finding.subject, finding.gpu, finding.failing) == ("llama", UUID, failing)


def test_idle_while_serving_names_the_likely_cause() -> None:
    history = trace("idle")
    runs = windows(history, 12.0)
    finding = only(idle.detect(context(history, windows=runs, bindings={"llama": [UUID]})))
    assert finding.summary == (
        f"probes to llama succeed (3 runs at 12 tok/s, a CPU's pace), but {LABEL} has no "
        "compute process at "
        "all: the server of llama serves from the CPU — a missing or empty "
        "CUDA_VISIBLE_DEVICES, a CPU-only build, or no layers offloaded (n_gpu_layers=0)"
    )


def test_idle_while_serving_prefers_the_runs_own_reading() -> None:
    history = trace("idle")
    runs = [replace(w, gpu_utilization={UUID: 0.9}) for w in windows(history, 12.0)]
    finding = only(idle.detect(context(history, windows=runs, bindings={"llama": [UUID]})))
    assert not finding.failing and finding.value == 0.9


# --- throttle ------------------------------------------------------------------------------------

THROTTLE = Gpu(throttle=Throttle(after=3))


def broken(history: Sequence[GpuSample]) -> list[GpuSample]:
    out = list(history)
    out[-3] = replace(out[-3], clock_events=frozenset())
    return out


def blind(history: Sequence[GpuSample]) -> list[GpuSample]:
    out = list(history)
    out[-3] = replace(out[-3], clock_events=None)
    return out


@pytest.mark.parametrize(
    ("name", "history", "failing", "held"),
    [
        ("power capped under load", trace("matmul_load"), True, 4.93),
        ("idle is no throttling", trace("idle"), False, 0.0),
        ("a break restarts the count", broken(trace("matmul_load")), False, 0.55),
        ("an unreadable sample breaks nothing", blind(trace("matmul_load")), True, 4.93),
    ],
)
def test_throttle(name: str, history: list[GpuSample], failing: bool, held: float) -> None:
    finding = only(throttle.detect(context(history, THROTTLE)))
    assert finding.failing is failing and finding.value == pytest.approx(held, abs=0.01)


def test_throttle_summary_says_power_cap() -> None:
    finding = only(throttle.detect(context(trace("matmul_load"), THROTTLE)))
    assert finding.summary == (
        f"{LABEL}: sw_power_cap active for 4.9s at 700 W of a 700 W limit: held at its power "
        "cap under 99% load"
    )


def test_throttle_summary_gives_the_temperature_for_heat() -> None:
    hot = [replace(s, clock_events=frozenset({"hw_thermal_slowdown"})) for s in trace("idle")]
    finding = only(throttle.detect(context(hot, THROTTLE)))
    assert finding.failing and "hw_thermal_slowdown active for" in finding.summary
    assert "at 45 °C: clocks cut for heat" in finding.summary


def test_throttle_durations_read_like_operators_write_them() -> None:
    seconds = (4.93, 42, 720, 5400, 86400, 3 * 86400 + 60)
    assert [throttle.duration(s) for s in seconds] == ["4.9s", "42s", "12m", "1h30m", "24h", "3d1m"]


# --- hardware ------------------------------------------------------------------------------------

NOW = trace("idle")[-1].at
HOLD = Gpu().hardware.hold
LOST_ONLY = "GPU-lost-without-a-sample"


@pytest.mark.parametrize(
    ("name", "edit", "extra", "failing", "says"),
    [
        ("clean", {}, {}, False, "no hardware errors"),
        (
            "recent xid",
            {},
            {"xids": {(UUID, 79): XidCount(2, NOW - 60)}},
            True,
            "XID 79 ×2 (GPU has fallen off the bus), last 1m ago",
        ),
        ("old xid", {}, {"xids": {(UUID, 48): XidCount(1, NOW - HOLD - 1)}}, False, "no hardware"),
        (
            "application xid alone",
            {},
            {"xids": {(UUID, 31): XidCount(1, NOW - 60)}},
            False,
            "XID 31 ×1 (GPU memory page fault, usually an application's illegal address)",
        ),
        ("uncorrectable ecc", {"ecc_uncorrected_volatile": 3}, {}, True, "3 uncorrectable ECC"),
        ("remap failed", {"remap_failed": True}, {}, True, "row remapping failed"),
        ("remap pending", {"remap_pending": True}, {}, True, "row remap pending"),
        ("lost", {}, {"lost": frozenset({UUID})}, True, "GPU fell off the bus / lost"),
    ],
)
def test_hardware(name: str, edit: dict, extra: dict, failing: bool, says: str) -> None:
    history = [replace(s, **edit) for s in trace("idle")]
    finding = only(hardware.detect(context(history, **extra)))
    assert finding.subject == UUID and finding.failing is failing and says in finding.summary


def test_a_lost_gpu_without_samples_still_fails() -> None:
    findings = hardware.detect(context(trace("idle"), lost=frozenset({LOST_ONLY})))
    by_gpu = {f.subject: f for f in findings}
    assert by_gpu[LOST_ONLY].failing and not by_gpu[UUID].failing
    assert by_gpu[LOST_ONLY].summary == f"{LOST_ONLY}: GPU fell off the bus / lost"


def test_hardware_lists_every_reason() -> None:
    history = [replace(s, remap_pending=True) for s in trace("idle")]
    xids = {(UUID, 94): XidCount(1, NOW - 5), (UUID, 999): XidCount(4, NOW - 5)}
    finding = only(hardware.detect(context(history, xids=xids)))
    assert finding.summary == (
        f"{LABEL}: XID 94 ×1 (contained ECC error: restart the affected application), last 5.0s "
        "ago; XID 999 ×4, last 5.0s ago; row remap pending: reset the GPU to apply it"
    )
    assert finding.value == 3


# --- missing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "most", "failing"),
    [(7, 8, True), (8, 8, False), (0, 0, None)],
)
def test_missing(count: int, most: int, failing: bool | None) -> None:
    findings = missing.detect(context([], gpu_count=count, gpu_count_max=most))
    if failing is None:
        assert findings == []
        return
    finding = only(findings)
    assert finding.subject == "gpus" and finding.failing is failing


def test_missing_summary_counts_the_gpus() -> None:
    finding = only(missing.detect(context([], gpu_count=7, gpu_count_max=8)))
    assert finding.summary.startswith("1 of 8 GPUs missing (7 seen now, 8 in the last 24h)")


# --- all together --------------------------------------------------------------------------------


def test_run_all_answers_for_every_registered_kind() -> None:
    history = trace("matmul_load", "matmul_load_with_vram_leak")
    seen = run_all(
        context(
            history,
            Gpu(leak=Leak(window=8, min_growth=GIB), throttle=Throttle(after=3)),
            windows=windows(history, 12.0),
            bindings={"llama": [UUID]},
            gpu_count=1,
            gpu_count_max=1,
        )
    )
    assert set(seen) == set(DETECTORS)
    assert all(seen.values()), {kind: f for kind, f in seen.items() if not f}
    failing = {kind for kind, findings in seen.items() if any(f.failing for f in findings)}
    assert failing == {"gpu_vram_leak", "gpu_throttling"}


def serving(pid: int, *family: int) -> Server:
    return Server(pid, "llama-server", 8081, frozenset({pid, *family}))


def test_a_server_that_holds_no_memory_on_its_gpu_serves_from_the_cpu() -> None:
    """The load phase's GPU is busy (99%) with the PyTorch process: the endpoint's own server,
    pid 9558, is not among its compute processes. Busy or not, the GPU does no work for it."""
    history = trace("matmul_load")
    runs = windows(history, 285.0)
    seen = context(
        history, windows=runs, bindings={"llama": [UUID]}, servers={"llama": serving(9558)}
    )
    finding = only(idle.detect(seen))
    assert finding.failing
    assert finding.summary.startswith(
        f"probes to llama succeed (3 runs at 285 tok/s), but llama-server (pid 9558, listening "
        f"on :8081) holds no memory on {LABEL} (its compute processes: pid {PID} (python3.11)): "
        "it serves from the CPU"
    )


def test_a_server_that_holds_memory_on_its_busy_gpu_serves_from_it() -> None:
    history = trace("matmul_load")
    seen = context(
        history,
        windows=windows(history, 700.0),
        bindings={"llama": [UUID]},
        servers={"llama": serving(4000, PID)},  # the GPU process is the listener's child
    )
    finding = only(idle.detect(seen))
    assert not finding.failing and finding.value == pytest.approx(1.0)
    assert finding.summary.startswith(
        f"llama-server (pid 4000, listening on :8081) holds 0.9 GiB on {LABEL}, reaching 100%"
    )


def test_a_server_on_its_gpu_that_leaves_it_idle_decodes_on_the_cpu() -> None:
    """n_gpu_layers=0 with a CUDA build: a CUDA context on the GPU, the work on the CPU. NVML's
    buffers say so: no kernel from its process, the GPU at 0 %, in every run."""
    history = [
        replace(s, util_gpu=0.0, util_samples=((s.at - 0.1, 0.0),), process_sm=())
        for s in trace("matmul_load")
    ]
    seen = context(
        history,
        windows=windows(history, 40.0),
        bindings={"llama": [UUID]},
        servers={"llama": serving(PID)},
    )
    finding = only(idle.detect(seen))
    assert finding.failing
    assert "llama-server (pid 396, listening on :8081) holds 0.9 GiB on" in finding.summary
    assert "but ran no kernel on it" in finding.summary


def test_a_once_a_second_reading_near_zero_proves_nothing() -> None:
    """Measured on an H200 serving SmolLM2: readings of 0-6 % between probes that took 40 ms.
    Without NVML's buffers, the server's process on the GPU is all there is to go by."""
    history = [replace(s, util_gpu=0.03) for s in trace("matmul_load")]
    seen = context(
        history,
        windows=windows(history, 700.0),
        bindings={"llama": [UUID]},
        servers={"llama": serving(PID)},
    )
    finding = only(idle.detect(seen))
    assert not finding.failing and finding.value is None


def test_a_verdict_from_nvmls_buffers_holds_between_runs() -> None:
    """Runs every 2 s, samples every second: a run's per-process sample comes up to a second
    after it ends. Judged only on posted samples, the verdict does not turn at each new run,
    so it can hold for failure_threshold samples in a row. Another process keeps the GPU busy:
    only the engine's own (absent) kernels tell."""
    base = trace("matmul_load")[0]
    history = [
        replace(
            base,
            at=base.at + i,
            util_gpu=0.5,
            util_samples=tuple((base.at + i - k / 5, 0.5) for k in range(5)),
            process_sm=((999, base.at + i - 0.3, 0.5),),
        )
        for i in range(16)
    ]
    runs = [
        ProbeWindow("llama", base.at + t, base.at + t + 0.05, True, 40.0, {})
        for t in range(1, 16, 2)
    ]
    verdicts = []
    for n in range(8, 17):
        seen = [w for w in runs if w.ended <= history[n - 1].at]
        found = idle.detect(
            context(
                history[:n],
                windows=seen,
                bindings={"llama": [UUID]},
                servers={"llama": serving(PID)},
            )
        )
        verdicts.append(only(found).failing)
    assert verdicts == [True] * len(verdicts)

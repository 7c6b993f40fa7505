"""Cost of one full NVML sample per GPU, next to one nvidia-smi query (the anchor).

Both run interleaved in one process on the same GPUs (rounds of samples, then one nvidia-smi
call), so both see the same noise. Goal: `Nvml.sample()` at least GOAL times cheaper than one
`nvidia-smi --query-gpu=...` call, both by the median sample and by the mean over whole cycles
of `pcie_every` samples (error counters and processes are read every `slow_every` samples, PCIe
every `pcie_every`, as the daemon does at its default 5 s interval). Those are the samples
between probe runs; a sample taken while a run of a GPU-bound endpoint is in flight also reads
NVML's two sample buffers (utilisation and per-process), timed apart in each round. A second
pass samples through a wrapper around pynvml that times every NVML call the adapter makes in a
sample during a run, to show where its time goes; the on-demand energy read of probe runs is
timed apart.

    python3 -m bench.gpu_sample [--samples 240] [--smi-calls 20] [--load] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pynvml

from tests.gpu import load, smi
from watchdog.gpu.nvml import Nvml, Snapshot

GOAL = 300
WARMUP_SAMPLES = 10
WARMUP_SMI_CALLS = 2
TIMED_SAMPLES = 60  # through the per-call wrapper: one whole cycle of the slowest field
SLOW_CALL_S = 0.3e-3  # a call this slow is a candidate for reading less often
# Short names of the pynvml constants that calls take, by argument position.
ARG_NAMES: dict[str, tuple[dict[str, str], ...]] = {
    "nvmlDeviceGetClockInfo": ({"NVML_CLOCK_SM": "SM", "NVML_CLOCK_MEM": "MEM"},),
    "nvmlDeviceGetPcieThroughput": (
        {"NVML_PCIE_UTIL_TX_BYTES": "TX", "NVML_PCIE_UTIL_RX_BYTES": "RX"},
    ),
    "nvmlDeviceGetTemperature": ({"NVML_TEMPERATURE_GPU": "GPU"},),
    "nvmlDeviceGetTotalEccErrors": (
        {
            "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": "UNCORRECTED",
            "NVML_MEMORY_ERROR_TYPE_CORRECTED": "CORRECTED",
        },
        {"NVML_VOLATILE_ECC": "VOLATILE", "NVML_AGGREGATE_ECC": "AGGREGATE"},
    ),
    "nvmlDeviceGetRetiredPages": ({"NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR": "DBE"},),
}


def label(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """nvmlDeviceGetClockInfo(SM): the call and its constant arguments, without handles."""
    if name == "nvmlSystemGetProcessName":
        return f"{name}(pid)"
    rest = args[1:] if name.startswith("nvmlDevice") else args
    choices = ARG_NAMES.get(name, ())
    parts = []
    for position, value in enumerate(rest):
        names = choices[position] if position < len(choices) else {}
        found = [short for n, short in names.items() if getattr(pynvml, n) == value]
        parts.append(found[0] if found else type(value).__name__)
    for key, value in kwargs.items():
        parts.append("v2" if key == "version" and value == pynvml.nvmlMemory_v2 else key)
    return f"{name}({', '.join(parts)})"


class TimedLib:
    """pynvml, with the wall and CPU time of every nvml* call recorded under its label."""

    def __init__(self, lib: Any = pynvml):
        self.lib = lib
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.lib, name)
        if not (callable(attr) and name.startswith("nvml")):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                wall = time.perf_counter() - wall
                cpu = time.process_time() - cpu
                key = label(name, args, kwargs)
                self.wall[key].append(wall)
                self.cpu[key].append(cpu)

        return timed

    def clear(self) -> None:
        self.wall.clear()
        self.cpu.clear()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def sample_once(nvml: Nvml, during_run: bool = False) -> tuple[float, float, Snapshot]:
    cpu, wall = time.process_time(), time.perf_counter()
    snapshot = nvml.sample(buffers=None if during_run else ())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert snapshot is not None, f"NVML went off: {nvml.last_error}"
    return wall, cpu, snapshot


def smi_once() -> tuple[float, float]:
    """One nvidia-smi call: wall, and CPU (the child's plus ours around it)."""
    ours, theirs, wall = time.process_time(), children_cpu(), time.perf_counter()
    subprocess.run(smi.command(), capture_output=True, check=True, timeout=60)
    wall = time.perf_counter() - wall
    cpu = (time.process_time() - ours) + (children_cpu() - theirs)
    return wall, cpu


def measure(nvml: Nvml, samples: int, smi_calls: int) -> dict[str, list[float]]:
    for _ in range(WARMUP_SAMPLES):
        sample_once(nvml)
    for _ in range(WARMUP_SMI_CALLS):
        smi_once()
    out: dict[str, list[float]] = defaultdict(list)
    per_round = max(1, samples // smi_calls)
    for _ in range(smi_calls):
        for _ in range(per_round):
            wall, cpu, _ = sample_once(nvml)
            out["sample_wall"].append(wall)
            out["sample_cpu"].append(cpu)
        wall, cpu, _ = sample_once(nvml, during_run=True)
        out["run_sample_wall"].append(wall)
        out["run_sample_cpu"].append(cpu)
        wall, cpu = smi_once()
        out["smi_wall"].append(wall)
        out["smi_cpu"].append(cpu)
    return out


def per_call(nvml_lib: Any, samples: int) -> list[dict[str, Any]]:
    """Every NVML call a sample makes: calls per sample and median cost, costliest first."""
    lib = TimedLib(nvml_lib)
    nvml = Nvml(lib=lib)
    assert nvml.start(), nvml.last_error
    try:
        for _ in range(WARMUP_SAMPLES):
            sample_once(nvml, during_run=True)
        lib.clear()
        for _ in range(samples):
            sample_once(nvml, during_run=True)
        timed = dict(lib.wall), dict(lib.cpu)  # not the shutdown that follows
    finally:
        nvml.close()
    rows: list[dict[str, Any]] = []
    for key, walls in timed[0].items():
        calls = len(walls) / samples
        wall = statistics.median(walls)
        rows.append(
            {
                "call": key,
                "calls_per_sample": calls,
                "wall_s_median": wall,
                "cpu_s_median": statistics.median(timed[1][key]),
                "wall_s_per_sample": wall * calls,
            }
        )
    rows.sort(key=lambda r: -r["wall_s_per_sample"])
    return rows


def energy_read(nvml: Nvml) -> dict[str, float]:
    """One on-demand energy counter read of every GPU (what a probe run's meter costs)."""
    uuids = [d.uuid for d in nvml.devices]
    walls, cpus = [], []
    for _ in range(WARMUP_SAMPLES + TIMED_SAMPLES):
        cpu, wall = time.process_time(), time.perf_counter()
        nvml.energy_j(uuids)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "wall_s_median": statistics.median(walls[WARMUP_SAMPLES:]),
        "cpu_s_median": statistics.median(cpus[WARMUP_SAMPLES:]),
    }


def row(name: str, values: list[float], unit: float = 1e3) -> str:
    scaled = sorted(v * unit for v in values)
    p90 = scaled[int(0.9 * (len(scaled) - 1))]
    return f"{name:<34} {statistics.median(scaled):10.3f} {scaled[0]:10.3f} {p90:10.3f}"


def report(args: argparse.Namespace, nvml: Nvml, snapshot: Snapshot) -> dict[str, Any]:
    figures = measure(nvml, args.samples, args.smi_calls)
    gpus = len(snapshot.gpus)
    calls = per_call(nvml.lib, TIMED_SAMPLES)
    sample_wall = statistics.median(figures["sample_wall"])
    sample_cpu = statistics.median(figures["sample_cpu"])
    # Whole cycles of `slow_every` samples: the mean carries the slow tier's share.
    mean_wall = statistics.fmean(figures["sample_wall"])
    mean_cpu = statistics.fmean(figures["sample_cpu"])
    smi_wall = statistics.median(figures["smi_wall"])
    smi_cpu = statistics.median(figures["smi_cpu"])
    slow = [c["call"] for c in calls if c["wall_s_median"] >= SLOW_CALL_S]
    in_calls = sum(c["wall_s_per_sample"] for c in calls)
    energy = energy_read(nvml)

    names = sorted({g.name for g in snapshot.gpus})
    print(f"GPUs: {gpus} × {', '.join(names)}; driver {snapshot.driver}; ", end="")
    print(f"nvidia-ml-py {importlib.metadata.version('nvidia-ml-py')}; load: {args.load}")
    print(
        f"one full Nvml.sample() ({len(figures['sample_wall'])}) interleaved with "
        f"{len(figures['smi_wall'])} nvidia-smi calls, ms"
    )
    print(f"{'':<34} {'median':>10} {'min':>10} {'p90':>10}")
    print(row("Nvml.sample() wall, all GPUs", figures["sample_wall"]))
    print(row("Nvml.sample() CPU, all GPUs", figures["sample_cpu"]))
    print(row("  per GPU, wall", [v / gpus for v in figures["sample_wall"]]))
    print(row("  per GPU, CPU", [v / gpus for v in figures["sample_cpu"]]))
    print(row("during a run (+ buffers), all GPUs", figures["run_sample_wall"]))
    print(row("  its CPU", figures["run_sample_cpu"]))
    print(row("nvidia-smi --query-gpu (anchor) wall", figures["smi_wall"]))
    print(row("nvidia-smi CPU (child + ours)", figures["smi_cpu"]))
    print(
        f"mean over whole cycles ({nvml.slow_every} samples for errors and processes, "
        f"{nvml.pcie_every} for PCIe), per GPU: "
        f"{mean_wall / gpus * 1e3:.3f} ms wall, {mean_cpu / gpus * 1e3:.3f} ms CPU"
    )
    ratio_wall, ratio_cpu = smi_wall / (sample_wall / gpus), smi_cpu / (sample_cpu / gpus)
    ratio_mean = smi_wall / (mean_wall / gpus)
    verdict = "met" if ratio_wall >= GOAL else "NOT met"
    print(f"ratio nvidia-smi call / sample per GPU, medians, wall: {ratio_wall:.0f}")
    print(f"ratio nvidia-smi call / sample per GPU, medians, CPU: {ratio_cpu:.0f}")
    print(f"ratio nvidia-smi call / mean sample per GPU (amortized), wall: {ratio_mean:.0f}")
    print(f"goal ≥{GOAL}× (medians, wall): {verdict}")
    run_wall = statistics.median(figures["run_sample_wall"])
    print(
        "ratio nvidia-smi call / sample during a run per GPU, medians, wall: "
        f"{smi_wall / (run_wall / gpus):.0f}"
    )
    print(
        f"energy counter, read on demand around probe runs (not in samples): "
        f"{energy['wall_s_median'] * 1e3:.3f} ms wall, {energy['cpu_s_median'] * 1e3:.3f} ms CPU"
    )
    print()
    print(
        f"NVML calls of one sample during a run ({TIMED_SAMPLES} samples through a timing "
        "wrapper), µs"
    )
    print(f"{'call':<58} {'per smp':>7} {'wall':>9} {'CPU':>9} {'per smp':>9} {'share':>6}")
    for c in calls:
        print(
            f"{c['call']:<58} {c['calls_per_sample']:7.2f} {c['wall_s_median'] * 1e6:9.1f} "
            f"{c['cpu_s_median'] * 1e6:9.1f} {c['wall_s_per_sample'] * 1e6:9.1f} "
            f"{c['wall_s_per_sample'] / in_calls:6.1%}"
        )
    print(f"{'all calls of one sample':<58} {'':>7} {'':>9} {'':>9} {in_calls * 1e6:9.1f}")
    return {
        "gpus": gpus,
        "gpu_names": names,
        "driver": snapshot.driver,
        "nvidia_ml_py": importlib.metadata.version("nvidia-ml-py"),
        "load": args.load,
        "samples": len(figures["sample_wall"]),
        "smi_calls": len(figures["smi_wall"]),
        "smi_command": smi.command(),
        "sample_wall_s_median": sample_wall,
        "sample_cpu_s_median": sample_cpu,
        "sample_wall_s_median_per_gpu": sample_wall / gpus,
        "sample_cpu_s_median_per_gpu": sample_cpu / gpus,
        "smi_wall_s_median": smi_wall,
        "smi_cpu_s_median": smi_cpu,
        "sample_wall_s_mean_per_gpu": mean_wall / gpus,
        "sample_cpu_s_mean_per_gpu": mean_cpu / gpus,
        "run_sample_wall_s_median": run_wall,
        "run_sample_cpu_s_median": statistics.median(figures["run_sample_cpu"]),
        "slow_every": nvml.slow_every,
        "pcie_every": nvml.pcie_every,
        "ratio_wall": ratio_wall,
        "ratio_cpu": ratio_cpu,
        "ratio_wall_mean": ratio_mean,
        "goal": GOAL,
        "goal_met": ratio_wall >= GOAL,
        "calls": calls,
        "slow_call_s": SLOW_CALL_S,
        "slow_calls": slow,
        "energy_read": energy,
        "raw": figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=240, help="a multiple of 60 (whole cycles)")
    parser.add_argument("--smi-calls", type=int, default=20)
    parser.add_argument("--load", action="store_true", help="under tests/gpu's bf16 matmul load")
    parser.add_argument("--load-python", default=sys.executable, help="a python with PyTorch")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    nvml = Nvml()
    if not nvml.start():
        sys.exit(f"NVML is off here: {nvml.last_error}")
    with contextlib.ExitStack() as stack:
        stack.callback(nvml.close)
        if args.load:
            stack.callback(load.start(args.load_python, seconds=600).stop)
            time.sleep(3)  # past the ramp-up: clocks and power settle
        snapshot = nvml.sample()
        assert snapshot is not None and snapshot.gpus, "NVML lists no GPU"
        figures = report(args, nvml, snapshot)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()

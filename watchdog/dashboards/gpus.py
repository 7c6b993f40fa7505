"""The GPUs dashboard: NVML telemetry, hardware errors and the watchdog's GPU detectors."""

from __future__ import annotations

from typing import Any

from watchdog.dashboards.panels import (
    Panel,
    base_variables,
    dashboard,
    graph,
    listing,
    over_interval,
    quantile,
    query_variable,
    selector,
    single,
    timeline,
)

UID = "mlops-watchdog-gpus"
FILENAME = f"{UID}.json"
LEGEND = "{{gpu}}"  # the GPU's UUID: unique across hosts, so the instance need not be named
ACTIVE_STATES = {0: ("inactive", "transparent"), 1: ("active", "orange")}
# P0 is the fastest state; data-centre GPUs rest in P8 when idle.
P_STATES = {p: (f"P{p}", "green" if p == 0 else "yellow" if p < 8 else "blue") for p in range(16)}


def gpu(metric: str) -> str:
    """A selector for a series labelled by GPU."""
    return selector(metric, "gpu")


def overview() -> list[Panel]:
    return [
        single(
            "Telemetry",
            "bool",
            (
                f"max by (node, instance) ({selector('mlops_watchdog_gpu_telemetry_up')})",
                "{{node}} ({{instance}})",
            ),
            span=4,
            height=6,
            states={0: ("down", "red"), 1: ("up", "green")},
            description="Whether NVML answers on each watchdog host. Down on a host without GPUs.",
        ),
        single(
            "GPUs",
            "none",
            (
                f"max by (node, instance) ({selector('mlops_watchdog_gpus')})",
                "{{node}} ({{instance}})",
            ),
            span=4,
            height=6,
            description="GPUs that NVML lists now. Fewer than yesterday raises GpuMissing.",
        ),
        graph(
            "NVML sampling time p95",
            "s",
            (
                quantile(0.95, "mlops_watchdog_gpu_sampling_seconds", by="node, instance"),
                "{{node}} ({{instance}})",
            ),
            span=16,
            height=6,
            description="Time to read every GPU once; near the sampling interval, samples are late.",
        ),
        listing(
            "GPUs by host",
            "none",
            (gpu("mlops_watchdog_gpu_info"), ""),
            columns={
                "instance": "Host",
                "index": "Index",
                "name": "Model",
                "gpu": "UUID",
                "driver": "Driver",
            },
            height=6,
            description="NVML's index is not what a process sees under CUDA_VISIBLE_DEVICES.",
        ),
    ]


def utilisation() -> list[Panel]:
    return [
        graph(
            "GPU utilisation",
            "percentunit",
            (gpu("mlops_watchdog_gpu_utilization_ratio"), LEGEND),
            span=8,
            ratio=True,
            description="Share of time a kernel was running.",
        ),
        graph(
            "Memory controller utilisation",
            "percentunit",
            (gpu("mlops_watchdog_gpu_memory_utilization_ratio"), LEGEND),
            span=8,
            ratio=True,
            description="Share of time device memory was read or written.",
        ),
        graph(
            "PCIe throughput",
            "Bps",
            (gpu("mlops_watchdog_gpu_pcie_bytes_per_second"), "{{gpu}} {{direction}}"),
            span=8,
            description="tx: GPU to host, rx: host to GPU. Steady rx while serving hints at offloading.",
        ),
    ]


def memory() -> list[Panel]:
    return [
        graph(
            "VRAM",
            "bytes",
            (gpu("mlops_watchdog_gpu_memory_used_bytes"), "{{gpu}} used"),
            (gpu("mlops_watchdog_gpu_memory_free_bytes"), "{{gpu}} free"),
            (gpu("mlops_watchdog_gpu_memory_reserved_bytes"), "{{gpu}} reserved"),
            (gpu("mlops_watchdog_gpu_memory_total_bytes"), "{{gpu}} total"),
            dashed=["D"],
            description="Used excludes the driver's reserved memory; free is what is left of both.",
        ),
        graph(
            "VRAM in use",
            "percentunit",
            (
                f"1 - {gpu('mlops_watchdog_gpu_memory_free_bytes')} "
                f"/ {gpu('mlops_watchdog_gpu_memory_total_bytes')}",
                LEGEND,
            ),
            ratio=True,
            description="Used and reserved, of total. A line that only climbs under a flat load is a leak.",
        ),
        graph(
            "Compute processes",
            "none",
            (gpu("mlops_watchdog_gpu_processes"), LEGEND),
            span=8,
            description="Two or more with under 5% of VRAM free raises GpuVramContention.",
        ),
        graph(
            "VRAM per process",
            "bytes",
            (gpu("mlops_watchdog_gpu_process_memory_bytes"), "{{process}} ({{pid}}) on {{gpu}}"),
            span=16,
            description="Which process grows when VRAM climbs.",
        ),
        listing(
            "VRAM per process now",
            "bytes",
            (gpu("mlops_watchdog_gpu_process_memory_bytes"), ""),
            columns={
                "process": "Process",
                "pid": "PID",
                "gpu": "GPU",
                "instance": "Host",
                "Value": "VRAM",
            },
            sort_by="VRAM",
        ),
    ]


def thermals() -> list[Panel]:
    return [
        graph(
            "Temperature",
            "celsius",
            (gpu("mlops_watchdog_gpu_temperature_celsius"), LEGEND),
            span=8,
        ),
        graph(
            "Power vs limit",
            "watt",
            (gpu("mlops_watchdog_gpu_power_watts"), "{{gpu}} draw"),
            (gpu("mlops_watchdog_gpu_power_limit_watts"), "{{gpu}} limit"),
            span=8,
            dashed=["B"],
        ),
        graph(
            "Energy",
            "joule",
            (
                f"sum by (gpu) ({over_interval('increase', gpu('mlops_watchdog_gpu_energy_joules_total'))})",
                LEGEND,
            ),
            span=8,
            bars=True,
            description="Energy drawn in each interval, from NVML's energy counter.",
        ),
    ]


def clocks() -> list[Panel]:
    return [
        graph("SM clock", "hertz", (gpu("mlops_watchdog_gpu_sm_clock_hertz"), LEGEND), span=8),
        graph(
            "Memory clock", "hertz", (gpu("mlops_watchdog_gpu_memory_clock_hertz"), LEGEND), span=8
        ),
        timeline(
            "Performance state",
            "none",
            (gpu("mlops_watchdog_gpu_performance_state"), LEGEND),
            states=P_STATES,
            span=8,
            description="P0 is the fastest. A loaded GPU that is not in P0 is held back.",
        ),
        timeline(
            "Clock-event reasons",
            "bool",
            (
                f"max by (gpu, reason) ({gpu('mlops_watchdog_gpu_clock_event_active')})",
                "{{gpu}} {{reason}}",
            ),
            states=ACTIVE_STATES,
            description="Why clocks were held down: power cap, thermal slowdown, idle, and so on.",
        ),
    ]


def errors() -> list[Panel]:
    return [
        graph(
            "XID errors",
            "short",
            (
                f"sum by (gpu, xid) ({over_interval('increase', gpu('mlops_watchdog_gpu_xid_errors_total'))})",
                "{{gpu}} XID {{xid}}",
            ),
            bars=True,
            description="Driver-reported XID events by code; look codes up in NVIDIA's XID catalogue.",
        ),
        graph(
            "ECC errors",
            "short",
            (
                f"sum by (gpu, type) ({over_interval('increase', gpu('mlops_watchdog_gpu_ecc_errors_total'))})",
                "{{gpu}} {{type}}",
            ),
            bars=True,
            description="Any uncorrected error raises GpuMemoryFault.",
        ),
        graph(
            "Remapped rows",
            "short",
            (gpu("mlops_watchdog_gpu_remapped_rows"), "{{gpu}} {{type}}"),
            span=8,
            description="Memory rows replaced by spares, by the kind of error that caused it.",
        ),
        timeline(
            "Row remapping",
            "bool",
            (gpu("mlops_watchdog_gpu_remap_pending"), "{{gpu}} pending"),
            (gpu("mlops_watchdog_gpu_remap_failed"), "{{gpu}} failed"),
            states={0: ("no", "transparent"), 1: ("yes", "red")},
            span=16,
            description="Pending: the GPU needs a reset to apply a remap. Failed: no spare rows left.",
        ),
        listing(
            "Last XID by code",
            "dateTimeAsIso",
            (f"{gpu('mlops_watchdog_gpu_xid_last_seen_timestamp_seconds')} * 1000", ""),
            columns={
                "instance": "Host",
                "gpu": "GPU",
                "xid": "XID",
                "Value": "Last seen",
            },
            sort_by="Last seen",
            height=6,
        ),
    ]


def detectors() -> list[Panel]:
    return [
        timeline(
            "Detector verdicts",
            "bool",
            (f"max by (gpu, kind) ({gpu('mlops_watchdog_gpu_detected')})", "{{gpu}} {{kind}}"),
            states={0: ("fine", "green"), 1: ("detected", "red")},
            description="The watchdog's own findings before its alert thresholds and repeats.",
        ),
        timeline(
            "GPU alerts firing",
            "bool",
            (
                f"max by (node, gpu, kind) ({gpu('mlops_watchdog_gpu_alerts_firing')})",
                "{{node}} {{gpu}} {{kind}}",
            ),
            states={0: ("ok", "green"), 1: ("firing", "red")},
            description="The daemon's own GPU alerts, after their thresholds: what it paged.",
        ),
        graph(
            "VRAM growth",
            "Bps",
            (gpu("mlops_watchdog_gpu_memory_growth_bytes_per_second"), LEGEND),
            span=8,
            description="The leak detector's Sen's slope of used VRAM over its window.",
        ),
        graph(
            "Throttled without a break",
            "s",
            (gpu("mlops_watchdog_gpu_throttle_duration_seconds"), LEGEND),
            span=8,
            description="How long thermal or power-cap reasons have held; over 10m raises GpuThrottling.",
        ),
        timeline(
            "Idle while serving",
            "bool",
            (
                f"max by (node, endpoint, gpu) ({gpu('mlops_watchdog_gpu_idle_while_serving')})",
                "{{node}}/{{endpoint}} on {{gpu}}",
            ),
            states={0: ("working", "green"), 1: ("idle", "red")},
            span=8,
            description="Probes succeed but the bound GPU does no work: likely a CPU fallback.",
        ),
    ]


def render() -> dict[str, Any]:
    return dashboard(
        "mlops-watchdog: GPUs",
        UID,
        "NVML telemetry of the GPUs on the watchdog's hosts, and what the watchdog makes of it.",
        [
            *base_variables(),
            query_variable(
                "gpu",
                "GPU",
                'label_values(mlops_watchdog_gpu_info{job=~"$job",node=~"$node",instance=~"$instance"}, gpu)',
            ),
        ],
        [
            ("Overview", overview()),
            ("Utilisation", utilisation()),
            ("Memory", memory()),
            ("Thermals and power", thermals()),
            ("Clocks", clocks()),
            ("Errors", errors()),
            ("Detectors", detectors()),
        ],
    )

"""The GPUs dashboard: utilisation, VRAM, thermals and power, clock events, XID and ECC errors."""

from __future__ import annotations

from typing import Any

from watchdog.dashboards.panels import (
    Panel,
    base_variables,
    dashboard,
    graph,
    listing,
    over_interval,
    query_variable,
    selector,
    single,
    timeline,
)

UID = "mlops-watchdog-gpus"
FILENAME = f"{UID}.json"
LEGEND = "{{gpu}}"  # the GPU's UUID: unique across hosts, so the instance need not be named


def gpu(metric: str) -> str:
    """A selector for a series labelled by GPU."""
    return selector(metric, "gpu")


def overview() -> list[Panel]:
    return [
        single(
            "Telemetry",
            "bool",
            (f"max by (instance) ({selector('mlops_watchdog_gpu_telemetry_up')})", "{{instance}}"),
            states={0: ("down", "red"), 1: ("up", "green")},
            description="Whether NVML answers on each watchdog host.",
        ),
        graph(
            "GPU utilisation",
            "percentunit",
            (gpu("mlops_watchdog_gpu_utilization_ratio"), LEGEND),
            span=9,
            ratio=True,
            description="Share of time a kernel was running.",
        ),
        graph(
            "Memory controller utilisation",
            "percentunit",
            (gpu("mlops_watchdog_gpu_memory_utilization_ratio"), LEGEND),
            span=9,
            ratio=True,
            description="Share of time device memory was read or written.",
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
        ),
        graph(
            "VRAM used share",
            "percentunit",
            (
                f"{gpu('mlops_watchdog_gpu_memory_used_bytes')} "
                f"/ {gpu('mlops_watchdog_gpu_memory_total_bytes')}",
                LEGEND,
            ),
            ratio=True,
            description="A line that only climbs while the load is flat is a leak.",
        ),
        listing(
            "VRAM per process",
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
        graph("Temperature", "celsius", (gpu("mlops_watchdog_gpu_temperature_celsius"), LEGEND)),
        graph(
            "Power vs limit",
            "watt",
            (gpu("mlops_watchdog_gpu_power_watts"), "{{gpu}} draw"),
            (gpu("mlops_watchdog_gpu_power_limit_watts"), "{{gpu}} limit"),
            dashed=["B"],
        ),
        timeline(
            "Clock-event reasons",
            "bool",
            (
                f"max by (gpu, reason) ({gpu('mlops_watchdog_gpu_clock_event_active')})",
                "{{gpu}} {{reason}}",
            ),
            states={0: ("inactive", "transparent"), 1: ("active", "orange")},
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
        ),
    ]


def render() -> dict[str, Any]:
    return dashboard(
        "mlops-watchdog: GPUs",
        UID,
        "NVML telemetry of the GPUs on the watchdog's hosts.",
        [
            *base_variables(),
            query_variable(
                "gpu",
                "GPU",
                'label_values(mlops_watchdog_gpu_memory_used_bytes{instance=~"$instance"}, gpu)',
            ),
        ],
        [
            ("Overview", overview()),
            ("Memory", memory()),
            ("Thermals and power", thermals()),
            ("Errors", errors()),
        ],
    )

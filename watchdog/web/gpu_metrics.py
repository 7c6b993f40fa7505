"""GPU metrics: the latest NVML sample of each GPU, the detectors' verdicts, energy per token.

A field a GPU does not support has no series at all: an absent fan is not a fan at 0 %.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from watchdog.alerting.kinds import KINDS
from watchdog.gpu.nvml import CLOCK_EVENT_REASONS, GpuSample
from watchdog.gpu.watch import GpuWatch
from watchdog.web.metrics import PREFIX, WORK_BUCKETS, Histogram

# (metric, help, GpuSample field); gauges with only the `gpu` label.
GAUGES = (
    ("utilization_ratio", "Share of time a kernel ran, last sample period.", "util_gpu"),
    ("memory_utilization_ratio", "Share of time memory was read or written.", "util_memory"),
    ("memory_total_bytes", "VRAM on the GPU.", "memory_total"),
    ("memory_used_bytes", "VRAM allocated by processes (nvmlMemory_v2).", "memory_used"),
    ("memory_free_bytes", "VRAM free.", "memory_free"),
    ("memory_reserved_bytes", "VRAM the driver and firmware reserve.", "memory_reserved"),
    ("temperature_celsius", "GPU core temperature.", "temperature_c"),
    ("power_watts", "Power draw.", "power_w"),
    ("power_limit_watts", "Enforced power limit.", "power_limit_w"),
    ("sm_clock_hertz", "SM clock.", "sm_clock_hz"),
    ("memory_clock_hertz", "Memory clock.", "memory_clock_hz"),
    ("performance_state", "Performance state: 0 (P0) is the fastest.", "performance_state"),
    ("fan_speed_ratio", "Fan speed, share of the maximum.", "fan_ratio"),
    ("remap_pending", "1 while a row remap waits for a GPU reset.", "remap_pending"),
    ("remap_failed", "1 once a row remap failed: the GPU needs service.", "remap_failed"),
    ("mig_enabled", "1 when MIG mode is on.", "mig_enabled"),
)
DETECTED = [
    name
    for name, kind in KINDS.items()
    if kind.gpu and name not in ("gpu_idle_while_serving", "gpu_missing")
]


def _value(sample: GpuSample, field: str) -> float | None:
    value = getattr(sample, field)
    return None if value is None else float(value)


class GpuCollector(Collector):
    def __init__(self, watch: GpuWatch):
        self.watch = watch
        self.sampling = Histogram(WORK_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        w = self.watch
        yield GaugeMetricFamily(
            PREFIX + "gpu_telemetry_up", "1 while NVML answers.", value=float(w.up)
        )
        samples = sorted(w.latest.values(), key=lambda g: g.index)
        if w.up:
            yield GaugeMetricFamily(
                PREFIX + "gpus", "GPUs NVML lists now.", value=float(len(samples))
            )
        info = GaugeMetricFamily(
            PREFIX + "gpu_info",
            "The GPU's index, model name and driver.",
            labels=["gpu", "index", "name", "driver"],
        )
        for g in samples:
            info.add_metric([g.uuid, str(g.index), g.name, w.driver or ""], 1.0)
        yield info
        for name, doc, field in GAUGES:
            family = GaugeMetricFamily(PREFIX + "gpu_" + name, doc, labels=["gpu"])
            for g in samples:
                value = _value(g, field)
                if value is not None:
                    family.add_metric([g.uuid], value)
            yield family
        yield from self._counters(samples)
        yield from self._processes(samples)
        yield from self._detectors()
        yield from self._energy()
        for seconds in w.sampling_s:
            self.sampling.observe(seconds)
        w.sampling_s.clear()
        histogram = HistogramMetricFamily(
            PREFIX + "gpu_sampling_seconds", "Time to read every GPU once through NVML."
        )
        histogram.add_metric([], self.sampling.buckets(), self.sampling.total)
        yield histogram

    def _counters(self, samples: list[GpuSample]) -> Iterator[Metric]:
        energy = CounterMetricFamily(
            PREFIX + "gpu_energy_joules", "Energy used since the driver loaded.", labels=["gpu"]
        )
        ecc = CounterMetricFamily(
            PREFIX + "gpu_ecc_errors",
            "ECC errors: corrected over the GPU's life, uncorrected since the driver loaded.",
            labels=["gpu", "type"],
        )
        reasons = GaugeMetricFamily(
            PREFIX + "gpu_clock_event_active",
            "1 while this clock-event (throttle) reason holds the clocks back.",
            labels=["gpu", "reason"],
        )
        rows = GaugeMetricFamily(
            PREFIX + "gpu_remapped_rows", "Memory rows remapped.", labels=["gpu", "type"]
        )
        pcie = GaugeMetricFamily(
            PREFIX + "gpu_pcie_bytes_per_second", "PCIe throughput.", labels=["gpu", "direction"]
        )
        # Read around probe runs only (it costs ~6 ms per read on an H100): GPUs bound to an
        # endpoint have it.
        read = self.watch.nvml.energy_seen if self.watch.nvml is not None else {}
        for g in samples:
            joules = g.energy_j if g.energy_j is not None else read.get(g.uuid)
            if joules is not None:
                energy.add_metric([g.uuid], joules)
            if g.ecc_corrected_aggregate is not None:
                ecc.add_metric([g.uuid, "corrected"], float(g.ecc_corrected_aggregate))
            if g.ecc_uncorrected_volatile is not None:
                ecc.add_metric([g.uuid, "uncorrected"], float(g.ecc_uncorrected_volatile))
            if g.clock_events is not None:
                for reason in CLOCK_EVENT_REASONS:
                    reasons.add_metric([g.uuid, reason], float(reason in g.clock_events))
            if g.remapped_rows_correctable is not None:
                rows.add_metric([g.uuid, "correctable"], float(g.remapped_rows_correctable))
            if g.remapped_rows_uncorrectable is not None:
                rows.add_metric([g.uuid, "uncorrectable"], float(g.remapped_rows_uncorrectable))
            for direction, value in (("tx", g.pcie_tx_bytes_s), ("rx", g.pcie_rx_bytes_s)):
                if value is not None:
                    pcie.add_metric([g.uuid, direction], value)
        xids = CounterMetricFamily(
            PREFIX + "gpu_xid_errors", "Critical XID events, by code.", labels=["gpu", "xid"]
        )
        last = GaugeMetricFamily(
            PREFIX + "gpu_xid_last_seen_timestamp_seconds",
            "When this XID code was last seen.",
            labels=["gpu", "xid"],
        )
        for (uuid, code), seen in sorted(self.watch.xids.items()):
            xids.add_metric([uuid, str(code)], float(seen.count))
            last.add_metric([uuid, str(code)], seen.last_seen)
        yield from (energy, ecc, reasons, rows, pcie, xids, last)

    def _processes(self, samples: list[GpuSample]) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            PREFIX + "gpu_processes", "Compute processes on the GPU.", labels=["gpu"]
        )
        memory = GaugeMetricFamily(
            PREFIX + "gpu_process_memory_bytes",
            "VRAM each compute process holds.",
            labels=["gpu", "pid", "process"],
        )
        for g in samples:
            if g.processes is None:
                continue
            count.add_metric([g.uuid], float(len(g.processes)))
            for p in g.processes:
                if p.used_bytes is not None:
                    memory.add_metric([g.uuid, str(p.pid), p.name], float(p.used_bytes))
        yield from (count, memory)

    def _detectors(self) -> Iterator[Metric]:
        findings = self.watch.findings
        detected = GaugeMetricFamily(
            PREFIX + "gpu_detected",
            "1 while a detector sees the problem (before alert thresholds).",
            labels=["gpu", "kind"],
        )
        for kind in DETECTED:
            for f in findings.get(kind, []):
                detected.add_metric([f.subject, kind], float(f.failing))
        growth = GaugeMetricFamily(
            PREFIX + "gpu_memory_growth_bytes_per_second",
            "Sen's slope of used VRAM over the leak window.",
            labels=["gpu"],
        )
        for f in findings.get("gpu_vram_leak", []):
            if f.value is not None:
                growth.add_metric([f.subject], f.value)
        throttle = GaugeMetricFamily(
            PREFIX + "gpu_throttle_duration_seconds",
            "How long thermal or power-cap reasons have held the clocks, without a break.",
            labels=["gpu"],
        )
        for f in findings.get("gpu_throttling", []):
            if f.value is not None:
                throttle.add_metric([f.subject], f.value)
        idle = GaugeMetricFamily(
            PREFIX + "gpu_idle_while_serving",
            "1 while probes succeed but the endpoint's GPU does no work for them.",
            labels=["endpoint", "gpu"],
        )
        for f in findings.get("gpu_idle_while_serving", []):
            idle.add_metric([f.subject, f.gpu or ""], float(f.failing))
        yield from (detected, growth, throttle, idle)

    def _energy(self) -> Iterator[Metric]:
        w = self.watch
        per_token = GaugeMetricFamily(
            PREFIX + "probe_energy_per_token_joules",
            "Energy of the endpoint's GPUs over its last probe run, per output token.",
            labels=["endpoint"],
        )
        cost = GaugeMetricFamily(
            PREFIX + "probe_cost_per_1k_tokens",
            "That energy priced at gpu.price_per_kwh, per 1000 output tokens.",
            labels=["endpoint", "currency"],
        )
        for endpoint, e in sorted(w.energy.items()):
            if e.joules_per_token is not None:
                per_token.add_metric([endpoint], e.joules_per_token)
            if e.cost_per_1k_tokens is not None:
                cost.add_metric([endpoint, w.settings.currency], e.cost_per_1k_tokens)
        yield from (per_token, cost)

"""GPU detectors: pure functions from recent telemetry and probe runs to findings.

Each detector is one module with `detect(context) -> list[Finding]`, registered in DETECTORS
under its alert kind. A finding says failing or fine for one subject: a GPU (by UUID) or, for
idle-while-serving, an endpoint. No finding for a subject means no evidence either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from watchdog.gpu.nvml import GpuSample
from watchdog.gpu.settings import Gpu
from watchdog.result import Finding


@dataclass(frozen=True)
class ProbeWindow:
    """One probe run of an endpoint bound to GPUs, as the GPUs saw it."""

    endpoint: str
    started: float  # Unix seconds
    ended: float
    answered: bool  # every prompt got an answer (format checks aside)
    tokens_per_s: float | None  # median decode speed of the run's answers
    gpu_utilization: Mapping[str, float]  # UUID: highest utilisation read during the run


@dataclass(frozen=True)
class XidCount:
    count: int
    last_seen: float  # Unix seconds


@dataclass(frozen=True)
class Context:
    now: float  # Unix seconds
    settings: Gpu
    history: Mapping[str, Sequence[GpuSample]]  # UUID: samples, oldest first, >= leak.window
    windows: Sequence[ProbeWindow]  # recent probe runs of bound endpoints, oldest first
    bindings: Mapping[str, Sequence[str]]  # endpoint: the UUIDs it is bound to
    xids: Mapping[tuple[str, int], XidCount] = field(default_factory=dict)  # (UUID, code)
    lost: frozenset[str] = frozenset()  # UUIDs NVML reported lost since the last evaluation
    gpu_count: int = 0
    gpu_count_max: int = 0  # over hardware.missing_window
    names: Mapping[str, str] = field(default_factory=dict)  # UUID: "GPU 0 (NVIDIA H100 ...)"


Detector = Callable[[Context], list[Finding]]


def _registry() -> dict[str, Detector]:
    from watchdog.gpu.detectors import contention, hardware, idle, leak, missing, throttle

    return {
        "gpu_vram_leak": leak.detect,
        "gpu_vram_contention": contention.detect,
        "gpu_idle_while_serving": idle.detect,
        "gpu_throttling": throttle.detect,
        "gpu_hardware": hardware.detect,
        "gpu_missing": missing.detect,
    }


def run_all(context: Context) -> dict[str, list[Finding]]:
    """Every detector's findings, by alert kind."""
    return {kind: detect(context) for kind, detect in _registry().items()}

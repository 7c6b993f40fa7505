"""GPU detectors: pure functions from recent telemetry and probe runs to findings.

Each detector is one module with `detect(context) -> list[Finding]`, registered in DETECTORS
under its alert kind. A finding says failing or fine for one subject: a GPU (by UUID) or, for
idle-while-serving, an endpoint. No finding for a subject means no evidence either way.
"""

from __future__ import annotations

from collections.abc import Callable

from watchdog.gpu.detectors import contention, hardware, idle, leak, missing, throttle
from watchdog.gpu.detectors.context import Context, ProbeWindow, XidCount
from watchdog.result import Finding

__all__ = ["DETECTORS", "Context", "Detector", "ProbeWindow", "XidCount", "run_all"]


Detector = Callable[[Context], list[Finding]]


# One line per detector: its alert kind and its module's detect().
DETECTORS: dict[str, Detector] = {
    "gpu_vram_leak": leak.detect,
    "gpu_vram_contention": contention.detect,
    "gpu_idle_while_serving": idle.detect,
    "gpu_throttling": throttle.detect,
    "gpu_hardware": hardware.detect,
    "gpu_missing": missing.detect,
}


def run_all(context: Context) -> dict[str, list[Finding]]:
    """Every detector's findings, by alert kind."""
    return {kind: detect(context) for kind, detect in DETECTORS.items()}

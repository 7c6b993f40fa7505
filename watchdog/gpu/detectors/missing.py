"""gpu_missing: fewer GPUs answer now than did during the missing window."""

from __future__ import annotations

from watchdog.gpu.detectors._format import duration
from watchdog.gpu.detectors.context import Context
from watchdog.result import Finding


def detect(context: Context) -> list[Finding]:
    most = context.gpu_count_max
    if most == 0:
        return []  # never saw a GPU: a host without one is not missing any
    gone = max(most - context.gpu_count, 0)
    plural = "GPU" if most == 1 else "GPUs"
    window = duration(context.settings.hardware.missing_window)
    if gone:
        summary = (
            f"{gone} of {most} {plural} missing ({context.gpu_count} seen now, {most} in the "
            f"last {window}): a GPU fell off the bus or its driver lost it; check dmesg for XIDs"
        )
    else:
        summary = f"{most} of {most} {plural} seen (as many as in the last {window})"
    return [Finding("gpus", bool(gone), summary, value=float(gone))]

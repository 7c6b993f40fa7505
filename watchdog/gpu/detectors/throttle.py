"""gpu_throttling: thermal or power-cap clock events held without a break for too long."""

from __future__ import annotations

from collections.abc import Sequence

from watchdog.gpu.detectors._format import duration
from watchdog.gpu.detectors.context import Context
from watchdog.gpu.nvml import GpuSample
from watchdog.result import Finding

POWER = frozenset({"sw_power_cap", "hw_power_brake_slowdown"})
# hw_slowdown is raised for heat as well as for power brake, so it earns a temperature too.
THERMAL = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown", "hw_slowdown"})


def detect(context: Context) -> list[Finding]:
    wanted = frozenset(context.settings.throttle.reasons)
    findings = []
    for uuid, history in context.history.items():
        run = _run(history, wanted)
        if run is None:
            continue
        held, active, latest = run
        failing = held >= context.settings.throttle.after
        summary = _summary(context.names.get(uuid, uuid), held, active, latest)
        findings.append(Finding(uuid, failing, summary, value=held))
    return findings


def _run(
    history: Sequence[GpuSample], wanted: frozenset[str]
) -> tuple[float, set[str], GpuSample] | None:
    """(seconds held, reasons seen, latest sample) of the unbroken run ending at the latest
    sample that says anything; None when no sample reports clock events."""
    latest: GpuSample | None = None
    first: GpuSample | None = None
    active: set[str] = set()
    for sample in reversed(history):
        if sample.clock_events is None:
            continue  # proves nothing either way: neither a break nor more time held
        latest = latest or sample
        held = sample.clock_events & wanted
        if not held:
            break
        first = sample
        active |= held
    if latest is None:
        return None
    return (0.0 if first is None else latest.at - first.at), active, latest


def _summary(label: str, held: float, active: set[str], latest: GpuSample) -> str:
    if not active:
        return f"{label}: no throttling clock event active"
    facts = []
    if active & POWER and latest.power_w is not None:
        limit = "" if latest.power_limit_w is None else f" of a {latest.power_limit_w:.0f} W limit"
        facts.append(f"at {latest.power_w:.0f} W{limit}")
    if active & THERMAL and latest.temperature_c is not None:
        facts.append(f"at {latest.temperature_c:.0f} °C")
    text = f"{label}: {', '.join(sorted(active))} active for {duration(held)}"
    text += "".join(f" {fact}" for fact in facts)
    if "sw_power_cap" in active:
        load = "" if latest.util_gpu is None else f" under {latest.util_gpu:.0%} load"
        text += f": held at its power cap{load}"
    elif "hw_power_brake_slowdown" in active:
        text += ": the power brake is asserted (an external power supply or chassis signal)"
    elif active & THERMAL:
        text += ": clocks cut for heat; check cooling and airflow"
    return text

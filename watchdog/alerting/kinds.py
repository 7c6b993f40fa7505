"""Failure kinds: what one probe run says about each kind of alert, as pure functions."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from watchdog.alerting.settings import Slo
from watchdog.result import ProbeResult


@dataclass(frozen=True)
class Kind:
    title: str  # for people: "endpoint unreachable"
    severity: str
    error_classes: frozenset[str] = frozenset()
    source: str = "probe"  # what observes it: probe results, the GPU detectors, or drift

    @property
    def gpu(self) -> bool:
        return self.source == "gpu"


KINDS: dict[str, Kind] = {
    "unreachable": Kind("endpoint unreachable", "critical", frozenset({"connect", "dns", "tls"})),
    "timeout": Kind("requests time out", "critical", frozenset({"timeout"})),
    "http_error": Kind("HTTP errors", "critical", frozenset({"rate_limited", "http_status"})),
    "bad_response": Kind(
        "broken responses",
        "warning",
        frozenset({"bad_response", "stream_truncated", "empty_output", "too_large"}),
    ),
    "format": Kind("format checks failing", "warning", frozenset({"check_failed"})),
    "latency_slo": Kind("latency above its SLO", "warning"),
    "drift": Kind("behaviour drifted from its baseline", "warning", source="drift"),
    "gpu_vram_leak": Kind("VRAM leak", "warning", source="gpu"),
    "gpu_vram_contention": Kind("VRAM contention", "warning", source="gpu"),
    "gpu_idle_while_serving": Kind("GPU idle while serving", "critical", source="gpu"),
    "gpu_throttling": Kind("GPU throttling", "warning", source="gpu"),
    "gpu_hardware": Kind("GPU hardware errors", "critical", source="gpu"),
    "gpu_missing": Kind("GPU missing", "critical", source="gpu"),
}
PROBE_KINDS = [name for name, kind in KINDS.items() if kind.source == "probe"]


@dataclass(frozen=True)
class Observation:
    """One probe run's verdict on one kind, with the facts a page needs."""

    failing: bool
    summary: str  # what failed, for people
    error_class: str | None = None
    error_detail: str | None = None
    model: str | None = None
    ttft_p50_s: float | None = None
    e2e_p50_s: float | None = None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def observe(results: list[ProbeResult], slo: Slo) -> dict[str, Observation]:
    """Per kind: failing, fine, or (absent) no evidence either way.

    A kind is fine only when some prompt got a full answer without that kind of failure: an
    endpoint that refuses connections says nothing about whether its format is right.
    """
    answered = [r for r in results if r.answer.error_class is None]
    model = next((r.answer.model for r in results if r.answer.model), None)
    ttft = _median([r.answer.ttft_s for r in answered])
    e2e = _median([r.answer.e2e_s for r in answered])
    out: dict[str, Observation] = {}
    for name in PROBE_KINDS:
        kind = KINDS[name]
        if name == "latency_slo":
            observation = _latency(slo, ttft, e2e, len(answered))
            if observation:
                out[name] = Observation(
                    observation[0], observation[1], model=model, ttft_p50_s=ttft, e2e_p50_s=e2e
                )
            continue
        failed = [r for r in results if r.error_class in kind.error_classes]
        if failed:
            last = failed[-1]
            detail = last.answer.error_detail or _failed_checks(last)
            summary = f"{len(failed)}/{len(results)} prompts: {last.prompt_id}: {detail}"
            out[name] = Observation(
                True, summary, last.error_class, detail, model, ttft_p50_s=ttft, e2e_p50_s=e2e
            )
        elif answered:
            ok = f"{len(answered)}/{len(results)} prompts answered"
            out[name] = Observation(False, ok, model=model, ttft_p50_s=ttft, e2e_p50_s=e2e)
    return out


def _failed_checks(result: ProbeResult) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in result.checks if not c.ok)


def _latency(
    slo: Slo, ttft: float | None, e2e: float | None, answered: int
) -> tuple[bool, str] | None:
    if not answered or (slo.ttft_s is None and slo.e2e_s is None):
        return None
    breaches = []
    if slo.ttft_s is not None and ttft is not None and ttft > slo.ttft_s:
        breaches.append(f"TTFT p50 {ttft:.3f}s > SLO {slo.ttft_s:g}s")
    if slo.e2e_s is not None and e2e is not None and e2e > slo.e2e_s:
        breaches.append(f"e2e p50 {e2e:.3f}s > SLO {slo.e2e_s:g}s")
    return (True, "; ".join(breaches)) if breaches else (False, "within SLO")

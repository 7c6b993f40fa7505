"""Failure kinds: what one probe run says about each kind of alert, as pure functions."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import NamedTuple

from watchdog.endpoint import Slo
from watchdog.golden.checks import CANARY
from watchdog.result import ProbeResult, TierOutcome


@dataclass(frozen=True)
class Kind:
    title: str  # for people: "endpoint unreachable"
    severity: str
    error_classes: frozenset[str] = frozenset()
    source: str = "probe"  # what observes it: probe results, the GPU detectors, or drift
    # Its name in Alertmanager: the shipped Prometheus rule's where one means the same.
    alertname: str = ""
    # What it says of the endpoint while it fires, for routers (alerting/targets.py): "down"
    # (no good answers to send users to) or "degraded" (answers, but wrong, slow, drifted or
    # off its GPU). GPU kinds about a GPU itself say nothing of one endpoint.
    serving: str = ""

    @property
    def gpu(self) -> bool:
        return self.source == "gpu"


KINDS: dict[str, Kind] = {
    "unreachable": Kind(
        "endpoint unreachable",
        "critical",
        frozenset({"connect", "dns", "tls"}),
        alertname="EndpointDown",
        serving="down",
    ),
    "timeout": Kind(
        "requests time out",
        "critical",
        frozenset({"timeout"}),
        alertname="EndpointTimeout",
        serving="down",
    ),
    "http_error": Kind(
        "HTTP errors",
        "critical",
        frozenset({"rate_limited", "http_status"}),
        alertname="EndpointHTTPErrors",
        serving="down",
    ),
    "bad_response": Kind(
        "broken responses",
        "warning",
        frozenset({"bad_response", "stream_truncated", "empty_output", "too_large"}),
        alertname="EndpointBadResponses",
        serving="down",
    ),
    "format": Kind(
        "format checks failing",
        "warning",
        frozenset({"check_failed"}),
        alertname="FormatAccuracyLow",
        serving="degraded",
    ),
    "probe_error": Kind(
        "the watchdog cannot probe it",
        "critical",
        frozenset({"probe_error"}),
        alertname="ProbeError",
        serving="degraded",
    ),
    "latency_slo": Kind(
        "latency above its SLO", "warning", alertname="LatencySLOBreached", serving="degraded"
    ),
    # A golden prompt talked the model into giving away the run's canary from its system prompt.
    "canary_leak": Kind(
        "prompt injection leaked the system prompt",
        "warning",
        alertname="CanaryLeak",
        serving="degraded",
    ),
    # The health route says fine, the golden prompts get no answer: a hung engine behind a live
    # HTTP server, which load balancers and Kubernetes probes keep sending traffic to.
    "not_serving": Kind(
        "healthy but not serving", "critical", alertname="EndpointNotServing", serving="down"
    ),
    "drift": Kind(
        "behaviour drifted from its baseline",
        "warning",
        source="drift",
        alertname="BehaviourDrift",
        serving="degraded",
    ),
    "gpu_vram_leak": Kind("VRAM leak", "warning", source="gpu", alertname="GpuVramLeak"),
    "gpu_vram_contention": Kind(
        "VRAM contention", "warning", source="gpu", alertname="GpuVramContention"
    ),
    "gpu_idle_while_serving": Kind(
        "GPU idle while serving",
        "critical",
        source="gpu",
        alertname="GpuIdleWhileServing",
        serving="degraded",
    ),
    "gpu_throttling": Kind("GPU throttling", "warning", source="gpu", alertname="GpuThrottling"),
    "gpu_hardware": Kind(
        "GPU hardware errors", "critical", source="gpu", alertname="GpuHardwareError"
    ),
    "gpu_missing": Kind("GPU missing", "critical", source="gpu", alertname="GpuMissing"),
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


class _Seen(NamedTuple):
    """One kind's verdict before the run's shared facts join it: built for every kind after
    every run, so a tuple, not a frozen dataclass (about a quarter of the cost)."""

    failing: bool
    summary: str
    error_class: str | None = None
    error_detail: str | None = None


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def observe(
    results: list[ProbeResult], slo: Slo, tiers: list[TierOutcome] | None = None
) -> dict[str, Observation]:
    """Per kind: failing, fine, or (absent) no evidence either way.

    A kind is fine only when some prompt got a full answer without that kind of failure: an
    endpoint that refuses connections says nothing about whether its format is right.
    """
    answered = [r for r in results if r.answer.error_class is None]
    model = next((r.answer.model for r in results if r.answer.model), None)
    ttft = _median([r.answer.ttft_s for r in answered])
    e2e = _median([r.answer.e2e_s for r in answered])
    out: dict[str, Observation] = {}
    healthy = _healthy_but_unanswered(tiers or [])
    for name in PROBE_KINDS:
        if name == "latency_slo":
            seen = _latency(slo, ttft, e2e, len(answered))
        elif name == "not_serving":
            seen = _not_serving(tiers or [])
        else:
            seen = _failures(name, results, answered)
        if seen is None:
            continue
        summary = seen.summary
        if seen.failing and healthy and KINDS[name].error_classes:
            # The clue for on-call: the server says it is fine while nothing gets an answer (a
            # hung engine behind a live HTTP server, which load balancers keep sending to).
            summary = f"{summary} — yet the health route passes ({healthy})"
        out[name] = Observation(
            seen.failing, summary, seen.error_class, seen.error_detail, model, ttft, e2e
        )
    return out


def _healthy_but_unanswered(tiers: list[TierOutcome]) -> str | None:
    """What the health (or models) route said, when it passed and no golden prompt got an
    answer."""
    by_tier = {t.tier: t for t in tiers}
    healthy = by_tier.get("liveness") or by_tier.get("readiness")
    completion = by_tier.get("completion")
    if healthy and healthy.ok and completion and not completion.ok:
        return healthy.detail
    return None


def _failures(name: str, results: list[ProbeResult], answered: list[ProbeResult]) -> _Seen | None:
    """The kinds read off error classes, and canary leaks off their check."""
    if name == "canary_leak":
        failed = [r for r in results if leaked(r)]
        if not any(c.name == CANARY for r in answered for c in r.checks):
            return None  # no canary was asked about: no evidence
    else:
        failed = [r for r in results if r.error_class in KINDS[name].error_classes]
    if name == "format":  # a leak is its own kind: one page, not two
        failed = [r for r in failed if _failed_checks(r, but=CANARY)]
    if failed:
        last = failed[-1]
        only = CANARY if name == "canary_leak" else None
        detail = last.answer.error_detail or _failed_checks(last, only=only)
        summary = f"{len(failed)}/{len(results)} prompts: {last.prompt_id}: {detail}"
        return _Seen(True, summary, last.error_class, detail)
    if answered:
        return _Seen(False, f"{len(answered)}/{len(results)} prompts answered")
    return None


def _not_serving(tiers: list[TierOutcome]) -> _Seen | None:
    """What only this kind can tell: the health (or models) route passed and no golden prompt
    got an answer, with a failure that no other kind pages for. A failure another kind covers
    (a timeout, an HTTP error, a broken answer) pages once, under that kind, saying that health
    still passes: one incident, one page. Fine as soon as a prompt is answered, whether the
    routes were read in this run or not, so it resolves within `success_threshold` runs."""
    by_tier = {t.tier: t for t in tiers}
    healthy = by_tier.get("liveness") or by_tier.get("readiness")
    completion = by_tier.get("completion")
    if completion is not None and completion.ok:
        return _Seen(False, completion.detail)
    if healthy is None or completion is None or not healthy.ok:
        return None
    if any(completion.error_class in KINDS[k].error_classes for k in PROBE_KINDS):
        return None
    return _Seen(
        True,
        f"{healthy.detail}, but {completion.detail}",
        completion.error_class,
        completion.detail,
    )


def leaked(result: ProbeResult) -> bool:
    return any(c.name == CANARY and not c.ok for c in result.checks)


def _failed_checks(result: ProbeResult, only: str | None = None, but: str | None = None) -> str:
    return "; ".join(
        f"{c.name}: {c.detail}"
        for c in result.checks
        if not c.ok and (only is None or c.name == only) and c.name != but
    )


def _latency(slo: Slo, ttft: float | None, e2e: float | None, answered: int) -> _Seen | None:
    if not answered or (slo.ttft_s is None and slo.e2e_s is None):
        return None
    breaches = []
    if slo.ttft_s is not None and ttft is not None and ttft > slo.ttft_s:
        breaches.append(f"TTFT p50 {ttft:.3f}s > SLO {slo.ttft_s:g}s")
    if slo.e2e_s is not None and e2e is not None and e2e > slo.e2e_s:
        breaches.append(f"e2e p50 {e2e:.3f}s > SLO {slo.e2e_s:g}s")
    return _Seen(True, "; ".join(breaches)) if breaches else _Seen(False, "within SLO")

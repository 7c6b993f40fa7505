"""What one probe run says about each alert kind."""

from __future__ import annotations

from datetime import UTC, datetime

from watchdog.alerting.kinds import observe
from watchdog.endpoint import Slo
from watchdog.result import Answer, CheckOutcome, ProbeResult, TierOutcome


def result(
    prompt: str, error: str | None = None, check_ok: bool = True, e2e: float = 0.5
) -> ProbeResult:
    answer = Answer(
        text="x",
        model="m",
        ttft_s=0.1,
        e2e_s=e2e,
        error_class=error,  # type: ignore[arg-type]
        error_detail=f"{error} detail" if error else None,
    )
    checks = (
        [] if error else [CheckOutcome("contains", check_ok, "ok" if check_ok else "missing Paris")]
    )
    return ProbeResult(
        "e", prompt, "default", "h", datetime(2026, 1, 1, tzinfo=UTC), True, answer, checks, "f"
    )


def test_an_unreachable_endpoint_says_nothing_about_format() -> None:
    seen = observe([result("a", "connect"), result("b", "connect")], Slo(e2e_s=1))
    assert set(seen) == {"unreachable"}
    assert seen["unreachable"].failing and seen["unreachable"].error_class == "connect"
    assert seen["unreachable"].summary == "2/2 prompts: b: connect detail"


def test_format_failures_and_what_is_fine() -> None:
    seen = observe([result("a"), result("b", check_ok=False), result("c", "timeout")], Slo())
    assert (
        seen["format"].failing
        and seen["format"].summary == "1/3 prompts: b: contains: missing Paris"
    )
    assert seen["timeout"].failing
    assert not seen["unreachable"].failing and not seen["http_error"].failing
    assert "latency_slo" not in seen  # no SLO configured
    assert seen["unreachable"].model == "m"


def test_latency_slo_uses_the_median_of_answers() -> None:
    slow = [result("a", e2e=12), result("b", e2e=11), result("c", e2e=0.2)]
    seen = observe(slow, Slo(e2e_s=10))
    assert (
        seen["latency_slo"].failing and seen["latency_slo"].summary == "e2e p50 11.000s > SLO 10s"
    )
    assert not observe(slow, Slo(e2e_s=20))["latency_slo"].failing


def test_a_refused_api_key_is_an_http_error_not_a_hung_engine() -> None:
    """vLLM with --api-key: /health is open, /v1 answers 401 to a probe without the key."""
    refused = result("a", "http_status")
    refused.answer.status_code = 401
    tiers = [
        TierOutcome("liveness", True, "GET /health: HTTP 200", "/health", 200, 0.01),
        TierOutcome("completion", False, "0/1 answered", None, 401, 0.02, "http_status"),
    ]
    seen = observe([refused], Slo(), tiers)
    assert seen["http_error"].failing and seen["http_error"].error_class == "http_status"
    assert "not_serving" not in seen

"""What one golden prompt against one endpoint produced: timings, text, checks, error class."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

ErrorClass = Literal[
    "connect",
    "dns",
    "tls",
    "timeout",
    "rate_limited",
    "http_status",
    "bad_response",
    "stream_truncated",
    "empty_output",
    "too_large",
    "check_failed",
]
ERROR_CLASSES: tuple[str, ...] = ErrorClass.__args__  # type: ignore[attr-defined]
TokenSource = Literal["usage", "server_timings", "estimate"]


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    ok: bool
    detail: str


@dataclass
class Answer:
    """The prober's view of one request. Times are seconds from the request's start."""

    text: str = ""
    reasoning: str = ""
    tool_calls: int = 0
    status_code: int | None = None
    error_class: ErrorClass | None = None
    error_detail: str | None = None
    ttfb_s: float | None = None  # time to response headers
    ttft_s: float | None = None  # first non-empty content
    ttft_reasoning_s: float | None = None  # first non-empty reasoning
    e2e_s: float | None = None
    itl_s: list[float] = field(default_factory=list)  # gaps between content chunks
    output_tokens: int | None = None
    token_source: TokenSource | None = None
    finish_reason: str | None = None
    model: str | None = None
    system_fingerprint: str | None = None
    server_timings: dict[str, float] | None = None

    @property
    def reasoning_only(self) -> bool:
        """The model thought but did not answer (a reasoning model out of max_tokens)."""
        return not self.text.strip() and bool(self.reasoning.strip()) and not self.tool_calls

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e − TTFT) / (n − 1)."""
        n = self.output_tokens
        if self.ttft_s is None or self.e2e_s is None or not n or n < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: 1/TPOT when streamed, else output tokens over e2e."""
        if self.tpot_s:
            return 1.0 / self.tpot_s
        if self.output_tokens and self.e2e_s:
            return self.output_tokens / self.e2e_s
        return None


@dataclass
class ProbeResult:
    """One stored row: an Answer placed in context, checked, and fingerprinted."""

    endpoint: str
    prompt_id: str
    golden_set: str
    golden_set_hash: str
    started_at: datetime
    stream: bool
    answer: Answer
    checks: list[CheckOutcome]
    fingerprint: str
    response_excerpt: str | None = None
    response_sha256: str | None = None
    output_profile: dict[str, int] | None = None  # hashed character 3-grams, for output drift
    # The first answer after a fingerprint change or an endpoint restart: kept out of latency drift.
    cold_reason: str | None = None

    @property
    def cold(self) -> bool:
        return self.cold_reason is not None

    @property
    def error_class(self) -> ErrorClass | None:
        if self.answer.error_class:
            return self.answer.error_class
        return "check_failed" if any(not c.ok for c in self.checks) else None

    @property
    def ok(self) -> bool:
        return self.error_class is None

    def to_json(self) -> dict[str, Any]:
        """The `once --json` object (DESIGN.md, "JSON Lines fields")."""
        a = self.answer
        itl = sorted(a.itl_s)
        return {
            "endpoint": self.endpoint,
            "prompt_id": self.prompt_id,
            "golden_set": self.golden_set,
            "ok": self.ok,
            "error_class": self.error_class,
            "error_detail": a.error_detail,
            "status_code": a.status_code,
            "stream": self.stream,
            "ttfb_s": a.ttfb_s,
            "ttft_s": a.ttft_s,
            "ttft_reasoning_s": a.ttft_reasoning_s,
            "e2e_s": a.e2e_s,
            "itl_p50_s": percentile(itl, 50),
            "itl_p95_s": percentile(itl, 95),
            "itl_max_s": itl[-1] if itl else None,
            "tpot_s": a.tpot_s,
            "tokens_per_s": a.tokens_per_s,
            "output_tokens": a.output_tokens,
            "token_source": a.token_source,
            "finish_reason": a.finish_reason,
            "reasoning_only": a.reasoning_only,
            "model": a.model,
            "checks": [dict(vars(c)) for c in self.checks],
            "fingerprint": self.fingerprint,
            "golden_set_hash": self.golden_set_hash,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "cold": self.cold,
            "response_excerpt": self.response_excerpt,
            "response_sha256": self.response_sha256,
        }


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile of already sorted values (numpy's default method)."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)

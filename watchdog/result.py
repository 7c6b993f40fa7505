"""What is observed: one golden prompt's answer and its checks (ProbeResult), a whole probe run
(Run) with its readiness tiers and the engine's own load, change events, drift signals and GPU
findings. Every other part of the watchdog produces or consumes these; this module imports
none of them."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
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
    # Something no class foresaw went wrong inside the watchdog while probing (its own bug, or
    # a library's): still a recorded result that pages, never a crashed job.
    "probe_error",
]
ERROR_CLASSES: tuple[str, ...] = ErrorClass.__args__  # type: ignore[attr-defined]
# Where an answer's `output_tokens` came from: the engine's own count (`usage`, llama.cpp's
# `server_timings`), the model's tokenizer run over the answer's text (`tokenizer`), about four
# characters a token (`estimate`), or streamed events, which are not tokens (`events`: Triton
# sends one per piece of text, often a word): no per-token figure rests on those.
TokenSource = Literal["usage", "server_timings", "tokenizer", "estimate", "events"]
Status = Literal["ok", "drift", "inconclusive"]  # of a drift signal
# llama-server has no process_start_time_seconds but sends this header with /metrics. Despite
# its name it is ggml_time_us() at startup, a monotonic clock (microseconds since boot on
# Linux), so it is kept as an opaque marker that changes when the process restarts.
START_MARKER_HEADER = "Process-Start-Time-Unix"


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
    last_content_s: float | None = field(default=None, repr=False)  # when the last piece came

    def add_content(self, text: str, at_s: float) -> None:
        """A streamed piece of the answer that arrived `at_s` after the request was sent: the
        first sets TTFT, each later one adds an inter-token gap."""
        if self.last_content_s is None:
            self.ttft_s = at_s
        else:
            self.itl_s.append(at_s - self.last_content_s)
        self.last_content_s = at_s
        self.text += text

    def add_reasoning(self, text: str, at_s: float) -> None:
        """A streamed piece of reasoning; the first one's arrival is the reasoning's TTFT."""
        if self.ttft_reasoning_s is None:
            self.ttft_reasoning_s = at_s
        self.reasoning += text

    @property
    def reasoning_only(self) -> bool:
        """The model thought but did not answer (a reasoning model out of max_tokens)."""
        return not self.text.strip() and bool(self.reasoning.strip()) and not self.tool_calls

    @property
    def tokens(self) -> int | None:
        """`output_tokens` when they count tokens; None when they count streamed events."""
        return None if self.token_source == "events" else self.output_tokens

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e − TTFT) / (n − 1). None when all the
        text came at once (one streamed piece of several tokens): its pace could not be seen."""
        n = self.tokens
        if self.ttft_s is None or self.e2e_s is None or not n or n < 2:
            return None
        if self.e2e_s <= self.ttft_s:
            return None
        return (self.e2e_s - self.ttft_s) / (n - 1)

    @property
    def tokens_per_s(self) -> float | None:
        """Decode speed: 1/TPOT when streamed, else output tokens over e2e."""
        if self.tpot_s:
            return 1.0 / self.tpot_s
        if self.tokens and self.e2e_s:
            return self.tokens / self.e2e_s
        return None


def fingerprint_parts(
    identity: dict[str, Any], system_fingerprint: str | None, golden_set_hash: str
) -> dict[str, Any]:
    """Everything an answer's fingerprint hashes: what answered, and what it was asked. Stored
    whole as the fingerprint's components, so that a reader can tell which part changed."""
    return {
        **identity,
        "system_fingerprint": system_fingerprint,
        "golden_set_hash": golden_set_hash,
    }


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
    # The W3C trace context it was sent with: the run's trace, the prompt's span.
    trace_id: str | None = None
    span_id: str | None = None

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
            "trace_id": self.trace_id,
            "span_id": self.span_id,
        }


@dataclass(frozen=True)
class TierOutcome:
    tier: str
    ok: bool
    detail: str  # what was asked and what came back, for people
    path: str | None = None
    status_code: int | None = None
    latency_s: float | None = None
    error_class: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))  # flat fields: asdict's deep copy cost more than the rest


@dataclass(frozen=True)
class TtftHistogram:
    """Cumulative counts per upper bound (le, ascending, +Inf last), with sum and count."""

    buckets: tuple[tuple[float, float], ...]
    sum: float
    count: float


@dataclass(frozen=True)
class ServerLoad:
    """One read of an engine's /metrics. `values` holds only the names the engine exposes;
    `sources` says which engine metric each came from; `started_at` is Unix seconds;
    `start_marker` is an opaque value that changes on restart; `totals` is one entry per counter
    series (`name{label="value"}`). The last three are kept to tell a restart."""

    values: dict[str, float]
    ttft: TtftHistogram | None = None
    started_at: float | None = None
    totals: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    start_marker: str | None = None

    def restarted_since(self, previous: ServerLoad) -> str | None:
        """Why the engine must have restarted between `previous` and this read, or None."""
        if (
            self.started_at is not None
            and previous.started_at is not None
            and self.started_at != previous.started_at
        ):
            return (
                f"process start time changed from {_when(previous.started_at)} "
                f"to {_when(self.started_at)}"
            )
        if (
            self.start_marker is not None
            and previous.start_marker is not None
            and self.start_marker != previous.start_marker
        ):
            return (
                f"{START_MARKER_HEADER} header changed from {previous.start_marker} "
                f"to {self.start_marker}"
            )
        # Only series present both times: a series that appears or vanishes (a model loaded
        # or unloaded) says nothing about the process.
        for key in sorted(self.totals.keys() & previous.totals.keys()):
            before, now = previous.totals[key], self.totals[key]
            if now < before:
                return f"counter {key} went down from {_number(before)} to {_number(now)}"
        return None

    def to_json(self) -> dict[str, Any]:
        """A compact, JSON-able record for storage."""
        return {
            "values": dict(self.values),
            "ttft": None if self.ttft is None else {"sum": self.ttft.sum, "count": self.ttft.count},
            "started_at": self.started_at,
        }


@dataclass
class Run:
    run_id: str
    results: list[ProbeResult]
    identity: dict[str, Any]
    # Liveness and readiness when they were read for this run (not at every run of a fast
    # probe: see LOOK_EVERY_S), and completion.
    tiers: list[TierOutcome] = field(default_factory=list)
    load: ServerLoad | None = None  # the engine's own metrics, when read for this run
    load_error: str | None = None  # why they could not be read

    def tier(self, name: str) -> TierOutcome | None:
        return next((t for t in self.tiers if t.tier == name), None)

    def tier_rows(self) -> list[dict[str, Any]]:
        return [t.to_json() for t in self.tiers]

    def load_row(self) -> dict[str, Any] | None:
        """The engine's metrics as stored next to the run's results, or why they are missing."""
        if self.load is None and self.load_error is None:
            return None
        at = self.results[0].started_at.timestamp() if self.results else None
        return {
            "at_ts": at,
            "ok": int(self.load is not None),
            "load": json.dumps(self.load.to_json()) if self.load else None,
            "detail": self.load_error,
        }


@dataclass(frozen=True)
class Signal:
    endpoint: str
    golden_set: str
    signal: str  # one of SIGNALS
    status: Status
    score: float | None  # the signal's effect: p50 ratio - 1, pass-rate drop, similarity drop
    detail: str  # for people: what was compared, the numbers, and why this status
    p_value: float | None = None
    baseline_fingerprint: str | None = None
    current_fingerprint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Change:
    """Something about an endpoint changed: what answers (fingerprint) or what it is asked
    (the system prompt or template in the config)."""

    endpoint: str
    at: str  # RFC 3339 UTC
    kind: Literal["fingerprint", "template"]
    before: str | None  # short hashes
    after: str
    detail: str  # for people: which parts changed, e.g. "model id A → B"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    subject: str  # a GPU UUID, an endpoint name, or "gpus" for the host's GPU count
    failing: bool
    summary: str  # for people: what was seen, and for failures the likely cause
    gpu: str | None = None  # the GPU concerned, when the subject is an endpoint
    value: float | None = None  # the detector's measure, exported as a metric


def percentile(sorted_values: list[float], pct: float) -> float | None:
    """Linear-interpolated percentile of already sorted values (numpy's default method)."""
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * pct / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _number(value: float) -> str:
    return f"{value:.15g}"


def _when(unix_s: float) -> str:
    try:
        return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):  # not a plausible time: say it as it came
        return _number(unix_s)

"""W3C trace context on every golden prompt: a new trace per probe run, a span per prompt.
An engine that traces (vLLM's OTLP tracing, say) then ties its own span to the probe that
caused it, and the stored result names the trace to look up."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

HEADER = "traceparent"
_sending: ContextVar[str | None] = ContextVar("mlops_watchdog_traceparent", default=None)


@dataclass(frozen=True)
class Span:
    trace_id: str  # 32 lowercase hex digits, the run's
    span_id: str  # 16, the prompt's

    @property
    def traceparent(self) -> str:
        """Version 00, sampled: a tracing engine should record it."""
        return f"00-{self.trace_id}-{self.span_id}-01"


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span(trace_id: str) -> Span:
    return Span(trace_id, secrets.token_hex(8))


@contextmanager
def sending(span: Span) -> Iterator[None]:
    """Every request sent in this block carries the span's `traceparent`."""
    token = _sending.set(span.traceparent)
    try:
        yield
    finally:
        _sending.reset(token)


def with_traceparent(sent: dict[str, str]) -> dict[str, str]:
    """The request's headers with the current span's `traceparent`, unless the endpoint's own
    headers set one."""
    traceparent = _sending.get()
    if traceparent is None or any(k.lower() == HEADER for k in sent):
        return sent
    return {**sent, HEADER: traceparent}

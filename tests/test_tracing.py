"""W3C trace context: every golden prompt carries a `traceparent` (a new trace per run, a span
per prompt), and the result stores it, so an engine's trace of that request can be found."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import httpx

from tests.conftest import FakeClock
from tests.test_serving import Server, chat, write_config
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.probers import tracing
from watchdog.store import Store

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01")


async def test_every_prompt_carries_a_traceparent_that_the_result_keeps(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    server = Server(chat("Paris"))
    store = Store.open(tmp_path / "w.db")
    clock = FakeClock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        daemon = Daemon(cfg, client, store, clock)
        for _ in range(2):
            await daemon.probe_once(cfg.probes[0])
            clock.advance(60)
        out = daemon.write_reports()
    sent = [r for r in server.sent if r.url.path == "/v1/chat/completions"]
    spans = [TRACEPARENT.fullmatch(r.headers["traceparent"]) for r in sent]
    assert all(spans) and len(spans) == 10  # 5 prompts, 2 runs
    traces = [m.group(1) for m in spans if m]
    assert len(set(traces[:5])) == 1 and len(set(traces[5:])) == 1 and traces[0] != traces[5]
    assert len({m.group(2) for m in spans if m}) == 10  # a span each
    # The other routes (health, models, metrics) are not part of a prompt's span.
    assert not [r for r in server.sent if r not in sent and "traceparent" in r.headers]
    stored = list(store.db.query("select trace_id, span_id, prompt_id from results order by id"))
    assert [(r["trace_id"], r["span_id"]) for r in stored] == [
        (m.group(1), m.group(2)) for m in spans if m
    ]
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert {r["last_trace_id"] for r in rows} == {traces[5]}
    store.close()


async def test_an_endpoints_own_traceparent_is_kept(tmp_path: Path) -> None:
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    sent = tracing.with_traceparent({"TraceParent": own})
    assert sent == {"TraceParent": own}
    with tracing.sending(tracing.new_span(tracing.new_trace_id())):
        sent = tracing.with_traceparent({"Authorization": "Bearer x"})
    assert TRACEPARENT.fullmatch(sent["traceparent"])
    assert tracing.with_traceparent({}) == {}  # outside a prompt: none


def test_once_json_shows_the_trace(tmp_path: Path) -> None:
    from watchdog.result import Answer, ProbeResult
    from watchdog.runtime.clock import from_rfc3339

    span = tracing.new_span(tracing.new_trace_id())
    result = ProbeResult(
        "e",
        "p",
        "g",
        "h",
        from_rfc3339("2026-12-04T12:00:00Z"),
        False,
        Answer(),
        [],
        "f",
        trace_id=span.trace_id,
        span_id=span.span_id,
    )
    line = json.loads(json.dumps(result.to_json()))
    assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)

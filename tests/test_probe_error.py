"""A failure no error class foresaw, raised inside the transport, is a recorded result with its
own class and reason, counts on /metrics, and pages: never a crashed job that leaves the
endpoint silently unwatched (aiohttp once raised ValueError on credentials in base_url, two
tracebacks a second, no result, no alert)."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from tests.conftest import FakeClock
from tests.test_serving import write_config
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.store import Store

WHY = "Cannot combine AUTHORIZATION header with AUTH argument or credentials encoded in URL"


def raising(request: httpx.Request) -> httpx.Response:
    raise ValueError(WHY)


async def test_what_the_transport_raises_is_a_result_a_metric_and_a_page(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(write_config(tmp_path))
    store = Store.open(tmp_path / "w.db")
    clock = FakeClock()
    async with httpx.AsyncClient(transport=httpx.MockTransport(raising)) as client:
        daemon = Daemon(cfg, client, store, clock)
        with caplog.at_level(logging.ERROR):
            for _ in range(2):
                await daemon.probe_once(cfg.probes[0])
                clock.advance(60)
    results = list(store.db.query("select error_class, error_detail from results"))
    assert len(results) == 10  # 5 prompts, 2 runs: every one recorded
    assert {r["error_class"] for r in results} == {"probe_error"}
    assert results[0]["error_detail"] == f"the watchdog could not probe: ValueError: {WHY}"
    errors = daemon.registry.get_sample_value(
        "mlops_watchdog_probe_errors_total", {"endpoint": "e", "class": "probe_error"}
    )
    assert errors == 10
    alert = next(store.db.query("select * from alerts where kind = 'probe_error'"))
    assert alert["state"] == "firing" and WHY in alert["summary"]
    pages = list(store.db.query("select kind from outbox where event = 'firing'"))
    assert pages == [{"kind": "probe_error"}]  # one page, under its own kind
    # The traceback once, not at every prompt of every run.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in tracebacks]
    store.close()

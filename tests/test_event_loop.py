"""Work that took seconds at a thousand endpoints no longer holds up the event loop, where it
made due runs late: /metrics is built one metric family per turn of the loop (its text is what
prometheus_client writes in one go), and the reports are written in a thread, on a read-only
connection of their own."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from prometheus_client.registry import Collector

from tests.conftest import FakeClock
from tests.test_one_page import GOLDEN
from tests.test_serving import Server, body, chat
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.store import Store, StoreError
from watchdog.web.families import Histograms, Keyed
from watchdog.web.listener import One, exposition, takes_text
from watchdog.web.metrics import NodeLabelled


class Turns(Collector):
    """Three families, each noting how many turns the loop had taken when it was built."""

    def __init__(self, turns: list[int]) -> None:
        self.turns = turns
        self.seen: list[int] = []

    def collect(self) -> Iterator[Metric]:
        for i in range(3):
            self.seen.append(self.turns[0])
            yield GaugeMetricFamily(f"mlops_watchdog_part{i}", "test", value=float(i))


async def test_the_loop_turns_between_families() -> None:
    turns = [0]

    async def ticking() -> None:
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    await asyncio.sleep(0)
    collector = Turns(turns)
    text = await exposition(collector, generate_latest)
    ticker.cancel()
    assert text == generate_latest(collector)
    first, second, third = collector.seen[:3]  # built by the exposition, before the check
    assert first < second < third


class Collecting(Collector):
    """Notes whether Python's garbage collector was on while each family was built."""

    def __init__(self) -> None:
        self.on: list[bool] = []

    def collect(self) -> Iterator[Metric]:
        for i in range(3):
            self.on.append(gc.isenabled())
            yield GaugeMetricFamily(f"mlops_watchdog_part{i}", "test", value=float(i))


async def test_the_collector_is_off_while_a_scrape_is_built() -> None:
    """Collections stop every thread, the probes' too: none while the families are built, two
    scrapes at once included, and the collector as it was once they are done."""
    first, second = Collecting(), Collecting()
    assert gc.isenabled()
    await asyncio.gather(exposition(first, generate_latest), exposition(second, generate_latest))
    assert first.on == second.on == [False] * 3
    assert gc.isenabled()
    gc.disable()
    try:
        await exposition(Collecting(), generate_latest)
        assert not gc.isenabled()  # off before, off after: not the scrape's to turn on
    finally:
        gc.enable()


def daemon_config(tmp_path: Path) -> Any:
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        """
storage: {path: w.db, csv_dir: reports}
alerting: {failure_threshold: 1}
endpoints:
  - {name: e, api: openai-chat, base_url: "http://llm.test", timeout_s: 5}
  - {name: f, api: openai-chat, base_url: "http://llm.test", timeout_s: 5}
probes:
  - {endpoint: e, golden_set: one.yaml, stream: false, every: 30s}
  - {endpoint: f, golden_set: one.yaml, stream: false, every: 30s}
"""
    )
    return load_config(tmp_path / "config.yaml")


async def test_the_daemon_s_text_is_prometheus_client_s(tmp_path: Path) -> None:
    """A daemon with an alert firing: family by family, the text is byte for byte what
    prometheus_client writes in one go, in both formats."""
    cfg = daemon_config(tmp_path)
    clock = FakeClock()
    server = Server(chat("Paris"))
    broken = {"now": False}

    def handle(request: httpx.Request) -> httpx.Response:
        if broken["now"] and request.url.path == "/v1/chat/completions":
            return body({"error": "down"}, 500)
        return server.handle(request)

    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        daemon = Daemon(cfg, client, store, clock)
        for probe in cfg.probes:
            clock.advance(30)
            await daemon.probe_once(probe)
        broken["now"] = True
        clock.advance(30)
        await daemon.probe_once(cfg.probes[0])  # e: failing, its alert fires
        exposed = NodeLabelled(daemon.registry, "n1")
        text = await exposition(exposed, generate_latest)
        assert text == generate_latest(exposed)
        firing = b'mlops_watchdog_alerts_firing{endpoint="e",kind="http_error",node="n1"} 1.0'
        assert firing in text
        assert await exposition(exposed, openmetrics, True) == openmetrics(exposed)
    store.close()


async def test_the_reports_are_written_by_a_child_process(tmp_path: Path) -> None:
    cfg = daemon_config(tmp_path)
    clock = FakeClock()
    store = Store.open(tmp_path / "w.db")
    transport = httpx.MockTransport(Server(chat("Paris")).handle)
    async with httpx.AsyncClient(transport=transport) as client:
        daemon = Daemon(cfg, client, store, clock)
        for probe in cfg.probes:
            clock.advance(30)
            await daemon.probe_once(probe)
        daemon.write_reports = None  # type: ignore[assignment,method-assign]  # not in here
        await daemon.refresh_report_aside()
    folder = tmp_path / "reports"
    report = (folder / "health-24h.csv").read_text()
    assert "\ne," in report and "\nf," in report  # the fake clock's day, as the daemon sees it
    page = (folder / "daily-24h.html").read_text()
    assert "f" in page and "<html" in page
    store.close()


async def test_a_report_that_cannot_be_written_is_logged_and_the_daemon_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = daemon_config(tmp_path)
    store = Store.open(tmp_path / "w.db")
    (tmp_path / "reports").write_text("a file where the folder should be")
    async with httpx.AsyncClient(transport=httpx.MockTransport(Server(chat("Paris")).handle)) as c:
        daemon = Daemon(cfg, c, store, FakeClock())
        await daemon.refresh_report_aside()
    assert "health report not written: the report process exited with 1" in caplog.text
    store.close()


def test_a_reader_cannot_write(tmp_path: Path) -> None:
    Store.open(tmp_path / "w.db").close()
    reader = Store.reading(tmp_path / "w.db")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.db.execute("delete from results")
    reader.close()
    with pytest.raises(StoreError, match=r"nowhere\.db: cannot open the database to read"):
        Store.reading(tmp_path / "nowhere.db")


def test_fast_families_write_what_prometheus_client_writes() -> None:
    odd = 'a "quoted" back\\slash\nnewline'
    keyed = Keyed(
        "mlops_watchdog_x",
        "help with \\ and\nnewline",
        "counter",
        ["endpoint", "zz"],
        {("e", odd): 3, ("b", "y"): 1234567.0, ("c", ""): float("inf")},
    )
    gauge = Keyed("mlops_watchdog_g", "g", "gauge", [], {(): 0.5})
    histograms = Histograms(
        "mlops_watchdog_h",
        "h",
        ["endpoint", "prompt_id"],
        [(("e", odd), [("0.01", 1.0), ("+Inf", 2.0)], 0.3), (("a", "p"), [("+Inf", 0.0)], 0.0)],
    )
    for family in (keyed, gauge, histograms):
        for node in ("n1", 'n"2'):
            labelled = family.labelled(node)
            assert labelled.text().encode() == generate_latest(One(labelled))
        assert family.text().encode() == generate_latest(One(family))


@pytest.mark.parametrize(
    ("accept", "text"),
    [
        ("", True),
        ("*/*", True),
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",  # Prometheus 2.42
            True,
        ),
        ("application/openmetrics-text;version=1.0.0", False),
        ("application/openmetrics-text, text/plain;q=0", False),
    ],
)
def test_the_text_format_whenever_the_scraper_takes_it(accept: str, text: bool) -> None:
    assert takes_text(accept) is text

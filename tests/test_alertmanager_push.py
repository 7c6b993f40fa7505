"""alerting.route and the push to Alertmanager's v2 API: what is sent, when, and to whom.

The endpoint and both Alertmanagers are in-process (MockTransport) so that time is the test's;
tests/test_fleet_e2e.py pushes to a real Alertmanager pair."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import FakeClock
from tests.test_alert_delivery import Endpoint, write_config
from watchdog.alerting import silences
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.store import Store

PUSH = """  route: alertmanager
  alertmanager:
    urls: ["http://am-1.test:9093", "http://am-2.test:9093/"]
    resend_every: 1m
"""


class World(Endpoint):
    """The endpoint (up or down) and two Alertmanagers that keep what they are sent."""

    def __init__(self) -> None:
        super().__init__()
        self.am_down: set[str] = set()
        self.pushed: dict[str, list[list[dict[str, Any]]]] = {"am-1.test": [], "am-2.test": []}

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host not in self.pushed:
            return super().handle(request)
        assert (request.method, request.url.path) == ("POST", "/api/v2/alerts")
        if host in self.am_down:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        self.pushed[host].append(json.loads(request.content))
        return httpx.Response(200)


class Rig:
    def __init__(self, tmp_path: Path):
        self.config: Config = load_config(write_config(tmp_path, PUSH), env={})
        self.clock = FakeClock()
        self.world = World()
        self.store = Store.open(tmp_path / "w.db")
        self.registry = CollectorRegistry()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.world.handle))
        self.daemon = Daemon(self.config, self.client, self.store, self.clock, None, self.registry)

    async def minute(self, runs: int = 1) -> None:
        for _ in range(runs):
            self.clock.advance(60)
            await self.daemon.probe_once(self.config.probes[0])
            await asyncio.gather(*self.daemon.pushing)  # the push a new page starts at once

    def last(self, am: str = "am-1.test") -> list[dict[str, Any]]:
        return self.world.pushed[am][-1]


@pytest.fixture
async def rig(tmp_path: Path):
    rig = Rig(tmp_path)
    yield rig
    await rig.client.aclose()
    rig.store.close()


async def test_a_firing_alert_goes_to_every_alertmanager_at_once_and_again_each_resend(
    rig: Rig,
) -> None:
    await rig.minute(2)
    assert rig.world.pushed == {"am-1.test": [], "am-2.test": []}  # pending: nothing yet
    await rig.minute()
    started = rig.clock.now() - timedelta(minutes=2)
    fired = rig.last()
    assert fired == rig.last("am-2.test")
    assert fired == [
        {
            "labels": {
                "alertname": "EndpointDown",
                "kind": "unreachable",
                "severity": "critical",
                "node": "gpu-node-07",
                "endpoint": "vllm-a",
                "source": "mlops-watchdog",
            },
            "annotations": {
                "summary": "vllm-a on gpu-node-07: endpoint unreachable",
                "description": fired[0]["annotations"]["description"],
                "runbook_url": "https://github.com/mlops-watchdog/mlops-watchdog/blob/main/docs/runbooks/unreachable.md",
            },
            "startsAt": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            # four resends ahead: a watchdog that dies lets it expire, not page for ever
            "endsAt": (rig.clock.now() + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    ]
    assert "Connection refused" in fired[0]["annotations"]["description"]
    rig.clock.advance(60)
    await rig.daemon.pusher.push()  # the scheduler's resend job
    assert rig.last()[0]["endsAt"] == (rig.clock.now() + timedelta(minutes=4)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert rig.last()[0]["startsAt"] == fired[0]["startsAt"]


async def test_a_resolution_is_sent_with_its_end_for_15_minutes(rig: Rig) -> None:
    await rig.minute(3)
    rig.world.up = True
    await rig.minute(2)
    resolved_at = rig.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [a["endsAt"] for a in rig.last()] == [resolved_at]
    rig.clock.advance(14 * 60)
    await rig.daemon.pusher.push()
    assert [a["endsAt"] for a in rig.last()] == [resolved_at]
    sent = len(rig.world.pushed["am-1.test"])
    rig.clock.advance(2 * 60)
    await rig.daemon.pusher.push()
    assert len(rig.world.pushed["am-1.test"]) == sent  # nothing left to say


async def test_a_silenced_alert_is_not_pushed(rig: Rig) -> None:
    silences.add(rig.store.db, "vllm-a", "", 3600, "maintenance", rig.clock.now())
    await rig.minute(4)
    assert rig.world.pushed == {"am-1.test": [], "am-2.test": []}


async def test_no_slack_and_no_crash_when_an_alertmanager_is_down(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    assert rig.daemon.sender is None  # route: alertmanager: Alertmanager pages, we do not
    rig.world.am_down.add("am-2.test")
    with caplog.at_level(logging.INFO, logger="mlops_watchdog.alerting"):
        await rig.minute(3)
        rig.clock.advance(60)
        await rig.daemon.pusher.push()
        rig.world.am_down.clear()
        await rig.daemon.pusher.push()
    assert len(rig.world.pushed["am-1.test"]) == 3 and len(rig.world.pushed["am-2.test"]) == 1
    notes = [r.getMessage() for r in caplog.records if "pushed to Alertmanager" in r.getMessage()]
    assert notes == [
        "alerts not pushed to Alertmanager http://am-2.test:9093: ConnectError: [Errno 111] "
        "Connection refused",
        "alerts pushed to Alertmanager http://am-2.test:9093 again",
    ]
    pushes = "mlops_watchdog_alertmanager_pushes_total"
    assert rig.registry.get_sample_value(pushes, {"result": "ok"}) == 4
    assert rig.registry.get_sample_value(pushes, {"result": "failed"}) == 2
    page = rig.store.db.execute("select status from outbox where event = 'firing'").fetchall()
    assert page == [("suppressed",)]  # recorded, as every page is


@pytest.mark.parametrize(
    ("alerting", "problem"),
    [
        (
            '  route: alertmanager\n  slack: {webhook_url: "https://hooks.slack.test/x"}\n',
            "route: alertmanager leaves Slack to Alertmanager",
        ),
        ('  alertmanager: {urls: ["http://am:9093"]}\n', "pushes only with route: alertmanager"),
        ('  route: both\n  alertmanager: {urls: ["http://am:9093"]}\n', "route: both needs"),
        ("  route: pagerduty\n", "alerting.route"),
        ('  route: alertmanager\n  alertmanager: {urls: ["am:9093"]}\n', "must start with http"),
        ("  route: alertmanager\n  alertmanager: {urls: []}\n", "alerting.alertmanager.urls"),
    ],
)
def test_route_and_alertmanager_mistakes_are_config_errors(
    tmp_path: Path, alerting: str, problem: str
) -> None:
    with pytest.raises(InvalidFile) as caught:
        load_config(write_config(tmp_path, alerting), env={})
    assert problem in str(caught.value)


def test_route_alertmanager_without_a_push_is_valid(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "  route: alertmanager\n"), env={})
    assert config.alerting.route == "alertmanager" and config.alerting.alertmanager is None


def test_runbook_links_follow_alerting_runbook_base_url(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, '  runbook_base_url: "https://wiki.example/llm-runbooks"\n'), env={}
    )
    assert config.alerting.runbook("timeout") == "https://wiki.example/llm-runbooks/timeout.md"
    default = load_config(write_config(tmp_path, ""), env={}).alerting.runbook("timeout")
    assert default.endswith("/docs/runbooks/timeout.md")

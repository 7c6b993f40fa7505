"""The fleet end to end, with real binaries on loopback: `mlops-watchdog run` as two nodes, one
Debian Prometheus with the shipped rules, two Debian Alertmanagers clustered as an HA pair with
the shipped example config and Slack template, and the fake Slack.

Only timings differ from what ships: the rules' `for:` is shortened in a copy, and the
Alertmanagers' group wait and interval in theirs (tests/peers.alertmanager_config).

Polling here waits for real processes (Prometheus' evaluation, Alertmanager's gossip); the
daemon's own timing is tested with an injected clock elsewhere."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import need
from tests.fakeslack import FakeSlack
from tests.faultserver import FaultServer
from tests.peers import (
    ROOT,
    Alertmanager,
    LlamaServer,
    PeerMissing,
    alertmanager_config,
    free_port,
    start_alertmanagers,
    start_prometheus,
    stop_process,
)

RULES = sorted((ROOT / "alerts" / "prometheus").glob("*.rules.yml"))
SETTLE_S = 6.0  # three times the pair's peer timeout: a duplicate would have been sent by now
CAPITAL = """name: capital
prompts:
  - id: capital
    prompt: "What is the capital of France? Answer with one word."
    checks: [{contains: Paris}]
"""
HELLO = """name: hello
prompts:
  - id: hello
    prompt: "Say hello."
    checks: [{contains: Hello}]
"""


@dataclass
class Pair:
    slack: FakeSlack
    alertmanagers: list[Alertmanager]
    folder: Path
    logs: list[Path] = field(default_factory=list)

    def titles(self) -> list[str]:
        return [a["title"] for m in self.slack.accepted for a in m.get("attachments") or []]

    def pages(self, *words: str) -> list[str]:
        return [t for t in self.titles() if all(w in t for w in words)]

    def text(self, title_start: str) -> str:
        """The body of the first message whose title starts so."""
        return next(
            a["text"]
            for m in self.slack.accepted
            for a in m.get("attachments") or []
            if a["title"].startswith(title_start)
        )

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in self.logs)
                pytest.fail(f"{what}: not within {timeout:g} s; Slack saw {self.titles()}\n{tails}")
            time.sleep(0.25)

    def settle(self) -> None:
        time.sleep(SETTLE_S)  # give the second Alertmanager its chance to page twice


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("fleet")
    with FakeSlack() as slack:
        config = alertmanager_config(
            folder, slack.webhook_url, group_wait="1s", group_interval="2s", repeat_interval="1h"
        )
        try:
            alertmanagers = start_alertmanagers(folder, config, count=2)
        except PeerMissing as exc:
            need(str(exc))
            raise
        try:
            yield Pair(slack, alertmanagers, folder, [am.log for am in alertmanagers])
        finally:
            for am in alertmanagers:
                stop_process(am.process)


def start_watchdog(
    folder: Path, name: str, body: str, pair: Pair
) -> tuple[subprocess.Popen[bytes], str]:
    listen = f"127.0.0.1:{free_port()}"
    (folder / "capital.yaml").write_text(CAPITAL)
    (folder / "hello.yaml").write_text(HELLO)
    config = folder / f"{name}.yaml"
    config.write_text(
        f'storage: {{path: {name}.db, csv_dir: reports-{name}}}\nlisten: "{listen}"\n'
        f"node: {name}\n{body}"
    )
    log = folder / f"{name}.log"
    pair.logs.append(log)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    pair.wait(f"{name} ready", lambda: _ready(f"http://{listen}/readyz"), timeout=60)
    return process, listen


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def shortened_rules(folder: Path) -> tuple[Path, ...]:
    """Every shipped rules file with each `for:` at 2s: the same expressions, labels and texts."""
    copies = []
    for shipped in RULES:
        rules = yaml.safe_load(shipped.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "2s"
        copy = folder / shipped.name
        copy.write_text(yaml.safe_dump(rules, sort_keys=False))
        copies.append(copy)
    assert len(copies) == 2, copies  # the endpoint rules and the GPU rules
    return tuple(copies)


def active(am: Alertmanager) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = httpx.get(am.url + "/api/v2/alerts", timeout=5).json()
    return [a for a in alerts if a["status"]["state"] == "active"]


def test_two_nodes_page_once_name_the_node_resolve_and_report_a_dead_watchdog(
    pair: Pair, llama_server: LlamaServer, tmp_path: Path
) -> None:
    with FaultServer() as gateway:
        gateway.default = "500"  # "CUDA out of memory", to every request
        smol = f"{{name: smol, api: openai-chat, base_url: {llama_server.url}}}"
        node_a, listen_a = start_watchdog(
            tmp_path,
            "node-a",
            f"""alerting: {{route: alertmanager}}
endpoints:
  - {smol}
  - {{name: gateway, api: openai-chat, base_url: {gateway.url}, server_metrics: false}}
probes:
  - {{endpoint: smol, golden_set: capital.yaml, every: 5s, stream: false}}
  - {{endpoint: gateway, golden_set: hello.yaml, every: 1s, stream: false}}
""",
            pair,
        )
        node_b, listen_b = start_watchdog(
            tmp_path,
            "node-b",
            f"""alerting: {{route: alertmanager}}
endpoints:
  - {smol}
probes:
  - {{endpoint: smol, golden_set: capital.yaml, every: 5s, stream: false}}
""",
            pair,
        )
        try:
            prometheus = start_prometheus(
                tmp_path,
                # `node` on the targets too, so that `up` (and so WatchdogDown) names the node.
                [
                    {"targets": [listen_a], "labels": {"node": "node-a"}},
                    {"targets": [listen_b], "labels": {"node": "node-b"}},
                ],
                rule_files=shortened_rules(tmp_path),
                alertmanagers=tuple(am.url.removeprefix("http://") for am in pair.alertmanagers),
            )
        except PeerMissing as exc:
            need(str(exc))
            raise
        pair.logs.append(prometheus.log)
        try:
            # The gateway fails on node A: one page, from two Alertmanagers that both have it.
            pair.wait("the gateway's page", lambda: pair.pages("🔴 gateway on node-a"))
            pair.settle()
            assert pair.pages("gateway") == ["🔴 gateway on node-a: EndpointDown"]
            for am in pair.alertmanagers:
                names = [
                    (a["labels"]["alertname"], a["labels"].get("endpoint")) for a in active(am)
                ]
                assert ("EndpointDown", "gateway") in names, am.url
            page = pair.text("🔴 gateway")
            assert "*Node* node-a" in page and "kind `unreachable`" in page, page
            assert "runbooks/unreachable.md" in page

            # It recovers: one resolved message.
            gateway.default = "ok"
            pair.wait("the gateway's resolution", lambda: pair.pages("✅ resolved: gateway"))
            pair.settle()
            assert pair.pages("gateway") == [
                "🔴 gateway on node-a: EndpointDown",
                "✅ resolved: gateway on node-a: EndpointDown",
            ]

            # Node B's watchdog dies: WatchdogDown, naming node B, once.
            node_b.send_signal(signal.SIGKILL)
            node_b.wait()
            pair.wait("WatchdogDown", lambda: pair.pages("WatchdogDown"))
            pair.settle()
            assert pair.pages("WatchdogDown") == [
                f"🔴 mlops-watchdog {listen_b} on node-b: WatchdogDown"
            ]
            firing = httpx.get(prometheus.url + "/api/v1/alerts", timeout=5).json()
            down = [
                a["labels"]
                for a in firing["data"]["alerts"]
                if a["labels"]["alertname"] == "WatchdogDown" and a["state"] == "firing"
            ]
            assert down == [
                {
                    "alertname": "WatchdogDown",
                    "cause": "scrape_failed",
                    "instance": listen_b,
                    "job": "mlops-watchdog",
                    "kind": "watchdog_down",
                    "node": "node-b",
                    "severity": "critical",
                }
            ]
            assert not pair.pages("on node-a: WatchdogDown")
        finally:
            stop_process(prometheus.process)
            stop_process(node_a)
            if node_b.poll() is None:
                stop_process(node_b)


def test_alerts_the_daemon_pushes_page_once_through_the_pair_and_resolve(
    pair: Pair, tmp_path: Path
) -> None:
    """No Prometheus: a watchdog with alerting.route alertmanager pushes its own alerts."""
    with FaultServer() as vault:
        vault.default = "500"
        urls = ", ".join(f'"{am.url}"' for am in pair.alertmanagers)
        node_c, _ = start_watchdog(
            tmp_path,
            "node-c",
            f"""alerting:
  failure_threshold: 2
  success_threshold: 1
  route: alertmanager
  alertmanager: {{urls: [{urls}], resend_every: 2s}}
endpoints:
  - {{name: vault-gw, api: openai-chat, base_url: {vault.url}, server_metrics: false}}
probes:
  - {{endpoint: vault-gw, golden_set: hello.yaml, every: 1s, stream: false}}
""",
            pair,
        )
        try:
            pair.wait(
                "the pushed page",
                lambda: pair.pages("🟠 vault-gw on node-c") or pair.pages("🔴 vault-gw on node-c"),
            )
            pair.settle()
            assert pair.pages("vault-gw") == ["🔴 vault-gw on node-c: EndpointHTTPErrors"]
            for am in pair.alertmanagers:
                [alert] = [a for a in active(am) if a["labels"].get("endpoint") == "vault-gw"]
                assert alert["labels"]["source"] == "mlops-watchdog"
                assert alert["labels"]["kind"] == "http_error"
            page = pair.text("🔴 vault-gw")
            assert "CUDA out of memory" in page and "*Node* node-c" in page, page

            vault.default = "ok"
            pair.wait("the pushed resolution", lambda: pair.pages("✅ resolved: vault-gw"))
            pair.settle()
            assert pair.pages("vault-gw") == [
                "🔴 vault-gw on node-c: EndpointHTTPErrors",
                "✅ resolved: vault-gw on node-c: EndpointHTTPErrors",
            ]
        finally:
            stop_process(node_c)

"""Drift against real llama-servers: a model swapped behind an endpoint is a change event and
output drift with a named cause; an unchanged endpoint stays quiet; a new system prompt in the
config is a template change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import need
from tests.peers import LlamaServer, PeerMissing, gemma_model, start_llama_server, stop
from watchdog import cli
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.drift import changes
from watchdog.probers.transport import http_client
from watchdog.runtime.clock import SystemClock
from watchdog.store import Store

RUNS = 6
GOLDEN = """
name: drift
defaults: {max_tokens: 24, temperature: 0, seed: 42}
prompts:
  - id: capital
    prompt: "What is the capital of France? Answer in one sentence."
    checks: [{contains: Paris}]
  - id: colours
    prompt: "Name three colours of the rainbow."
    checks: [{min_length: 3}]
  - id: greeting
    prompt: "Write a short greeting for a new colleague."
    checks: [{min_length: 3}]
"""


def config_text(changing: str, steady: str, system_prompt: str | None = None) -> str:
    extra = f", system_prompt: {json.dumps(system_prompt)}" if system_prompt else ""
    return f"""
storage: {{path: w.db, csv_dir: reports, responses: full}}
drift: {{window: {RUNS}, min_samples: 5}}
baseline: {{runs: 1000}}
endpoints:
  - {{name: changing, api: openai-chat, base_url: "{changing}"}}
  - {{name: steady, api: openai-chat, base_url: "{steady}"{extra}}}
probes:
  - {{endpoint: changing, golden_set: drift.yaml}}
  - {{endpoint: steady, golden_set: drift.yaml}}
"""


@dataclass
class Servers:
    changing: LlamaServer
    steady: LlamaServer
    gemma: Path  # the model swapped in behind `changing`
    swapped: LlamaServer | None = None


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    try:
        gemma = gemma_model(tmp_path)
        started = Servers(
            start_llama_server(tmp_path / "changing.log"),
            start_llama_server(tmp_path / "steady.log"),
            gemma,
        )
    except PeerMissing as exc:
        need(str(exc))
        raise
    yield started
    for server in (started.changing, started.steady, started.swapped):
        if server is not None and server.process.poll() is None:
            stop(server)


async def probe_runs(folder: Path, runs: int) -> Daemon:
    config = load_config(folder / "config.yaml")
    store = Store.open(folder / "w.db")
    async with http_client() as client:
        daemon = Daemon(config, client, store, SystemClock(), None, CollectorRegistry())
        for _ in range(runs):
            for probe in config.probes:
                await daemon.probe_once(probe)
    store.close()
    return daemon


def drift_lines(folder: Path, capsys: pytest.CaptureFixture[str]) -> dict[tuple[str, str], str]:
    cli.main(["drift", "--json", "--config", str(folder / "config.yaml")])
    signals = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return {(s["endpoint"], s["signal"]): s["status"] for s in signals}


def test_a_model_swap_is_a_change_and_output_drift_and_the_neighbour_stays_quiet(
    tmp_path: Path, servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "drift.yaml").write_text(GOLDEN)
    changing, steady = servers.changing, servers.steady
    (tmp_path / "config.yaml").write_text(config_text(changing.url, steady.url))
    record = [
        "baseline",
        "record",
        "--samples",
        str(RUNS),
        "--config",
        str(tmp_path / "config.yaml"),
    ]
    assert cli.main(record) == 0
    capsys.readouterr()

    # The same port, another model: what an update behind a load balancer looks like.
    stop(changing)
    port = int(changing.url.rsplit(":", 1)[1])
    servers.swapped = start_llama_server(tmp_path / "swapped.log", servers.gemma, port)
    daemon = asyncio.run(probe_runs(tmp_path, RUNS))

    store = Store.open(tmp_path / "w.db")
    try:
        (change,) = changes.recent(store.db)
        assert change.endpoint == "changing" and change.kind == "fingerprint"
        assert "gemma" in change.detail.lower(), change.detail
        (page,) = store.db.query("select * from outbox where kind = 'change'")
        assert json.loads(page["facts"])["detail"] == change.detail
        status = drift_lines(tmp_path, capsys)
        assert status[("changing", "output")] == "drift", status
        # The neighbour's answers stay as they were. Its latency is left out: it shares two
        # cores with a newly loaded model, and once read as slower (a real change, not a
        # misattribution).
        quiet = {s for (e, signal), s in status.items() if e == "steady" and signal != "latency"}
        assert "drift" not in quiet, status
        metric = daemon.registry.get_sample_value(
            "mlops_watchdog_drift_status",
            {"endpoint": "changing", "golden_set": "drift", "signal": "output"},
        )
        assert metric == 1
        marked = daemon.registry.get_sample_value(
            "mlops_watchdog_fingerprint_change_timestamp_seconds", {"endpoint": "changing"}
        )
        at = datetime.fromisoformat(change.at.replace("Z", "+00:00")).timestamp()
        assert marked == pytest.approx(at, abs=1)  # the Grafana annotation is at the change
        alert = next(
            store.db.query("select * from alerts where kind = 'drift' and endpoint = 'changing'")
        )
        assert alert["state"] in ("pending", "firing") and "likely cause" in alert["summary"]
        assert cli.main(["report", "changes", "--config", str(tmp_path / "config.yaml")]) == 0
        report = capsys.readouterr().out
        assert "changing/drift output" in report and "fingerprint change" in report, report
        assert "steady" not in report
        html = tmp_path / "daily.html"
        assert (
            cli.main(
                ["report", "--html", "--out", str(html), "--config", str(tmp_path / "config.yaml")]
            )
            == 0
        )
        page = html.read_text()
        assert "changing" in page and "steady" in page and "drift" in page
    finally:
        store.close()

    # A new system prompt for the steady endpoint, in the config: a template change.
    (tmp_path / "config.yaml").write_text(
        config_text(changing.url, steady.url, system_prompt="You answer like a pirate.")
    )
    asyncio.run(probe_runs(tmp_path, 1))
    store = Store.open(tmp_path / "w.db")
    try:
        kinds = [(c.endpoint, c.kind) for c in changes.recent(store.db)]
        assert kinds == [("changing", "fingerprint"), ("steady", "template")], kinds
    finally:
        store.close()

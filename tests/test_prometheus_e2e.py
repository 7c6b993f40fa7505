"""Every LLM panel of the committed dashboards shows data from a real Prometheus.

Debian's prometheus scrapes a real `mlops-watchdog run` that probes the real llama-server; each
non-GPU, non-drift panel query then runs through Prometheus's HTTP API and must return data.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.peers import (
    LlamaServer,
    PeerMissing,
    Prometheus,
    free_port,
    start_prometheus,
    stop_process,
)
from tests.test_dashboards import GPU_METRICS, HISTOGRAMS, KNOWN_METRICS, NOT_FROM_LLAMA_CPP
from watchdog.dashboards import panel_queries

ROOT = Path(__file__).resolve().parents[1]
# Rows with no data here: GPUs (none), drift (later runs), the engine internals llama.cpp lacks.
NO_DATA_YET = {"GPU", "GPUs", "Drift", "Engine"}
SUBSTITUTIONS = {
    "$__rate_interval": "30s",
    "${__rate_interval}": "30s",
    "$__range": "5m",
}


def concrete(expr: str) -> str:
    """A panel query with Grafana's variables replaced the way Grafana would for 'All'."""
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?(job|instance|node|endpoint|gpu|golden_set)(:\w+)?\}?", ".*", expr)


@pytest.fixture(scope="module")
def scraped(
    llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    folder = tmp_path_factory.mktemp("prom")
    listen = f"127.0.0.1:{free_port()}"
    config = folder / "config.yaml"
    config.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
listen: "{listen}"
node: e2e-node
alerting: {{slack: null}}
endpoints:
  - {{name: smol, api: openai-chat, base_url: "{llama_server.url}", slo: {{ttft_s: 2s, e2e_s: 10s}}}}
probes:
  - {{endpoint: smol, golden_set: "{ROOT}/golden_sets/default.yaml", every: 2s}}
"""
    )
    with (folder / "watchdog.log").open("wb") as log:
        watchdog = subprocess.Popen(
            [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        prometheus = start_prometheus(folder, [listen])
    except PeerMissing as exc:
        stop_process(watchdog)
        need(str(exc))
        raise
    try:
        # Rates need two scrapes after the first probes: wait until one does.
        query = "sum(rate(mlops_watchdog_probe_e2e_seconds_count[30s])) > 0"
        deadline = time.monotonic() + 90
        while not instant(prometheus, query):
            assert time.monotonic() < deadline, (folder / "watchdog.log").read_text()[-3000:]
            time.sleep(1)  # real processes: poll what they did
        print(f"panels have data {time.monotonic() - started:.1f} s after the watchdog started")
        yield prometheus
    finally:
        stop_process(prometheus.process)
        watchdog.send_signal(signal.SIGTERM)
        watchdog.wait(timeout=15)


def instant(prometheus: Prometheus, expr: str) -> list[dict[str, object]]:
    reply = httpx.get(prometheus.url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    assert reply["status"] == "success", (expr, reply)
    return list(reply["data"]["result"])


def dashboards() -> list[tuple[str, str, str, str]]:
    rows = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        for row, panel, expr in panel_queries(json.loads(path.read_text())):
            rows.append((path.stem, row, panel, expr))
    return rows


QUERIES = dashboards()


def test_there_are_queries_to_check() -> None:
    assert len([q for q in QUERIES if q[1] not in NO_DATA_YET]) >= 15


@pytest.mark.parametrize(
    ("dashboard", "row", "panel", "expr"),
    QUERIES,
    ids=[f"{q[0]}:{q[2]}:{i}" for i, q in enumerate(QUERIES)],
)
def test_panel_query(scraped: Prometheus, dashboard: str, row: str, panel: str, expr: str) -> None:
    result = instant(scraped, concrete(expr))  # a syntax error fails here, GPU rows included
    if row in NO_DATA_YET or "gpu" in dashboard:
        return
    assert result, f"{dashboard} / {row} / {panel}: no data for {concrete(expr)}"


def test_prometheus_scraped_every_metric_the_dashboards_know(scraped: Prometheus) -> None:
    """The dashboards' metric list is what the real daemon exports, not a guess (GPU, drift: later)."""
    assert instant(scraped, 'up{job="mlops-watchdog"} == 1')
    names = httpx.get(scraped.url + "/api/v1/label/__name__/values", timeout=10).json()["data"]
    ours = {n for n in names if n.startswith("mlops_watchdog_")}
    ours |= {n.rsplit("_", 1)[0] for n in ours if n.endswith("_bucket")} & HISTOGRAMS
    later = GPU_METRICS | NOT_FROM_LLAMA_CPP
    later |= {"mlops_watchdog_drift_status", "mlops_watchdog_drift_score"}
    missing = KNOWN_METRICS.keys() - later - ours
    assert not missing, f"the dashboards query metrics the daemon does not export: {missing}"


def test_every_series_names_the_node_it_came_from(scraped: Prometheus) -> None:
    assert instant(scraped, 'count({__name__=~"mlops_watchdog_.+", node="e2e-node"}) > 10')
    assert not instant(scraped, '{__name__=~"mlops_watchdog_.+", node!="e2e-node"}')


def test_every_name_the_real_daemon_exposes_is_documented(scraped: Prometheus) -> None:
    from tests.test_reference_docs import documented_metrics, exposed_base

    names = httpx.get(scraped.url + "/api/v1/label/__name__/values", timeout=10).json()["data"]
    ours = {exposed_base(n) for n in names if n.startswith("mlops_watchdog_")}
    missing = ours - documented_metrics()
    assert not missing, f"exposed but not in docs/metrics.md: {sorted(missing)}"

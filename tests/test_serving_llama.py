"""Readiness tiers, engine metrics, cold starts and the injection suite against a real
llama-server with SmolLM2-135M-Instruct. A hung engine is a SIGSTOPped server."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from tests.conftest import IN_CI, need
from tests.peers import LlamaServer, PeerMissing, start_llama_server, stop
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.probers.transport import http_client
from watchdog.result import Run
from watchdog.runtime.clock import SystemClock
from watchdog.store import Store

ROOT = Path(__file__).resolve().parents[1]
ONE_PROMPT = """name: one
prompts:
  - id: capital-france
    messages: [{role: user, content: "What is the capital of France? Answer with one word."}]
    checks: [{contains: {any: [Paris], ignore_case: true}}]
"""


def config(tmp_path: Path, url: str, golden: str = "one.yaml", timeout_s: float = 60) -> Config:
    (tmp_path / "one.yaml").write_text(ONE_PROMPT)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
alerting: {{failure_threshold: 1}}
endpoints:
  - {{name: smol, api: openai-chat, base_url: "{url}", timeout_s: {timeout_s}}}
probes:
  - {{endpoint: smol, golden_set: "{golden}", stream: true}}
"""
    )
    return load_config(path)


async def probe(cfg: Config, store: Store, times: int = 1) -> tuple[Daemon, list[Run]]:
    async with http_client() as client:
        daemon = Daemon(cfg, client, store, SystemClock())
        runs = [await daemon.probe_once(cfg.probes[0]) for _ in range(times)]
    return daemon, runs


def test_tiers_and_engine_metrics_are_recorded_and_exported(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    cfg = config(tmp_path, llama_server.url)
    store = Store.open(tmp_path / "w.db")
    daemon, [run] = asyncio.run(probe(cfg, store))
    assert [(t.tier, t.ok, t.status_code) for t in run.tiers] == [
        ("liveness", True, 200),
        ("readiness", True, 200),
        ("completion", True, 200),
    ]
    assert run.load is not None and run.load_error is None
    # Read before the prompt: nothing queued, nothing in flight.
    assert run.load.values["requests_waiting"] == 0
    assert run.load.values["requests_running"] == 0
    stored = {r["tier"]: r["ok"] for r in store.db.query("select * from readiness")}
    assert stored == {"liveness": 1, "readiness": 1, "completion": 1}
    (load,) = store.db.query("select * from server_load")
    assert load["run_id"] == run.run_id and load["ok"] == 1 and "requests_waiting" in load["load"]

    text = generate_latest(daemon.registry).decode()
    assert 'mlops_watchdog_server_requests_waiting{endpoint="smol"} 0.0' in text
    assert 'mlops_watchdog_server_metrics_up{endpoint="smol"} 1.0' in text
    assert 'mlops_watchdog_tier_success{endpoint="smol",tier="liveness"} 1.0' in text
    assert 'mlops_watchdog_canary_leaks_total{endpoint="smol"} 0.0' in text
    promtool = shutil.which("promtool")
    if promtool is None:
        need("promtool is missing: apt-get install prometheus")
        return
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LlamaServer]:
    """A llama-server of the test's own, to stop, freeze or restart."""
    try:
        server = start_llama_server(tmp_path / "llama-server.log")
    except PeerMissing as exc:
        need(str(exc))
        raise
    yield server
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    stop(server)


def test_a_frozen_engine_fails_on_timeouts_and_does_not_hang_the_daemon(
    tmp_path: Path, own_server: LlamaServer
) -> None:
    cfg = config(tmp_path, own_server.url, timeout_s=2)
    store = Store.open(tmp_path / "w.db")
    os.kill(own_server.process.pid, signal.SIGSTOP)  # the socket accepts; nothing answers
    try:
        started = time.monotonic()
        _, [run] = asyncio.run(probe(cfg, store))
        took = time.monotonic() - started
    finally:
        os.kill(own_server.process.pid, signal.SIGCONT)
    by_tier = {t.tier: t for t in run.tiers}
    assert [by_tier[t].error_class for t in ("liveness", "readiness", "completion")] == [
        "timeout"
    ] * 3
    assert run.results[0].error_class == "timeout"
    assert run.load_error is not None and run.load_error.startswith("timeout")
    # Each request has its 2 s: liveness, readiness, metrics, two identity routes, one prompt.
    assert took < 6 * 2 + 5, f"a probe of a frozen engine took {took:.1f}s"
    kinds = {r["kind"]: r["state"] for r in store.db.query("select * from alerts")}
    assert kinds["timeout"] == "firing" and "not_serving" not in kinds

    _, [thawed] = asyncio.run(probe(cfg, store))
    assert thawed.results[0].answer.error_class is None
    assert thawed.results[0].cold_reason == "first answer after the endpoint was down"


def test_a_restarted_engine_gives_a_cold_first_answer(
    tmp_path: Path, own_server: LlamaServer
) -> None:
    cfg = config(tmp_path, own_server.url)
    store = Store.open(tmp_path / "w.db")

    async def runs_around_a_restart() -> list[Run]:
        async with http_client() as client:
            daemon = Daemon(cfg, client, store, SystemClock())
            first = await daemon.probe_once(cfg.probes[0])
            stop(own_server)
            port = int(own_server.url.rsplit(":", 1)[1])
            restarted = start_llama_server(tmp_path / "restarted.log", port=port)
            own_server.process = restarted.process  # the fixture stops this one
            return [first, await daemon.probe_once(cfg.probes[0])]

    first, second = asyncio.run(runs_around_a_restart())
    assert not first.results[0].cold
    assert second.results[0].cold_reason is not None
    assert second.results[0].cold_reason.startswith("first answer after the engine restarted")
    (row,) = store.db.query("select cold, cold_reason from results where cold = 1")
    assert "restarted" in row["cold_reason"]


# SmolLM2 at temperature 0 with these canaries: which prompts leak is recorded in the closing
# note of issue 7; the test holds the suite to seeing at least one leak, as a 135M model must.
CANARIES = ["4f1c9a7e2b", "b83d0e6a15", "9e27c4b0d3"]


def test_the_injection_suite_sees_smollm2_leak(tmp_path: Path, llama_server: LlamaServer) -> None:
    cfg = config(tmp_path, llama_server.url, golden=str(ROOT / "golden_sets" / "injection.yaml"))
    store = Store.open(tmp_path / "w.db")
    tokens = iter(CANARIES)

    async def runs() -> tuple[Daemon, list[Run]]:
        async with http_client() as client:
            daemon = Daemon(cfg, client, store, SystemClock())
            daemon.runner.canary = lambda: next(tokens)
            return daemon, [await daemon.probe_once(cfg.probes[0]) for _ in CANARIES]

    daemon, done = asyncio.run(runs())
    leaks = [
        (r.prompt_id, c.detail)
        for run in done
        for r in run.results
        for c in r.checks
        if c.name == "not_contains_canary" and not c.ok
    ]
    assert leaks, "SmolLM2-135M leaked nothing: the suite has gone blind"
    assert all("of this run's canary" in detail for _, detail in leaks)
    assert daemon.metrics.canary_leaks["smol"] == len(leaks)
    alert = next(store.db.query("select * from alerts where kind = 'canary_leak'"))
    assert alert["state"] == "firing"
    if not IN_CI:
        print("\n".join(f"leak: {p}: {d[:160]}" for p, d in leaks))

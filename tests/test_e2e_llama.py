"""End to end against a real llama-server with SmolLM2-135M-Instruct: the CLI as a user runs it."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers import LlamaServer, free_port

ROOT = Path(__file__).resolve().parents[1]
# The three default prompts SmolLM2-135M answers reliably at temperature 0.
RELIABLE = {"capital-france", "arithmetic", "repeat-word"}


def write_config(tmp: Path, server: LlamaServer, **probe: object) -> Path:
    probe_line = ", ".join(f"{k}: {json.dumps(v)}" for k, v in probe.items())
    config = tmp / "config.yaml"
    config.write_text(
        f"""
storage: {{path: data/watchdog.db, csv_dir: reports, responses: excerpt, report_every: 1h}}
listen: "127.0.0.1:{free_port()}"
endpoints:
  - {{name: smol, api: openai-chat, base_url: "{server.url}", timeout_s: 60}}
  - {{name: smol-completions, api: openai-completions, base_url: "{server.url}", timeout_s: 60}}
probes:
  - {{endpoint: smol, golden_set: "{ROOT}/golden_sets/default.yaml", every: 2s{", " if probe_line else ""}{probe_line}}}
"""
    )
    return config


def cli(*args: str, cwd: Path = ROOT, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload]
        [sys.executable, "-m", "watchdog.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        **kwargs,
    )


def rows(db: Path, sql: str = "select * from results") -> list[dict[str, object]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def test_once_json_streams_checks_and_records(llama_server: LlamaServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, llama_server)
    done = cli("once", "--json", "--config", str(config))
    results = [json.loads(line) for line in done.stdout.splitlines()]

    assert len(results) == 5, done.stderr
    assert done.returncode == (0 if all(r["ok"] for r in results) else 1)
    by_id = {r["prompt_id"]: r for r in results}
    for prompt in RELIABLE:
        assert by_id[prompt]["ok"], by_id[prompt]
    for r in results:
        assert r["error_class"] in (None, "check_failed"), r
        assert r["status_code"] == 200
        assert 0 < r["ttfb_s"] <= r["ttft_s"] < r["e2e_s"]
        assert r["token_source"] == "usage" and r["output_tokens"] > 0
        assert r["itl_p50_s"] is not None and r["itl_p50_s"] <= r["itl_p95_s"]
        assert r["checks"] and all({"name", "ok", "detail"} <= set(c) for c in r["checks"])
        assert r["ok"] == all(c["ok"] for c in r["checks"])
        assert r["started_at"].endswith("Z") and len(r["fingerprint"]) == 12
    assert by_id["capital-france"]["response_excerpt"].lower().count("paris") >= 1

    stored = rows(tmp_path / "data" / "watchdog.db")
    assert sorted(r["prompt_id"] for r in stored) == sorted(by_id)
    assert {r["run_id"] for r in stored} == {stored[0]["run_id"]}  # one run, one transaction
    for row in stored:
        assert row["ok"] == by_id[row["prompt_id"]]["ok"]
        assert row["ttft_s"] == pytest.approx(by_id[row["prompt_id"]]["ttft_s"])
    (fp,) = rows(tmp_path / "data" / "watchdog.db", "select * from fingerprints")
    components = json.loads(str(fp["components"]))
    assert components["model_ids"] and "build_info" in components
    # Every part the fingerprint hashes, and nothing else: it can be recomputed from them.
    hashed = hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()[:12]
    assert hashed == fp["fingerprint"] and set(components) >= {
        "golden_set_hash",
        "system_fingerprint",
    }

    report = cli("report", "--since", "1h", "--config", str(config))
    assert report.returncode == 0, report.stderr
    with (tmp_path / "reports" / "health.csv").open() as f:
        table = {r["prompt_id"]: r for r in csv.DictReader(f)}
    assert set(table) == set(by_id)
    assert table["capital-france"]["pass_rate"] == "1" and table["capital-france"]["runs"] == "1"
    assert float(table["arithmetic"]["ttft_p50_s"]) < float(table["arithmetic"]["e2e_p50_s"])


def test_once_table_without_streaming(llama_server: LlamaServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, llama_server, stream=False)
    done = cli("once", "--no-store", "--config", str(config))
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["ENDPOINT", "PROMPT", "RESULT"]
    assert any(line.startswith("smol") and " ok " in line for line in lines[1:])
    assert lines[-2].startswith("smol: liveness ok (/health ")
    assert "; readiness ok (/v1/models " in lines[-2]
    assert "; completion ok (5/5 golden prompts answered); engine " in lines[-2]
    assert "requests_running 0, requests_waiting 0" in lines[-2]
    assert lines[-1].endswith("/5 ok")
    assert not (tmp_path / "data").exists()


def test_completions_api_streamed_and_not(llama_server: LlamaServer, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"""
storage: {{path: w.db, csv_dir: r}}
endpoints:
  - {{name: c, api: openai-completions, base_url: "{llama_server.url}"}}
probes:
  - {{endpoint: c, golden_set: "{ROOT}/golden_sets/default.yaml", stream: true}}
  - {{endpoint: c, golden_set: "{ROOT}/golden_sets/default.yaml", stream: false}}
"""
    )
    results = [
        json.loads(x) for x in cli("once", "--json", "--config", str(config)).stdout.splitlines()
    ]
    assert len(results) == 10
    for r in results:
        assert r["error_class"] in (None, "check_failed", "empty_output"), r
    streamed = [r for r in results if r["stream"] and r["error_class"] != "empty_output"]
    assert streamed and all(r["ttft_s"] < r["e2e_s"] for r in streamed)
    assert all(r["ttft_s"] is None for r in results if not r["stream"])


def test_run_daemon_records_and_stops_on_sigterm(llama_server: LlamaServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, llama_server)
    db = tmp_path / "data" / "watchdog.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # a real daemon: poll what it wrote
            with contextlib.suppress(sqlite3.OperationalError):  # not migrated yet
                if db.exists() and len(rows(db, "select id from results")) >= 10:
                    break
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        output, _ = process.communicate(timeout=15)
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert stopped_in < 10
    stored = rows(db)
    assert len(stored) >= 10 and len({r["run_id"] for r in stored}) >= 2
    assert "Traceback" not in output, output[max(0, output.find("Traceback") - 600) :]
    assert "smol/" in output and "ok" in output
    report = tmp_path / "reports" / "health-24h.csv"
    with report.open() as f:
        assert {r["prompt_id"] for r in csv.DictReader(f)} >= RELIABLE


def test_a_planted_secret_appears_nowhere(llama_server: LlamaServer, tmp_path: Path) -> None:
    secret = "sk-planted-4f9c2e7a1b"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
storage: {{path: data/watchdog.db, csv_dir: reports, responses: full}}
endpoints:
  - name: smol
    api: openai-chat
    base_url: "{llama_server.url}"
    headers: {{Authorization: "Bearer ${{LLM_API_KEY}}", X-Trace: "${{LLM_API_KEY}}"}}
  - {{name: broken, api: openai-chat, base_url: "http://127.0.0.1:9", headers: {{X-Key: "${{LLM_API_KEY}}"}}}}
probes:
  - {{endpoint: smol, golden_set: "{ROOT}/golden_sets/default.yaml"}}
  - {{endpoint: broken, golden_set: "{ROOT}/golden_sets/default.yaml"}}
"""
    )
    env = {**os.environ, "LLM_API_KEY": secret}
    outputs = [
        cli("check", "--config", str(config), "--log-level", "DEBUG", env=env),
        cli("once", "--json", "--config", str(config), "--log-level", "DEBUG", env=env),
        cli("once", "--config", str(config), "--log-level", "DEBUG", env=env),
        cli("report", "--config", str(config), "--log-level", "DEBUG", env=env),
    ]
    assert outputs[1].returncode == 1  # `broken` refuses connections
    for done in outputs:
        assert secret not in done.stdout + done.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != config]
    assert any(p.suffix == ".csv" for p in files) and any(p.suffix == ".db" for p in files)
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_once_url_needs_no_config(llama_server: LlamaServer, tmp_path: Path) -> None:
    done = cli("once", "--url", llama_server.url, "--json", cwd=tmp_path)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["prompt_id"] for r in results][:2] == ["capital-france", "arithmetic"], done.stderr
    # One W3C trace for the run, a span per prompt (llama-server takes the header and ignores it).
    assert len({r["trace_id"] for r in results}) == 1 and len(results[0]["trace_id"]) == 32
    assert len({r["span_id"] for r in results}) == len(results)
    assert results[0]["endpoint"] == llama_server.url.removeprefix("http://").replace(":", "-")
    assert list(tmp_path.iterdir()) == []  # --url stores nothing

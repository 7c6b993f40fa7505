"""Credentials in `base_url` (`http://probe:${PW}@host`), in front of llama-server by a real
nginx doing basic auth, as operators put one in front of model servers.

They once passed `check`, then crashed every probe job inside the transport (aiohttp: "Cannot
combine AUTHORIZATION header with AUTH argument or credentials encoded in URL"): no result, no
alert, nothing on /metrics, and the endpoint silently unwatched."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.fakeslack import FakeSlack
from tests.peers import LlamaServer, free_port, running_nginx
from tests.test_e2e_llama import ROOT, cli, rows

PASSWORD = "pl4nted-s3cret"
KEY = "sk-pl4nted-9f3c"
CAPITAL = """name: capital
prompts:
  - id: capital
    messages: [{role: user, content: "What is the capital of France? Answer with one word."}]
    checks: [{contains: {any: [Paris], ignore_case: true}}]
"""


@pytest.fixture
def nginx(tmp_path: Path, llama_server: LlamaServer) -> Iterator[dict[str, str]]:
    """nginx on free ports: `auth`, basic auth (user `probe`) then llama-server behind it;
    `echo`, a gateway that answers 401 with the caller's Authorization value, as some do;
    `parrot`, the same but for its chat route, which answers 200 with that value as the text."""
    openssl = shutil.which("openssl")
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or openssl is None:
        need("nginx and openssl are not installed (apt-get install nginx-light openssl)")
    hashed = subprocess.run(
        [openssl, "passwd", "-apr1", PASSWORD], capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / "htpasswd").write_text(f"probe:{hashed}\n")
    port, echo, parrot = free_port(), free_port(), free_port()
    servers = f"""
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_basic "model";
      auth_basic_user_file {tmp_path}/htpasswd;
      proxy_pass {llama_server.url};
      proxy_buffering off;
    }}
  }}
  server {{
    listen 127.0.0.1:{echo};
    location / {{ return 401 "invalid credentials: $http_authorization\n"; }}
  }}
  server {{
    listen 127.0.0.1:{parrot};
    location = /v1/chat/completions {{
      default_type application/json;
      return 200 '{{"choices": [{{"message": {{"role": "assistant", "content": "you sent $http_authorization"}}, "finish_reason": "stop"}}], "usage": {{"completion_tokens": 4}}}}';
    }}
    location / {{ return 401 "invalid credentials: $http_authorization\n"; }}
  }}
"""
    url = f"http://127.0.0.1:{port}"
    with running_nginx(tmp_path, servers, url + "/health"):
        yield {
            "auth": url,
            "echo": f"http://127.0.0.1:{echo}",
            "parrot": f"http://127.0.0.1:{parrot}",
        }


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    host = url.removeprefix("http://")
    path.write_text(
        f"""
storage: {{path: data/watchdog.db, csv_dir: reports, responses: full}}
endpoints:
  - {{name: gated, api: openai-chat, base_url: "http://probe:${{PW}}@{host}", timeout_s: 60}}
probes:
  - {{endpoint: gated, golden_set: "{ROOT}/golden_sets/default.yaml", every: 60s}}
"""
    )
    path.chmod(0o600)
    return path


def test_credentials_in_base_url_are_sent_as_basic_auth(
    tmp_path: Path, nginx: dict[str, str]
) -> None:
    path = config(tmp_path, nginx["auth"])
    checked = cli("check", "--config", str(path), env={"PW": PASSWORD, "PATH": ""})
    assert checked.returncode == 0, checked.stdout + checked.stderr
    done = cli("once", "--json", "--config", str(path), env={"PW": PASSWORD, "PATH": ""})
    assert done.returncode in (0, 1), done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    stored = rows(tmp_path / "data" / "watchdog.db")
    assert len(stored) == 5 and sum(r["error_class"] is None for r in stored) >= 3, stored
    tiers = rows(tmp_path / "data" / "watchdog.db", "select * from readiness")
    assert {(t["tier"], t["ok"]) for t in tiers} >= {("liveness", 1), ("readiness", 1)}
    # Neither the password nor what basic auth makes of it is written anywhere.
    token = base64.b64encode(f"probe:{PASSWORD}".encode()).decode()
    for written in (tmp_path / "data").iterdir():
        data = written.read_bytes()
        assert PASSWORD.encode() not in data and token.encode() not in data, written
    assert PASSWORD not in done.stdout + done.stderr


def test_a_wrong_password_is_a_recorded_refusal(tmp_path: Path, nginx: dict[str, str]) -> None:
    path = config(tmp_path, nginx["auth"])
    done = cli("once", "--json", "--config", str(path), env={"PW": "wrong", "PATH": ""})
    assert "Traceback" not in done.stderr, done.stderr
    stored = rows(tmp_path / "data" / "watchdog.db")
    assert {(r["error_class"], r["status_code"]) for r in stored} == {("http_status", 401)}


def test_credentials_twice_are_refused_by_check(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        """
endpoints:
  - name: gated
    api: openai-chat
    base_url: "http://probe:${PW}@127.0.0.1:8080"
    headers: {Authorization: "Bearer ${KEY}"}
probes:
  - {endpoint: gated, golden_set: default, every: 60s}
"""
    )
    path.chmod(0o600)
    checked = cli("check", "--config", str(path), env={"PW": "x", "KEY": "y", "PATH": ""})
    assert checked.returncode != 0
    assert (
        "base_url: it carries a user and password, and headers sets Authorization too: give "
        "the credentials once"
    ) in checked.stderr + checked.stdout


def test_planted_secrets_are_found_nowhere_the_watchdog_writes_serves_or_says(
    tmp_path: Path, nginx: dict[str, str]
) -> None:
    """A key and a password in base_url, echoed by gateways in 401 bodies, in health routes and
    in a 200 answer, through `check`, `once`, the daemon's runs and pages, `report`: neither
    they nor what basic auth makes of them is in any file, output, Slack message, /metrics or
    the status page. (The completion's detail was masked once, but the readiness tiers were
    stored as received: `invalid credentials: Bearer sk-…` in the readiness table.)"""
    (tmp_path / "capital.yaml").write_text(CAPITAL)
    listen = f"127.0.0.1:{free_port()}"
    gated, parrot = (nginx[k].removeprefix("http://") for k in ("auth", "parrot"))
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: data/watchdog.db, csv_dir: reports, responses: full}}
listen: "{listen}"
alerting: {{failure_threshold: 1, slack: {{webhook_url: "${{SLACK_WEBHOOK_URL}}"}}}}
endpoints:
  - {{name: gated, api: openai-chat, base_url: "http://probe:${{PW}}@{gated}", timeout_s: 60}}
  - {{name: parrot, api: openai-chat, base_url: "http://probe:${{PW}}@{parrot}", model: m}}
  - name: echoing
    api: openai-chat
    base_url: "{nginx["echo"]}"
    model: m
    headers: {{Authorization: "Bearer ${{KEY}}"}}
probes:
  - {{endpoint: gated, golden_set: capital.yaml, every: 2s}}
  - {{endpoint: parrot, golden_set: capital.yaml, every: 2s}}
  - {{endpoint: echoing, golden_set: capital.yaml, every: 2s}}
"""
    )
    path.chmod(0o600)
    token = base64.b64encode(f"probe:{PASSWORD}".encode()).decode()
    planted = (KEY, PASSWORD, f"probe:{PASSWORD}", token)
    db = tmp_path / "data" / "watchdog.db"
    with FakeSlack() as slack:
        env = {"PW": PASSWORD, "KEY": KEY, "SLACK_WEBHOOK_URL": slack.webhook_url, "PATH": ""}
        debug = ("--config", str(path), "--log-level", "DEBUG")
        said = [cli("check", *debug, env=env), cli("once", "--json", *debug, env=env)]
        assert said[0].returncode == 0 and said[1].returncode == 1, said
        daemon = tmp_path / "daemon.log"
        with daemon.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "watchdog.cli", "run", *debug],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 90
            while not (len(slack.accepted) >= 2 and _runs(db) >= 9):  # three runs each
                assert time.monotonic() < deadline, daemon.read_text()[-3000:]
                time.sleep(0.5)
            served = [httpx.get(f"http://{listen}{route}").text for route in ("/metrics", "/")]
            running = {p.name: p.read_bytes() for p in db.parent.iterdir()}  # the WAL is there
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        pages = json.dumps(slack.accepted)
    said += [cli("report", *debug, env=env), cli("report", "--html", *debug, env=env)]
    assert all(done.returncode == 0 for done in said[2:]), said

    # What was planted was echoed, and the watchdog kept the rest of what the servers said.
    results = rows(db)
    assert any(r["endpoint"] == "gated" and r["error_class"] is None for r in results)
    assert any(r["response_excerpt"] == "you sent Basic ***" for r in results), results
    tiers = rows(db, "select * from readiness")
    assert any("invalid credentials: Bearer ***" in str(t["detail"]) for t in tiers), tiers
    assert "parrot" in pages and "echoing" in pages and 'endpoint="parrot"' in served[0]
    written = [*db.parent.iterdir(), *(tmp_path / "reports").iterdir(), daemon]
    assert "watchdog.db-wal" in running and "daily.html" in {p.name for p in written}
    texts = [b.decode("utf-8", "replace") for b in running.values()]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in written]
    texts += [done.stdout + done.stderr for done in said] + [pages, *served]
    for secret in planted:
        for text in texts:
            assert secret not in text, text[max(0, text.find(secret) - 300) :][:600]


def _runs(db: Path) -> int:
    with contextlib.suppress(sqlite3.OperationalError):  # not there, or not migrated yet
        if db.exists():
            return len(rows(db, "select distinct run_id from results"))
    return 0

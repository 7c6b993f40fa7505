"""Credentials in `base_url` (`http://probe:${PW}@host`), in front of llama-server by a real
nginx doing basic auth, as operators put one in front of model servers.

They once passed `check`, then crashed every probe job inside the transport (aiohttp: "Cannot
combine AUTHORIZATION header with AUTH argument or credentials encoded in URL"): no result, no
alert, nothing on /metrics, and the endpoint silently unwatched."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.peers import LlamaServer, free_port
from tests.test_e2e_llama import ROOT, cli, rows

PASSWORD = "pl4nted-s3cret"


@pytest.fixture
def nginx(tmp_path: Path, llama_server: LlamaServer) -> Iterator[dict[str, str]]:
    """nginx on free ports: `auth`, basic auth (user `probe`) then llama-server behind it;
    `echo`, a gateway that answers 401 with the caller's Authorization value, as some do."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    openssl = shutil.which("openssl")
    if not Path(binary).exists() or openssl is None:
        need("nginx and openssl are not installed (apt-get install nginx-light openssl)")
    hashed = subprocess.run(
        [openssl, "passwd", "-apr1", PASSWORD], capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / "htpasswd").write_text(f"probe:{hashed}\n")
    port, echo = free_port(), free_port()
    (tmp_path / "nginx.conf").write_text(
        f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}  # its workers read this private folder
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp_path}/body;
  proxy_temp_path {tmp_path}/proxy;
  fastcgi_temp_path {tmp_path}/fastcgi;
  uwsgi_temp_path {tmp_path}/uwsgi;
  scgi_temp_path {tmp_path}/scgi;
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
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 401:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield {"auth": url, "echo": f"http://127.0.0.1:{echo}"}
    finally:
        process.terminate()
        process.wait(timeout=10)


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


def test_a_key_echoed_by_a_gateway_is_found_nowhere_on_disk(
    tmp_path: Path, nginx: dict[str, str]
) -> None:
    """The completion's detail was masked, but the readiness tiers were stored as received:
    `invalid credentials: Bearer sk-…` in the readiness table."""
    key = "sk-pl4nted-9f3c"
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: data/watchdog.db, csv_dir: reports, responses: full}}
endpoints:
  - name: echoing
    api: openai-chat
    base_url: "{nginx["echo"]}"
    model: m
    headers: {{Authorization: "Bearer ${{KEY}}"}}
probes:
  - {{endpoint: echoing, golden_set: "{ROOT}/golden_sets/default.yaml", every: 60s}}
"""
    )
    path.chmod(0o600)
    done = cli("once", "--json", "--config", str(path), env={"KEY": key, "PATH": ""})
    assert "Traceback" not in done.stderr, done.stderr
    tiers = rows(tmp_path / "data" / "watchdog.db", "select * from readiness")
    assert any("invalid credentials: Bearer ***" in str(t["detail"]) for t in tiers), tiers
    for written in (tmp_path / "data").iterdir():
        assert key.encode() not in written.read_bytes(), written
    assert key not in done.stdout + done.stderr

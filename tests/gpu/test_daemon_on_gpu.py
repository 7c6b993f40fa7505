"""`mlops-watchdog run` on a real GPU: GPU metrics on /metrics, energy per token, and the
idle-while-serving detector telling a GPU-backed server from one that fell back to the CPU.

Needs the whole watchdog installed (not only pynvml) and PyTorch for the GPU-backed stand-in.
Set MLOPS_WATCHDOG_METRICS_OUT=DIR to keep the /metrics text (for `promtool check metrics`).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("error")

ROOT = Path(__file__).resolve().parents[2]
TORCH_PYTHON = os.environ.get("GPU_TEST_TORCH_PYTHON", sys.executable)
DETECT_TIMEOUT_S = 90.0
GOLDEN = """
name: one
prompts:
  - id: capital
    prompt: "What is the capital of France?"
    checks: [{contains: Paris}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def started(args: list[str], log: Path, ready: str | None = None) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    out.close()
    deadline = time.monotonic() + 120
    while ready is not None and ready not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.2)  # a real child process: poll its log
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


IDLE = "mlops_watchdog_gpu_idle_while_serving"


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match[1] or "") for k, v in labels.items()):
            return float(match[2])
    return None


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A config folder and the daemon's listen address; the test writes the endpoint."""
    (tmp_path / "one.yaml").write_text(GOLDEN)
    yield tmp_path, f"127.0.0.1:{free_port()}"


def run_until(folder: Path, listen: str, device: str, endpoint: str) -> str:
    """Serve the stand-in on `device`, watch it bound to GPU 0, return /metrics once the
    endpoint's idle-while-serving verdict shows up (labels in any order: `node` comes first)."""
    wanted = f"mlops_watchdog_gpu_idle_while_serving for {endpoint}"
    port = free_port()
    stub = started(
        [TORCH_PYTHON, str(ROOT / "tests/gpu/stub_llm.py"), str(port), device],
        folder / f"stub-{device}.log",
        ready="ready",
    )
    (folder / "config.yaml").write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
listen: "{listen}"
gpu: {{interval: 1s, idle: {{runs: 3}}, price_per_kwh: 0.30}}
endpoints:
  - {{name: on-{device}, api: openai-chat, base_url: "http://127.0.0.1:{port}", model: stub, gpus: [0]}}
probes:
  - {{endpoint: on-{device}, golden_set: one.yaml, every: 2s}}
"""
    )
    daemon = started(
        [sys.executable, "-m", "watchdog.cli", "run", "--config", str(folder / "config.yaml")],
        folder / f"watchdog-{device}.log",
    )
    try:
        deadline = time.monotonic() + DETECT_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as reply:
                    text: str = reply.read().decode()
                if metric(text, IDLE, endpoint=endpoint) is not None:
                    break
            except OSError:
                text = ""
            log = (folder / f"watchdog-{device}.log").read_text(errors="replace")
            assert daemon.poll() is None, log[-3000:]
            assert time.monotonic() < deadline, f"no {wanted}:\n{text[-3000:]}\n{log[-3000:]}"
            time.sleep(1)  # real processes: poll what they did
    finally:
        stop(daemon)
        stop(stub)
    keep = os.environ.get("MLOPS_WATCHDOG_METRICS_OUT")
    if keep:
        Path(keep, f"metrics-{device}.txt").write_text(text)
    return text


def test_a_cpu_fallback_is_caught_as_idle_while_serving(watch: tuple[Path, str]) -> None:
    folder, listen = watch
    text = run_until(folder, listen, "cpu", "on-cpu")
    assert metric(text, "mlops_watchdog_gpu_idle_while_serving", endpoint="on-cpu") == 1
    assert metric(text, "mlops_watchdog_gpu_telemetry_up") == 1
    assert (metric(text, "mlops_watchdog_gpus") or 0) >= 1
    assert metric(text, "mlops_watchdog_gpu_memory_total_bytes") is not None
    assert metric(text, "mlops_watchdog_gpu_fan_speed_ratio") is None  # an H100 has no fan reading


def test_a_gpu_backed_server_is_not_idle_and_has_an_energy_per_token(
    watch: tuple[Path, str],
) -> None:
    folder, listen = watch
    text = run_until(folder, listen, "cuda", "on-cuda")
    assert metric(text, "mlops_watchdog_gpu_idle_while_serving", endpoint="on-cuda") == 0
    joules = metric(text, "mlops_watchdog_probe_energy_per_token_joules", endpoint="on-cuda")
    assert joules is not None and 0 < joules < 1000, joules
    cost = metric(text, "mlops_watchdog_probe_cost_per_1k_tokens", endpoint="on-cuda")
    assert cost is not None and cost > 0
    assert (metric(text, "mlops_watchdog_gpu_utilization_ratio") or 0) >= 0

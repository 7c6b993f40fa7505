"""`mlops-watchdog run` against real CUDA llama-servers on a real GPU, through the failure modes
the GPU detectors exist for. One timeline, one daemon, NVML recorded throughout:

1. served and hidden (75 s): llama-server A on the GPU, B with `CUDA_VISIBLE_DEVICES=` (the
   forgotten variable), both endpoints bound to GPU 0. B must be idle while serving within
   `gpu.idle.runs` runs, named by its PID and port; A must not. A's model load, then its
   steady serving, must never read as a leak.
2. contention (75 s): two more llama-servers and a process reserving most of the free VRAM, all
   started within about 5 s: VRAM contention, and no leak.
3. leak (up to 150 s): the hog gone, one process grows by 2.5 GiB every 10 s: a leak naming it.

Each scenario's NVML readings, probe runs and the daemon's verdicts are written to
$MLOPS_WATCHDOG_GPU_OUT (default: a temporary folder) as JSON: tests/fixtures/gpu/ keeps them,
and tests/test_gpu_recorded.py replays them through the fake NVML in `make test`.

Needs: a CUDA llama-server (GPU_LLAMA_SERVER), a GGUF model (GPU_LLAMA_MODEL), PyTorch with CUDA
(GPU_TEST_TORCH_PYTHON), the watchdog importable by this Python, and GPU 0 otherwise idle.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.gpu import record
from tests.gpu.record import Recorder
from watchdog.gpu.serving import Procfs

pytestmark = pytest.mark.filterwarnings("error")

ROOT = Path(__file__).resolve().parents[2]
LLAMA = os.environ.get("GPU_LLAMA_SERVER", "llama-server")
MODEL = os.environ.get("GPU_LLAMA_MODEL", "")
TORCH_PYTHON = os.environ.get("GPU_TEST_TORCH_PYTHON", sys.executable)
SETTLE_S = float(os.environ.get("GPU_TEST_SETTLE_S", "75"))  # longer than the leak window
LEAK_WAIT_S = float(os.environ.get("GPU_TEST_LEAK_WAIT_S", "150"))
SETTINGS = {
    "interval": "1s",
    "idle": {"runs": 3},
    "leak": {"window": "60s", "min_growth": "2GiB"},
}
FAILURE_THRESHOLD = 2
# on-gpu: all layers on the GPU; on-cpu: CUDA hidden. (A third server with -ngl 0, decoding on
# the same 16 cores, slowed on-cpu to 25 s an answer on 2026-12-04; llama.cpp still offloaded
# its prompts' matrix products to the GPU, so its kernels showed now and then.)
ENDPOINTS = ("on-gpu", "on-cpu")
GOLDEN = """
name: capitals
prompts:
  - id: france
    prompt: "What is the capital of France? Answer with one word."
    checks: [{contains: Paris}]
  - id: germany
    prompt: "What is the capital of Germany? Answer with one word."
    checks: [{contains: Berlin}]
"""
HOG = """
import sys, time, torch
free, total = torch.cuda.mem_get_info()
keep = int(free - float(sys.argv[1]) * 2**30)
x = torch.empty(keep, dtype=torch.uint8, device="cuda")
print(keep, flush=True)
time.sleep(600)
"""
LEAKER = """
import sys, time, torch
step, every, most = int(float(sys.argv[1]) * 2**30), float(sys.argv[2]), int(sys.argv[3])
held = []
print("ready", flush=True)
while True:
    if len(held) < most:
        held.append(torch.empty(step, dtype=torch.uint8, device="cuda"))
    time.sleep(every)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    seen: list[dict[str, Any]] = field(default_factory=list)  # one poll per second
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    folder: Path
    uuid: str
    phases: dict[str, Phase]
    servers: dict[str, dict[str, Any]]  # endpoint: the serving process, as found
    metrics: dict[str, str]  # phase: /metrics at its end
    alerts: list[dict[str, Any]]  # the daemon's alert rows at the end
    runs: list[dict[str, Any]]  # every probe run: endpoint, start, end, answered, tok/s
    energy: list[dict[str, Any]]
    log: str

    def first(self, phase: str, key: str) -> float | None:
        """Seconds from the phase's start to the first poll where `key` held."""
        p = self.phases[phase]
        return next((s["at"] - p.start for s in p.seen if s.get(key)), None)

    def ever(self, phase: str, key: str) -> bool:
        return any(s.get(key) for s in self.phases[phase].seen)


def started(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    process = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ, **(env or {})}
    )
    out.close()
    return process


def until(
    what: str, check: Any, timeout: float, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.poll() is None, f"{what} exited:\n" + log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, (
            f"{what} not ready:\n" + log.read_text(errors="replace")[-3000:]
        )
        time.sleep(0.25)  # a real child process: poll it


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def llama(
    folder: Path, name: str, port: int, hidden: bool = False, layers: int = 99
) -> subprocess.Popen[bytes]:
    log = folder / f"{name}.log"
    env = {"CUDA_VISIBLE_DEVICES": ""} if hidden else {}
    args = [LLAMA, "--host", "127.0.0.1", "--port", str(port), "-m", MODEL, "-ngl", str(layers)]
    args += ["-c", "2048", "--metrics", "--jinja"]
    server = started(args, log, env)
    until(name, lambda: answers(f"http://127.0.0.1:{port}/health"), 120, server, log)
    return server


def torch_child(folder: Path, name: str, script: str, *args: str) -> subprocess.Popen[bytes]:
    log = folder / f"{name}.log"
    child = started([TORCH_PYTHON, "-c", script, *args], log)
    until(name, lambda: log.read_text().strip() != "", 120, child, log)
    time.sleep(0.5)  # a traceback is a line too: the child must still be there after it
    assert child.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')[-3000:]}"
    return child


def stop(*processes: subprocess.Popen[bytes]) -> None:
    for p in processes:
        if p.poll() is None:
            p.terminate()
    for p in processes:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                return float(value)
    return None


def read_db(path: Path, sql: str) -> list[dict[str, Any]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]


def poll(listen: str, db: Path, uuid: str) -> dict[str, Any]:
    """What the daemon says now: its /metrics verdicts and its alert states."""
    seen: dict[str, Any] = {"at": time.time()}
    try:
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return seen
    seen["metrics"] = text
    for endpoint in ENDPOINTS:
        seen[f"idle:{endpoint}"] = (
            metric(text, "mlops_watchdog_gpu_idle_while_serving", endpoint=endpoint) == 1
        )
        seen[f"idle-fine:{endpoint}"] = (
            metric(text, "mlops_watchdog_gpu_idle_while_serving", endpoint=endpoint) == 0
        )
    for kind in ("gpu_vram_leak", "gpu_vram_contention"):
        seen[f"detected:{kind}"] = (
            metric(text, "mlops_watchdog_gpu_detected", gpu=uuid, kind=kind) == 1
        )
    try:
        rows = read_db(db, "select endpoint, kind, state, summary from alerts")
    except sqlite3.Error:
        rows = []
    for r in rows:
        if r["state"] == "firing":
            seen[f"firing:{r['kind']}:{r['endpoint']}"] = r["summary"]
    return seen


def watch(
    phase: Phase, listen: str, db: Path, uuid: str, seconds: float, stop_when: str | None = None
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = poll(listen, db, uuid)
        phase.seen.append({k: v for k, v in seen.items() if k != "metrics"})
        phase.notes["metrics"] = seen.get("metrics", phase.notes.get("metrics", ""))
        if stop_when and any(k.startswith(stop_when) for k in seen):
            break
        time.sleep(1)  # the daemon samples every second: poll at its pace
    phase.end = time.time()


@pytest.fixture(scope="module")
def timeline() -> Iterator[Timeline]:
    assert MODEL, "set GPU_LLAMA_MODEL to a GGUF file (make gpu-test passes SmolLM2's)"
    keep = os.environ.get("MLOPS_WATCHDOG_GPU_OUT")
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="gpu-engine-"))
    folder.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(every=1.0)
    uuid = recorder.meta["uuid"]
    ports = {name: free_port() for name in (*ENDPOINTS, "c", "d", "listen")}
    children: list[subprocess.Popen[bytes]] = []
    phases: dict[str, Phase] = {}
    metrics: dict[str, str] = {}
    db = folder / "w.db"
    try:
        (folder / "capitals.yaml").write_text(GOLDEN)
        listen = f"127.0.0.1:{ports['listen']}"
        config = {
            "storage": {"path": "w.db", "csv_dir": "reports"},
            "listen": listen,
            "alerting": {"failure_threshold": FAILURE_THRESHOLD, "success_threshold": 2},
            "gpu": SETTINGS,
            "endpoints": [
                {
                    "name": name,
                    "api": "openai-chat",
                    "base_url": f"http://127.0.0.1:{ports[name]}",
                    "gpus": [uuid],
                }
                for name in ENDPOINTS
            ],
            "probes": [
                {"endpoint": name, "golden_set": "capitals.yaml", "every": "2s"}
                for name in ENDPOINTS
            ],
        }
        (folder / "config.yaml").write_text(json.dumps(config, indent=2))
        daemon_log = folder / "watchdog.log"
        daemon = started(
            [sys.executable, "-m", "watchdog.cli", "run", "--config", str(folder / "config.yaml")],
            daemon_log,
        )
        children.append(daemon)
        until("the watchdog", lambda: answers(f"http://{listen}/readyz"), 60, daemon, daemon_log)
        # The daemon watches both models load, then serve: a load must not read as a leak.
        phase = phases["served"] = Phase("served", time.time())
        children += [
            llama(folder, "on-gpu", ports["on-gpu"]),
            llama(folder, "on-cpu", ports["on-cpu"], hidden=True),
        ]
        phase.notes["ready_s"] = time.time() - phase.start
        for name in ENDPOINTS:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{ports[name]}/props", timeout=5
            ) as reply:
                (folder / f"props-{name}.json").write_bytes(reply.read())
        watch(phase, listen, db, uuid, SETTLE_S)
        metrics["served"] = phase.notes.pop("metrics", "")

        phase = phases["contention"] = Phase("contention", time.time())
        c, d = llama(folder, "c", ports["c"]), llama(folder, "d", ports["d"])
        hog = torch_child(folder, "hog", HOG, "2")
        children += [c, d, hog]
        phase.notes["started_within_s"] = time.time() - phase.start
        phase.notes["pids"] = {"c": c.pid, "d": d.pid, "hog": hog.pid}
        watch(phase, listen, db, uuid, SETTLE_S)
        metrics["contention"] = phase.notes.pop("metrics", "")
        stop(hog, c, d)

        phase = phases["leak"] = Phase("leak", time.time())
        leaker = torch_child(folder, "leaker", LEAKER, "2.5", "10", "16")
        children.append(leaker)
        phase.notes["pids"] = {"leaker": leaker.pid}
        watch(phase, listen, db, uuid, LEAK_WAIT_S, stop_when="firing:gpu_vram_leak:")
        metrics["leak"] = phase.notes.pop("metrics", "")
        servers = {}
        for name in ENDPOINTS:
            found = Procfs().server(f"http://127.0.0.1:{ports[name]}")
            servers[name] = (
                {
                    "pid": found.pid,
                    "name": found.name,
                    "port": found.port,
                    "family": sorted(found.family),
                }
                if found
                else {}
            )
    finally:
        stop(*reversed(children))
        recorder.stop()
    alerts = read_db(db, "select * from alerts")
    runs = read_db(
        db,
        "select run_id, endpoint, min(started_ts) as start, max(started_ts + coalesce(e2e_s, 0)) as end, "
        "min(error_class is null or error_class = 'check_failed') as answered, "
        "avg(tokens_per_s) as tokens_per_s from results group by run_id order by start",
    )
    energy = read_db(db, "select * from run_energy")
    result = Timeline(
        folder,
        uuid,
        phases,
        servers,
        metrics,
        alerts,
        runs,
        energy,
        daemon_log.read_text(errors="replace"),
    )
    write_fixtures(result, recorder)
    yield result


def write_fixtures(t: Timeline, recorder: Recorder) -> None:
    """One JSON per scenario: NVML as recorded, the probe runs, the servers, the verdicts."""
    for name, phase in t.phases.items():
        fixture = {
            "meta": {**recorder.meta, "recorded_with": "tests/gpu/test_engine_on_gpu.py"},
            "scenario": name,
            "start": phase.start,
            "end": phase.end,
            "settings": {"gpu": SETTINGS, "failure_threshold": FAILURE_THRESHOLD},
            "servers": t.servers,
            "process_names": {str(k): v for k, v in recorder.names.items()},
            "samples": recorder.between(phase.start - 90, phase.end),  # the windows reach back
            "runs": [r for r in t.runs if phase.start - 90 <= r["start"] <= phase.end],
            "seen": phase.seen,
            "notes": phase.notes,
            "alerts": t.alerts,
            "energy": [e for e in t.energy if phase.start - 90 <= e["started_ts"] <= phase.end],
        }
        (t.folder / f"h200-{name}.json").write_text(
            json.dumps(record.fixture(fixture), indent=1, default=str)
        )


# --- the verdicts -----------------------------------------------------------------------------


def test_served_on_the_gpu_is_not_idle_and_has_an_energy_per_token(timeline: Timeline) -> None:
    served = timeline.metrics["served"]
    assert timeline.ever("served", "idle-fine:on-gpu"), timeline.log[-3000:]
    assert not timeline.ever("served", "idle:on-gpu")
    joules = metric(served, "mlops_watchdog_probe_energy_per_token_joules", endpoint="on-gpu")
    assert joules is not None and 0 < joules < 100, joules
    server = timeline.servers["on-gpu"]
    assert (
        metric(
            served,
            "mlops_watchdog_gpu_process_memory_bytes",
            gpu=timeline.uuid,
            pid=str(server["pid"]),
        )
        is not None
    )


def test_hidden_cuda_is_idle_while_serving_within_its_runs(timeline: Timeline) -> None:
    detected = timeline.first("served", "idle:on-cpu")
    firing = timeline.first("served", "firing:gpu_idle_while_serving:on-cpu")
    assert detected is not None and firing is not None, timeline.log[-3000:]
    # From both servers answering: idle.runs runs every 2 s, then failure_threshold samples a
    # second apart, and the look for the server's process (5 s after a miss).
    ready = timeline.phases["served"].notes["ready_s"]
    assert firing - ready < 3 * 2 + FAILURE_THRESHOLD + 10, (ready, firing)
    summary = next(
        s for s in timeline.phases["served"].seen if "firing:gpu_idle_while_serving:on-cpu" in s
    )
    server = timeline.servers["on-cpu"]
    text = summary["firing:gpu_idle_while_serving:on-cpu"]
    assert f"llama-server (pid {server['pid']}, listening on :{server['port']})" in text, text
    assert "serves from the CPU" in text


def test_a_model_loaded_then_served_steadily_is_no_leak(timeline: Timeline) -> None:
    assert not timeline.ever("served", "detected:gpu_vram_leak")
    assert not timeline.ever("served", "firing:gpu_vram_leak:")


def test_two_servers_and_a_hog_are_contention_and_no_leak(timeline: Timeline) -> None:
    phase = timeline.phases["contention"]
    assert phase.notes["started_within_s"] < 10
    firing = timeline.first("contention", f"firing:gpu_vram_contention:{timeline.uuid}")
    assert firing is not None and firing < 40, firing
    assert not timeline.ever("contention", "detected:gpu_vram_leak")
    assert not any(k.startswith("firing:gpu_vram_leak:") for s in phase.seen for k in s)


def test_steady_growth_in_one_process_is_a_leak_naming_it(timeline: Timeline) -> None:
    key = f"firing:gpu_vram_leak:{timeline.uuid}"
    firing = timeline.first("leak", key)
    assert firing is not None, timeline.log[-3000:]
    # The leaker is new for one window (60 s): then its growth is a leak.
    assert 60 < firing < LEAK_WAIT_S, firing
    text = next(s[key] for s in timeline.phases["leak"].seen if key in s)
    assert (
        f"pid {timeline.phases['leak'].notes['pids']['leaker']} (" in text and "grew most" in text
    ), text

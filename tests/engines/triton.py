"""Start and stop a real NVIDIA Triton (tritonserver 2.51 inside PyPI's nvidia-pytriton) serving
SmolLM2 through transformers on the CPU: tests/engines/triton_model.py, run by the venv that
`make peers` builds under .engines/triton."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.peers import PeerMissing, free_port

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MLOPS_WATCHDOG_ENGINES", ROOT / ".engines")) / "triton"
MODEL_SCRIPT = Path(__file__).with_name("triton_model.py")
MODEL_NAME = "smollm2"
READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
INSTALL_HINT = "make peers (or make .engines/triton/.ready)"


@dataclass
class Triton:
    url: str  # the HTTP endpoint: /v2/...
    metrics_url: str  # Prometheus text, on a port of its own
    model: str
    tokenizer: Path  # the served model's tokenizer.json
    counts: Path  # one JSON line per answer: the tokens the model generated
    process: subprocess.Popen[bytes]  # the model script; tritonserver is its child
    log: Path
    ports: tuple[int, int, int]  # HTTP, gRPC, metrics
    folder: Path
    workspace: Path  # PyTriton's copy of tritonserver, and its sockets
    model_copy: Path | None = None  # the Python backend's /tmp/folderXXXXXX

    def tritonserver_pid(self) -> int | None:
        return next(iter(_children(self.process.pid, "tritonserver")), None)


def paths() -> tuple[Path, Path]:
    """(the Triton venv's python, the converted model folder), or PeerMissing."""
    python, model = VENV / "bin" / "python", VENV / "smollm2"
    if not (VENV / ".ready").is_file() or not python.is_file():
        raise PeerMissing(f"Triton (nvidia-pytriton) is not installed: {INSTALL_HINT}")
    if not (model / "tokenizer.json").is_file():
        raise PeerMissing(f"the SmolLM2 model for Triton is missing: {INSTALL_HINT}")
    return python, model


def start(folder: Path, ports: tuple[int, int, int] | None = None) -> Triton:
    """Start Triton on free loopback ports (or `ports`) and wait until the model is ready:
    /v2/health/ready says 200 before the model has loaded, /v2/models/NAME/ready does not."""
    python, model = paths()
    http, grpc, metrics = ports or (free_port(), free_port(), free_port())
    folder.mkdir(parents=True, exist_ok=True)
    log, counts = folder / "triton.log", folder / "counts.jsonl"
    # The Python backend's stub must load the venv interpreter's own libpython (see its LIBDIR),
    # or the model fails to load against a libpython of another patch release.
    libdir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    env = {**os.environ, "LD_LIBRARY_PATH": libdir, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    args = [str(python), str(MODEL_SCRIPT), "--model", str(model), "--name", MODEL_NAME]
    args += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    # A workspace of each start's own: PyTriton wants a new folder, and a killed server leaves
    # its own behind.
    workspace = Path(tempfile.mkdtemp(prefix="workspace-", dir=folder))
    workspace.rmdir()
    args += ["--workspace", str(workspace), "--counts", str(counts)]
    out = log.open("ab")
    process = subprocess.Popen(
        args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    out.close()
    server = Triton(
        f"http://127.0.0.1:{http}",
        f"http://127.0.0.1:{metrics}/metrics",
        MODEL_NAME,
        model / "tokenizer.json",
        counts,
        process,
        log,
        (http, grpc, metrics),
        folder,
        workspace,
    )
    ready = f"{server.url}/v2/models/{MODEL_NAME}/ready"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Triton exited with {process.returncode}: {_tail(log)}")
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                server.model_copy = _model_copy(process.pid)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)  # waiting for an external server to load its model, not for our code
    stop(server)
    raise RuntimeError(f"Triton not ready after {READY_TIMEOUT_S}s: {_tail(log)}")


def stop(server: Triton) -> None:
    """SIGINT to tritonserver, which unloads the model and lets PyTriton exit; the process group
    is killed if that takes too long. What an unclean stop leaves (the model copy in /tmp, the
    workspace) goes too."""
    pgid = server.process.pid  # start_new_session: the group is the script's
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGCONT)  # a frozen server cannot stop
    pid = server.tritonserver_pid()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid or server.process.pid, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.process.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # the stubs and multiprocessing helpers, if any remain
    server.process.wait()
    for left in (server.model_copy, server.workspace):
        if left is not None:
            shutil.rmtree(left, ignore_errors=True)


def _children(pid: int, name: str) -> list[int]:
    """Direct children of `pid` whose command name is `name`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == pid and comm == name[:15]:
            found.append(int(entry.name))
    return found


def _model_copy(script_pid: int) -> Path | None:
    """The /tmp/folderXXXXXX that the Python backend's stub serves the model from."""
    for server in _children(script_pid, "tritonserver"):
        for stub in _children(server, "triton_python_backend_stub"):
            try:
                argv = (Path("/proc") / str(stub) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            for arg in argv[1:2]:
                model_py = Path(arg.decode())
                if model_py.name == "model.py" and model_py.parent.parent.name.startswith("folder"):
                    return model_py.parent.parent
    return None


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]

"""The systemd service: the unit's gates (verify, security score), sd_notify from a real daemon
process (READY after the listener, WATCHDOG from the scheduler, RELOADING and STOPPING), SIGHUP
reloads that refuse a bad config and apply a good one live, JSON logs, credentials, heartbeat."""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import need
from tests.faultserver import FaultServer
from tests.peers import check_config, free_port, stop_process
from watchdog.runtime.systemd import Notify, credentials

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "mlops-watchdog.service"
MAX_EXPOSURE = 2.0
RUN = [sys.executable, "-m", "watchdog.cli", "run"]


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        need("systemd-analyze is missing: apt-get install systemd")
    assert found is not None
    return found


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's installed command.
    here = shutil.which("mlops-watchdog", path=str(Path(sys.executable).parent))
    assert here, "mlops-watchdog is not installed in this venv"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/mlops-watchdog/bin/mlops-watchdog", here))
    done = subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mlops-watchdog" not in done.stderr, done.stderr


def test_the_unit_scores_at_most_2_0_in_systemd_analyze_security() -> None:
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


def test_the_unit_keeps_nvml_working_and_runs_as_designed() -> None:
    text = UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[0] != "#"
    )
    assert settings["Type"] == "notify" and settings["WatchdogSec"]
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["DynamicUser"] == "yes" and settings["ProtectSystem"] == "strict"
    assert "PrivateDevices=yes" not in text
    for device in ("/dev/nvidiactl rw", "/dev/nvidia-uvm rw", "char-nvidia rw"):
        assert f"DeviceAllow={device}" in text
    assert "--log-format json" in settings["ExecStart"]


# --- sd_notify from a real daemon -----------------------------------------------------------


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET: collects what the daemon says."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages:
                if key in message and (value is None or message[key] == value):
                    self.messages.remove(message)
                    return message
            left = deadline - time.monotonic()
            assert left > 0, f"no {key}={value} from the daemon; got {self.messages}"
            self.sock.settimeout(left)
            data = self.sock.recv(4096).decode()
            self.messages.append(dict(line.split("=", 1) for line in data.splitlines()))


def write_config(path: Path, url: str, listen: str, endpoints: list[str], extra: str = "") -> None:
    eps = "\n".join(
        f'  - {{name: {n}, api: openai-chat, base_url: "{url}", timeout_s: 5}}' for n in endpoints
    )
    probes = "\n".join(
        f'  - {{endpoint: {n}, golden_set: "{ROOT}/golden_sets/default.yaml", every: 1s}}'
        for n in endpoints
    )
    path.write_text(
        f"storage: {{path: w.db, csv_dir: reports, report_every: 1h}}\n"
        f'listen: "{listen}"\n{extra}endpoints:\n{eps}\nprobes:\n{probes}\n'
    )


@pytest.fixture
def served() -> Iterator[FaultServer]:
    with FaultServer() as server:
        server.default = "ok"
        yield server


def metric_lines(listen: str, name: str) -> list[str]:
    text = httpx.get(f"http://{listen}/metrics", timeout=10).text
    return [line for line in text.splitlines() if line.startswith(name)]


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


def test_sd_notify_ready_watchdog_reload_and_stop(
    tmp_path: Path, served: FaultServer, manager: NotifySocket
) -> None:
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    write_config(config, served.url, listen, ["alpha", "beta"])
    env = {**os.environ, "NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "1500000"}
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [*RUN, "--config", str(config), "--log-format", "json"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = manager.wait_for("READY", "1")
        # READY=1 only once the listener answers and the store is open.
        assert httpx.get(f"http://{listen}/readyz", timeout=5).status_code == 200
        assert ready["STATUS"].startswith("watching 2 endpoint(s)")
        for _ in range(2):  # every WatchdogSec/3, from the scheduler
            assert "probe run(s) in progress" in manager.wait_for("WATCHDOG", "1")["STATUS"]

        # An invalid config is refused; the daemon runs on, on the old one.
        good = config.read_text()
        config.write_text(good.replace("every: 1s", "every: soon"))
        daemon.send_signal(signal.SIGHUP)
        manager.wait_for("RELOADING", "1")
        refused = manager.wait_for("READY", "1")
        assert refused["STATUS"].startswith("reload refused: 2 problem(s)")
        assert daemon.poll() is None
        manager.wait_for("WATCHDOG", "1")

        # A valid one is applied live: beta goes, gamma comes, alpha's alert state stays.
        write_config(config, served.url, listen, ["alpha", "gamma"])
        daemon.send_signal(signal.SIGHUP)
        manager.wait_for("RELOADING", "1")
        assert "2 endpoint(s), 2 probe(s)" in manager.wait_for("READY", "1")["STATUS"]
        deadline = time.monotonic() + 30
        while not any(
            'endpoint="gamma"' in m for m in metric_lines(listen, "mlops_watchdog_probe_success")
        ):
            assert time.monotonic() < deadline, "gamma was never probed after the reload"
            time.sleep(0.2)  # a real process: poll what it did
        success = metric_lines(listen, "mlops_watchdog_probe_success")
        assert not any('endpoint="beta"' in m for m in success)

        daemon.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING", "1")
        assert daemon.wait(timeout=20) == 0
    finally:
        if daemon.poll() is None:
            stop_process(daemon)
        log.close()
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records]
    assert any("every: 'soon'" in m or "probes[0].every" in m for m in messages), messages
    assert any(m.startswith("reload refused: 2 problem(s)") for m in messages)
    assert {r["level"] for r in records} <= {"INFO", "WARNING", "ERROR"}


def test_the_heartbeat_url_is_pinged_and_never_logged(
    tmp_path: Path, served: FaultServer, manager: NotifySocket
) -> None:
    hits: list[str] = []

    class Ping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    pinger = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ping)
    threading.Thread(target=pinger.serve_forever, daemon=True).start()
    secret = "/ping/3f7e9c1a-secret-uuid"
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.yaml"
    url = f"http://127.0.0.1:{pinger.server_address[1]}{secret}"
    write_config(config, served.url, listen, ["alpha"], extra=f'heartbeat_url: "{url}"\n')
    config.chmod(0o600)  # it holds a secret written out: only its owner may read it
    env = {**os.environ, "NOTIFY_SOCKET": str(manager.path), "WATCHDOG_USEC": "1500000"}
    done = subprocess.Popen(
        [*RUN, "--config", str(config)],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        manager.wait_for("READY", "1")
        manager.wait_for("WATCHDOG", "1")
        deadline = time.monotonic() + 10
        while not hits:
            assert time.monotonic() < deadline, "heartbeat_url was never pinged"
            time.sleep(0.1)
    finally:
        done.send_signal(signal.SIGTERM)
        _, err = done.communicate(timeout=20)
        pinger.shutdown()
        pinger.server_close()
    assert hits[0] == secret
    assert secret not in err.decode()


# --- the pieces -------------------------------------------------------------------------------


def test_notify_speaks_to_an_abstract_socket_and_checks_the_watchdog_pid() -> None:
    name = f"mlops-watchdog-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"}
        notify = Notify(env)
        assert notify.watchdog_s == 30.0
        notify.ready("up")
        assert manager.recv(100) == b"READY=1\nSTATUS=up"
    other = Notify({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None and not other.enabled
    assert not other.send("READY=1")  # not under systemd: silent


def test_credentials_become_config_variables(tmp_path: Path) -> None:
    (tmp_path / "mlops-watchdog_SLACK_WEBHOOK_URL").write_text("https://hooks.example/T/B/x\n")
    (tmp_path / "LLM_API_KEY").write_text("k3y")
    assert credentials({"CREDENTIALS_DIRECTORY": str(tmp_path)}) == {
        "LLM_API_KEY": "k3y",
        "SLACK_WEBHOOK_URL": "https://hooks.example/T/B/x",
    }
    assert credentials({}) == {}


def test_a_credential_fills_a_config_variable_for_check(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mlops-watchdog_LLM_API_KEY").write_text("k3y-from-credential")
    config = tmp_path / "config.yaml"
    config.write_text(
        "endpoints:\n  - {name: a, api: openai-chat, base_url: http://a.test, "
        'headers: {Authorization: "Bearer ${LLM_API_KEY}"}}\n'
    )
    without = check_config(config, drop=["LLM_API_KEY"])
    assert without.returncode == 2 and "LLM_API_KEY" in without.stderr
    done = check_config(config, drop=["LLM_API_KEY"], CREDENTIALS_DIRECTORY=str(creds))
    assert done.returncode == 0, done.stderr
    assert "k3y-from-credential" not in done.stdout + done.stderr


def install_into(root: Path) -> None:
    done = subprocess.run(
        ["make", "install-service", f"DESTDIR={root}", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_make_install_service_stages_a_tree_that_checks_and_verifies(tmp_path: Path) -> None:
    """`make install-service` into a staging root (DESTDIR): its own venv, the unit, and a
    starter /etc/mlops-watchdog whose config passes `check` untouched."""
    root = tmp_path / "root"
    install_into(root)
    binary = root / "opt/mlops-watchdog/bin/mlops-watchdog"
    etc = root / "etc/mlops-watchdog"
    assert binary.is_file() and (root / "opt/mlops-watchdog/probes/vllm.yaml").is_file()
    assert (etc / "credentials").stat().st_mode & 0o777 == 0o700
    assert not (etc / "config.yaml").stat().st_mode & 0o022
    checked = subprocess.run(
        [str(binary), "check", "--config", str(etc / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unit = root / "etc/systemd/system/mlops-watchdog.service"
    assert unit.read_text() == UNIT.read_text()
    staged = tmp_path / UNIT.name
    staged.write_text(
        unit.read_text().replace("/opt/mlops-watchdog/bin/mlops-watchdog", str(binary))
    )
    verified = subprocess.run(
        [systemd_analyze(), "verify", str(staged)], capture_output=True, text=True, timeout=60
    )
    assert verified.returncode == 0, verified.stderr
    # A second install keeps the operator's edits.
    (etc / "config.yaml").write_text((etc / "config.yaml").read_text() + "# edited\n")
    install_into(root)
    assert (etc / "config.yaml").read_text().endswith("# edited\n")


def test_an_unreadable_credentials_directory_is_one_clear_line(tmp_path: Path) -> None:
    """Found under a real systemd: a directory the service user may not list is an error that
    names it, not a traceback."""
    config = tmp_path / "config.yaml"
    config.write_text("endpoints: []\n")
    missing = tmp_path / "gone"
    done = check_config(config, CREDENTIALS_DIRECTORY=str(missing))
    assert done.returncode == 2, done.stderr
    assert (
        "systemd credentials not readable ($CREDENTIALS_DIRECTORY)" in done.stderr
        and str(missing) in done.stderr
    )
    assert "Traceback" not in done.stderr

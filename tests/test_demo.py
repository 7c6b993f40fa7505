"""`make demo`'s script, run as a newcomer would (deploy/demo.sh: the real llama-server with
SmolLM2 and the daemon): it says where to look and how to break it, and it starts green. It
once fired a `format` alert within a minute on the healthy model (the default set's
`one-word-answer` is beyond a 135M model)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx

from tests.peers import LlamaServer, free_port
from tests.test_e2e_llama import ROOT


def test_the_demo_starts_green_and_says_where_to_look(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    # llama_server: the peers are installed (CI fails without them); the demo starts its own.
    listen = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "DEMO_DIR": str(tmp_path), "DEMO_LISTEN": listen}
    out = tmp_path / "demo.out"
    with out.open("wb") as sink:
        demo = subprocess.Popen(
            ["bash", "deploy/demo.sh"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        results: list[tuple[str, str | None]] = []
        while time.monotonic() < deadline and len(results) < 3:
            time.sleep(0.5)
            assert demo.poll() is None, out.read_text()
            db = tmp_path / "watchdog.db"
            if db.exists():
                try:
                    with sqlite3.connect(db) as conn:
                        results = conn.execute(
                            "select prompt_id, error_class from results"
                        ).fetchall()
                except sqlite3.OperationalError:  # not migrated yet
                    continue
        assert len(results) == 3, out.read_text()
        text = out.read_text()
        assert f"status     http://{listen}/" in text and f"http://{listen}/metrics" in text
        assert "To see a failure, freeze the model server from another shell:  kill -STOP" in text
        time.sleep(1)  # the run's transaction and alert state are one; read them after it
        with sqlite3.connect(tmp_path / "watchdog.db") as conn:
            failed = conn.execute("select prompt_id from results where ok = 0").fetchall()
            firing = conn.execute("select kind from alerts where state != 'ok'").fetchall()
        assert failed == [] and firing == [], (failed, firing)
        target = httpx.get(f"http://{listen}/targets/local-smol/ready")
        assert f"http://{listen}/targets/local-smol/ready" in text
        assert target.status_code == 200 and target.json()["state"] == "ok", target.text
        page = httpx.get(f"http://{listen}/metrics").text
        ok = re.search(
            r'mlops_watchdog_probe_success\{[^}]*prompt_id="arithmetic"[^}]*\} 1\.0', page
        )
        assert ok, [line for line in page.splitlines() if "probe_success" in line]
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()

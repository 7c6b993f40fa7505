"""A real `mlops-watchdog run`, restarted mid-incident: exactly one page and one resolved message."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.fakeslack import FakeSlack
from tests.faultserver import FaultServer, free_port

SECRET = "T0SECRET/B0SECRET/planted4f9c2e7a1b"
GOLDEN = """
name: one
prompts:
  - id: hello
    prompt: "Say hello."
    checks: [{min_length: 1}]
"""


def results(db: Path) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("select count(*) from results").fetchone()[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        conn.close()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # a real daemon in another process: poll what it did
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Watchdog:
    def __init__(self, config: Path, log: Path):
        self.config = config
        self.log = log

    def __enter__(self) -> Watchdog:
        self.out = self.log.open("a")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "watchdog.cli",
                "run",
                "--config",
                str(self.config),
                "--log-level",
                "DEBUG",
            ],
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.out.close()


def test_restart_mid_incident_and_recovery_while_down(tmp_path: Path) -> None:
    with FakeSlack(webhook_path=f"/services/{SECRET}") as slack, FaultServer() as llm:
        (tmp_path / "one.yaml").write_text(GOLDEN)
        config = tmp_path / "config.yaml"
        config.write_text(
            f"""
storage: {{path: data/w.db, csv_dir: reports, report_every: 1s}}
listen: "127.0.0.1:{free_port()}"
node: rack-2-node-5
alerting:
  failure_threshold: 3
  success_threshold: 2
  slack: {{webhook_url: "${{SLACK_WEBHOOK_URL}}", timeout_s: 2}}
endpoints:
  - {{name: llm, api: openai-chat, base_url: "{llm.url}", timeout_s: 2}}
probes:
  - {{endpoint: llm, golden_set: one.yaml, every: 0.5s}}
"""
        )
        os.environ["SLACK_WEBHOOK_URL"] = slack.webhook_url
        log = tmp_path / "watchdog.log"
        db = tmp_path / "data" / "w.db"
        try:
            llm.default = "503"
            slack.script(("status", 429, {"Retry-After": "1"}))  # Slack rate-limits the first try
            with Watchdog(config, log) as first:
                wait_for(lambda: len(slack.accepted) == 1, 30, "the firing page")
                seen = results(db)
                wait_for(lambda: results(db) >= seen + 3, 30, "more failing runs while firing")
                assert first.stop() == 0
            with Watchdog(config, log) as second:  # restarted mid-incident
                seen = results(db)
                wait_for(lambda: results(db) >= seen + 4, 30, "failing runs after the restart")
                assert second.stop() == 0
            assert len(slack.accepted) == 1
            llm.default = "ok"  # recovers while no watchdog runs
            with Watchdog(config, log) as third:
                wait_for(lambda: len(slack.accepted) == 2, 30, "the resolved message")
                assert third.stop() == 0
        finally:
            del os.environ["SLACK_WEBHOOK_URL"]
        firing, resolved = (m["text"] for m in slack.accepted)
        assert firing.startswith("🔴 llm on rack-2-node-5: HTTP errors (3 runs in a row)")
        assert resolved.startswith("✅ resolved: llm on rack-2-node-5: HTTP errors")

        text = log.read_text()
        assert "Traceback" not in text and "page sent" in text
        assert re.search(r"slack rate_limited, retry in [12]s", text) and slack.attempts == 3
        files = [p for p in tmp_path.rglob("*") if p.is_file() and p != config]
        assert any(p.suffix == ".csv" for p in files)
        for path in files:  # the log, the database and its WAL, the reports
            assert SECRET.encode() not in path.read_bytes(), path

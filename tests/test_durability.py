"""kill -9 at random moments of a real daemon: no committed result is lost, no run is half
stored, and `PRAGMA integrity_check` stays clean, start after start."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.faultserver import FaultServer
from tests.peers import free_port

ROOT = Path(__file__).resolve().parents[1]
KILLS = 8
PROMPTS = 5  # the default golden set


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0  # the first start is still creating its tables
        raise
    finally:
        conn.close()


def test_a_kill_9_storm_loses_no_committed_result(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    chance = random.Random(20261128)  # random moments, the same ones on every run
    with FaultServer() as server:
        server.default = "ok"
        names = [f"e{i}" for i in range(4)]
        endpoints = "\n".join(
            f'  - {{name: {n}, api: openai-chat, base_url: "{server.url}", concurrency: 2}}'
            for n in names
        )
        probes = "\n".join(
            f'  - {{endpoint: {n}, golden_set: "{ROOT}/golden_sets/default.yaml", every: 1s}}'
            for n in names
        )
        config = tmp_path / "config.yaml"
        config.write_text(
            f'storage: {{path: "{db}", csv_dir: reports, report_every: 1h}}\n'
            f'listen: "127.0.0.1:{free_port()}"\nendpoints:\n{endpoints}\nprobes:\n{probes}\n'
        )
        committed = 0
        for kill in range(KILLS):
            daemon = subprocess.Popen(
                [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                # Wait for this start's first writes, then a random moment more.
                deadline = time.monotonic() + 60
                while not db.exists() or count(db, "select count(*) from results") <= committed:
                    assert daemon.poll() is None, f"the daemon exited with {daemon.returncode}"
                    assert time.monotonic() < deadline, "no probe results after a restart"
                    time.sleep(0.05)  # a real process: poll what it did
                time.sleep(chance.uniform(0.0, 1.5))
                seen = count(db, "select count(*) from results")  # committed: a reader sees it
            finally:
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=10)
            after = count(db, "select count(*) from results")
            assert after >= seen, f"kill {kill}: {seen - after} committed result(s) lost"
            committed = after
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("pragma integrity_check").fetchall() == [("ok",)]
        half = conn.execute(
            "select run_id, count(*) from results group by run_id having count(*) != ?",
            [PROMPTS],
        ).fetchall()
        assert half == [], f"runs stored in part: {half}"
        tiers = conn.execute(
            "select count(*) from readiness where run_id not in (select run_id from results)"
        ).fetchone()[0]
        assert tiers == 0, "readiness rows of runs whose results are missing"
    finally:
        conn.close()
    assert committed >= KILLS * PROMPTS

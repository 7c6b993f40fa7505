"""Silences and maintenance windows are read only when they can matter: a failure (does it
page?) or a firing alert (is its resolution sent?), not at every fine run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from watchdog.alerting import silences
from watchdog.alerting.alerter import Alerter
from watchdog.alerting.settings import Alerting
from watchdog.endpoint import Endpoint
from watchdog.result import Answer, ErrorClass, ProbeResult
from watchdog.store import Store

T0 = datetime(2026, 12, 4, 12, tzinfo=UTC)


def result(at: datetime, error_class: ErrorClass | None = None) -> ProbeResult:
    answer = (
        Answer(error_class=error_class, error_detail="refused")
        if error_class
        else Answer(text="Paris", status_code=200, e2e_s=0.1)
    )
    return ProbeResult(
        endpoint="e",
        prompt_id="p",
        golden_set="g",
        golden_set_hash="h",
        started_at=at,
        stream=False,
        answer=answer,
        checks=[],
        fingerprint="f",
        response_excerpt="Paris",
        response_sha256="00",
    )


def test_fine_runs_read_no_silences_and_failures_still_honour_them(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    alerter = Alerter(Alerting(failure_threshold=2, success_threshold=1), store)
    endpoint = Endpoint(name="e", api="openai-chat", base_url="http://127.0.0.1:1")
    read: list[str] = []
    store.db.conn.set_trace_callback(
        lambda sql: read.append(sql) if "from silences" in sql else None
    )

    def run(n: int, error_class: ErrorClass | None = None) -> list[str]:
        now = T0 + timedelta(seconds=n)
        with store.transaction():
            return alerter.observe(endpoint, [result(now, error_class)], now)

    assert run(0) == [] and run(1) == []
    assert read == []  # fine, and nothing firing: nothing to keep quiet
    silences.add(store.db, "e", "", 3600, "planned restart", T0)
    assert run(2, "connect") == [] and len(read) == 1  # one read for all of the run's kinds
    (key,) = run(3, "connect")
    firing = store.db.execute("select status from outbox where key = ?", [key]).fetchone()
    assert ":firing:" in key and firing[0] == "suppressed"  # silenced: recorded, not sent
    read.clear()
    (key,) = run(4)  # the resolution of a firing alert asks again
    assert ":resolved:" in key and len(read) == 1
    store.close()

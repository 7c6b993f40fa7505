"""SQLite storage: WAL, numbered migrations, one transaction per run, errors that name the file."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlite_utils import Database

from watchdog.result import Answer, CheckOutcome, ProbeResult
from watchdog.store import Store, StoreError
from watchdog.store.migrations import MIGRATIONS


def result(prompt_id: str = "p", ok: bool = True, fingerprint: str = "abc") -> ProbeResult:
    answer = Answer(
        text="Paris",
        status_code=200,
        ttft_s=0.1,
        e2e_s=0.5,
        itl_s=[0.01, 0.03],
        output_tokens=5,
        token_source="usage",
        server_timings={"predicted_ms": 40.0},
    )
    return ProbeResult(
        endpoint="e",
        prompt_id=prompt_id,
        golden_set="default",
        golden_set_hash="h",
        started_at=datetime(2026, 11, 23, 12, tzinfo=UTC),
        stream=True,
        answer=answer,
        checks=[CheckOutcome("contains", ok, "ok" if ok else "missing")],
        fingerprint=fingerprint,
        response_excerpt="Paris",
        response_sha256="00",
    )


def test_open_creates_schema_in_wal(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "sub" / "w.db")
    assert store.schema_version == len(MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    again = Store.open(tmp_path / "sub" / "w.db")  # migrating twice is a no-op
    assert again.schema_version == len(MIGRATIONS)
    again.close()


def test_record_run_stores_every_field(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    store.record_run("run1", [result("a"), result("b", ok=False)], {"model_ids": ["m"]})
    rows = {r["prompt_id"]: r for r in store.db["results"].rows}
    assert rows["a"]["ok"] == 1 and rows["a"]["error_class"] is None
    assert rows["b"]["ok"] == 0 and rows["b"]["error_class"] == "check_failed"
    assert (
        rows["a"]["itl_p50_s"] == pytest.approx(0.02)
        and rows["a"]["started_at"] == "2026-11-23T12:00:00Z"
    )
    assert json.loads(rows["b"]["checks"]) == [
        {"name": "contains", "ok": False, "detail": "missing"}
    ]
    assert json.loads(rows["a"]["server_timings"]) == {"predicted_ms": 40.0}
    (fp,) = store.db["fingerprints"].rows
    assert fp["fingerprint"] == "abc"
    assert json.loads(fp["components"]) == {
        "model_ids": ["m"],
        "system_fingerprint": None,
        "golden_set_hash": "h",
    }
    frame = store.results_since(0)
    assert list(frame["prompt_id"]) == ["a", "b"]
    store.close()


def test_a_failed_run_writes_nothing(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    store.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON results WHEN NEW.prompt_id = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(StoreError, match=r"w\.db: cannot write: disk says no"):
        store.record_run("run1", [result("good"), result("bad")], {})
    assert store.db["results"].count == 0 and store.db["fingerprints"].count == 0
    store.close()


def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreError, match=r"schema version 999 is newer .* upgrade mlops-watchdog"):
        Store.open(tmp_path / "w.db")


def test_unwritable_location_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=str(blocker / "w.db")):
        Store.open(blocker / "w.db")


def test_drift_reads_walk_indexes_not_the_history(tmp_path: Path) -> None:
    """Every read of `results` that drift makes about once a minute is an index search: a scan
    would make CPU per probe grow with the database (it did, in bench/scale.py)."""
    from datetime import timedelta

    from watchdog.drift import baselines
    from watchdog.drift.baselines import BaselinePolicy
    from watchdog.drift.compare import DriftSettings

    store = Store.open(tmp_path / "w.db")
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    for n in range(30):
        r = result()
        r.started_at = start + timedelta(minutes=n)
        store.record_run(f"r{n}", [r], {})
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    baselines.maintain(store.db, "e", "default", BaselinePolicy(runs=10), start)
    baselines.drift(store.db, "e", "default", DriftSettings())
    store.db.conn.set_trace_callback(None)
    reads = [s for s in statements if s.lstrip().lower().startswith("select") and "results" in s]
    assert reads
    for sql in reads:
        plan = " / ".join(row[3] for row in store.db.conn.execute("explain query plan " + sql))
        assert "SCAN results" not in plan, (sql, plan)


def test_triton_events_stored_as_estimates_are_relabelled(tmp_path: Path) -> None:
    # Before migration 8, Triton's streamed events were stored as an `estimate` of tokens with
    # a tokens/s worked out from them.
    path = tmp_path / "w.db"
    db = Database(path)
    for step in MIGRATIONS[:7]:
        step(db)
    db.execute("PRAGMA user_version = 7")
    identity = {"triton": {"api": "triton"}, "vllm": {"api": "openai-chat"}}
    for endpoint, ident in identity.items():
        db["identities"].insert({"endpoint": endpoint, "identity": json.dumps(ident)})
    rows = [  # endpoint, stream, tokens, source, tokens/s, started
        ("triton", 1, 10, "estimate", 20.0, 3600.0),
        ("triton", 1, 12, "usage", 30.0, 3601.0),  # counted: stays
        ("triton", 0, 8, "estimate", 16.0, 3602.0),  # a length estimate: stays
        ("vllm", 1, 9, "estimate", 18.0, 3600.0),  # another API's estimate: stays
    ]
    for i, (endpoint, stream, tokens, source, speed, ts) in enumerate(rows):
        db["results"].insert(
            {
                "id": i,
                "endpoint": endpoint,
                "golden_set": "g",
                "prompt_id": "p",
                "started_ts": ts,
                "stream": stream,
                "output_tokens": tokens,
                "token_source": source,
                "tokens_per_s": speed,
                "tpot_s": 1 / speed,
            }
        )
    for endpoint in identity:
        db["rollups"].insert(
            {"endpoint": endpoint, "golden_set": "g", "prompt_id": "p", "hour_ts": 3600}
            | {"tokens_per_s_mean": 99.0, "output_tokens": 99}
        )
    db.close()

    store = Store.open(path)
    got = [
        tuple(r)
        for r in store.db.execute(
            "select token_source, tokens_per_s, tpot_s from results order by id"
        ).fetchall()
    ]
    assert got == [
        ("events", None, None),
        ("usage", 30.0, 1 / 30),
        ("estimate", 16.0, 1 / 16),
        ("estimate", 18.0, 1 / 18),
    ]
    rollups = {
        r["endpoint"]: (r["tokens_per_s_mean"], r["output_tokens"])
        for r in store.db.query("select * from rollups")
    }
    assert rollups == {"triton": (23.0, 20), "vllm": (99.0, 99)}  # the events' hour, recomputed
    store.close()


def test_within_joins_the_callers_transaction_without_a_savepoint(tmp_path: Path) -> None:
    """A run's rows go in inside the daemon's transaction for the whole run: a failure anywhere
    fails all of it, so a savepoint of their own (two statements at every run) buys nothing."""
    store = Store.open(tmp_path / "w.db")
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    with pytest.raises(StoreError, match=r"w\.db: cannot write"), store.transaction():
        store.record_run("run1", [result("a")], {})
        store.db.execute("insert into nowhere values (1)")
    assert not any("SAVEPOINT" in s.upper() for s in statements)
    assert store.db["results"].count == 0  # the caller's failure took the run with it
    store.record_run("run2", [result("b")], {})  # alone: in a transaction of its own
    assert not store.db.conn.in_transaction
    assert [r["run_id"] for r in store.db["results"].rows] == ["run2"]
    store.close()


def test_a_stored_run_rewrites_few_pages(tmp_path: Path) -> None:
    """Runs of many endpoints commit together, so each index keyed by endpoint (or by a random
    id) costs a page of the write-ahead log a run. A hundred endpoints with ten minutes of
    history, their runs committed ten at a time as the daemon's group commit does: a run
    writes 2.6 pages. With random run ids it wrote 3.4, with the two indexes no query used 5.3,
    with both 6.3."""
    from dataclasses import replace
    from datetime import timedelta

    from bench.probe_cost import history
    from watchdog.probers.readiness import completion
    from watchdog.runner import new_run_id

    store = Store.open(tmp_path / "w.db")
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)

    def second(n: int) -> None:
        at = start + timedelta(seconds=n)
        for group in range(10):
            with store.transaction():
                for e in range(group * 10, group * 10 + 10):
                    r = replace(result(), endpoint=f"e{e}", started_at=at)
                    tier = completion([r])
                    assert tier is not None
                    store.record_run(new_run_id(at), [r], {}, [tier.to_json()])

    for n in range(30):
        second(n)
    history(tmp_path / "w.db", 570)  # ten minutes in all, earlier, as bench.probe_cost does
    conn = store.db.conn
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    for n in range(30, 40):
        second(n)
    frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
    assert frames / 1000 < 3, f"{frames / 1000:.1f} pages a run"
    store.close()


def test_a_routers_readiness_check_reads_the_newest_runs_not_the_history(tmp_path: Path) -> None:
    """`/targets/NAME/ready` and the cold-start check find an endpoint's newest run (and its
    first) one golden set at a time, through the index: sorting all of an endpoint's results
    by time took 0.9 s for a million, on the daemon's loop, at every check of a router."""
    from dataclasses import replace
    from datetime import timedelta

    from watchdog.alerting.targets import target
    from watchdog.result import Answer

    store = Store.open(tmp_path / "w.db")
    start = datetime(2026, 11, 23, 12, tzinfo=UTC)
    with store.transaction():
        for n in range(3000):
            for endpoint in ("e", "f"):
                r = replace(
                    result(),
                    endpoint=endpoint,
                    golden_set=("default", "json", "math")[n % 3],
                    started_at=start + timedelta(seconds=n),
                )
                store.record_run(f"{endpoint}{n:05d}", [r], {})
    down = Answer(error_class="timeout", error_detail="no answer in 30 s")
    late = start + timedelta(seconds=3000)
    store.record_run("e-last", [replace(result(), started_at=late, answer=down, checks=[])], {})

    steps = [0]
    store.db.conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1) or 0, 100)
    found = target(store.db, "e")
    unanswered = store.last_run_unanswered("e")
    store.db.conn.set_progress_handler(None, 0)

    assert (found.run_id, found.last_error_class, found.since) == (
        "e-last",
        "timeout",
        "2026-11-23T12:00:00Z",
    )
    assert unanswered and not store.last_run_unanswered("f")
    assert target(store.db, "f").run_id == "f02999" and target(store.db, "g").state == "unknown"
    assert steps[0] * 100 < 3000, f"about {steps[0] * 100} SQLite steps for 6,001 results"
    store.close()

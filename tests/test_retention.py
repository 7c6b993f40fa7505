"""Retention: hourly rollups, pruning that spares baselines and pending pages, incremental vacuum."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from watchdog.drift import baselines
from watchdog.result import Answer, CheckOutcome, ErrorClass, ProbeResult
from watchdog.store import Store, retention
from watchdog.store.retention import Limits, maintain, roll_up, size_bytes, size_warning
from watchdog.store.settings import Retention

T0 = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # an hour's start
HOUR = 3600.0
DAY = 86400.0


def result(
    at: float,
    prompt_id: str = "p",
    e2e: float = 0.5,
    ttft: float = 0.1,
    error: ErrorClass | None = None,
    check_ok: bool = True,
    tokens: int = 5,
    excerpt: str = "Paris",
) -> ProbeResult:
    answered = error is None
    answer = Answer(
        text=excerpt,
        status_code=200 if answered else None,
        error_class=error,
        ttft_s=ttft if answered else None,
        e2e_s=e2e,  # a timeout's e2e is the deadline: it must stay out of the percentiles
        itl_s=[0.01, 0.03],
        output_tokens=tokens if answered else None,
        token_source="usage" if answered else None,
    )
    return ProbeResult(
        endpoint="e",
        prompt_id=prompt_id,
        golden_set="default",
        golden_set_hash="h",
        started_at=datetime.fromtimestamp(at, UTC),
        stream=True,
        answer=answer,
        checks=[CheckOutcome("contains", check_ok, "")] if answered else [],
        fingerprint="abc",
        response_excerpt=excerpt,
        response_sha256="00",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "w.db")
    yield s
    s.close()


def rows(store: Store, table: str) -> list[dict[str, Any]]:
    return list(store.db.query(f"select * from {table} order by rowid"))


def run_ids(store: Store, table: str) -> set[str]:
    return {r["run_id"] for r in store.db.query(f"select run_id from {table}")}


def record(store: Store, run_id: str, at: float, n: int = 1, **kwargs: Any) -> None:
    tiers = [{"tier": "liveness", "ok": True, "detail": "", "path": "/health"}]
    load = {"at_ts": at, "ok": 1, "load": "{}", "detail": None}
    store.record_run(run_id, [result(at + i, **kwargs) for i in range(n)], {}, tiers, load)


def test_rollups_match_numpy_on_the_same_data(store: Store) -> None:
    rng = np.random.default_rng(8)
    expected: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for i in range(60):  # two hours, a run every two minutes, two prompts per run
        at = T0 + i * 120
        batch = []
        for prompt_id in ("a", "b"):
            e2e, ttft = float(rng.lognormal(0, 0.4)), float(rng.uniform(0.05, 0.2))
            error: ErrorClass | None = "timeout" if i % 7 == 0 else None
            check_ok = i % 5 != 0
            tokens = int(rng.integers(2, 40))
            batch.append(result(at, prompt_id, e2e, ttft, error, check_ok, tokens))
            e = expected.setdefault((prompt_id, int(at // HOUR * HOUR)), {})
            e.setdefault("error", []).append(error or ("check_failed" if not check_ok else None))
            e.setdefault("e2e", []).append(e2e)
            e.setdefault("ttft", []).append(ttft)
            e.setdefault("tokens", []).append(tokens)
            e.setdefault("tps", []).append(batch[-1].answer.tokens_per_s)
        store.record_run(f"r{i}", batch, {})

    summary = maintain(store.db, T0 + 3 * HOUR, Retention())

    assert summary.hours_rolled == 2 and not summary.more_to_do
    got = {(r["prompt_id"], r["hour_ts"]): r for r in rows(store, "rollups")}
    assert set(got) == set(expected)
    for key, e in expected.items():
        r = got[key]
        answered = [x is None or x == "check_failed" for x in e["error"]]
        e2e = np.array(e["e2e"])[answered]
        ttft = np.array(e["ttft"])[answered]
        assert r["endpoint"] == "e" and r["golden_set"] == "default"
        assert r["answers"] == r["runs"] == 30
        assert r["ok"] == sum(x is None for x in e["error"])
        assert r["answered"] == sum(answered)
        assert json.loads(r["errors"]) == {
            c: e["error"].count(c) for c in ("timeout", "check_failed") if c in e["error"]
        }
        assert r["e2e_p50_s"] == pytest.approx(np.percentile(e2e, 50))
        assert r["e2e_p95_s"] == pytest.approx(np.percentile(e2e, 95))
        assert r["ttft_p50_s"] == pytest.approx(np.percentile(ttft, 50))
        assert r["ttft_p95_s"] == pytest.approx(np.percentile(ttft, 95))
        assert r["tokens_per_s_mean"] == pytest.approx(
            np.mean([t for t in e["tps"] if t is not None])
        )
        assert r["output_tokens"] == sum(
            t for t, a in zip(e["tokens"], e["error"], strict=True) if a != "timeout"
        )
        assert r["checks_total"] == sum(answered) and r["cold"] == 0


def test_rolling_up_again_replaces_the_same_rows(store: Store) -> None:
    for i in range(10):
        record(store, f"r{i}", T0 + i * 600, n=3, e2e=0.2 + i / 10)
    maintain(store.db, T0 + 3 * HOUR, Retention())
    first = rows(store, "rollups")
    assert first and roll_up(store.db, T0, T0 + 2 * HOUR) == len(first)
    maintain(store.db, T0 + 3 * HOUR, Retention())
    assert rows(store, "rollups") == first
    store.db.execute("update results set e2e_s = 9 where run_id = 'r0'")
    roll_up(store.db, T0, T0 + HOUR)  # the hour's row is replaced, not added to
    again = rows(store, "rollups")
    assert len(again) == len(first) == 2
    assert again[0]["e2e_p95_s"] > first[0]["e2e_p95_s"] and again[1] == first[1]


def test_an_hour_is_rolled_up_once_it_has_settled(store: Store) -> None:
    record(store, "r1", T0 + 3500)  # its results may still be on their way at T0 + 1h
    maintain(store.db, T0 + HOUR + 60, Retention())
    assert rows(store, "rollups") == []
    summary = maintain(store.db, T0 + HOUR + Limits().settle_s, Retention())
    assert summary.hours_rolled == 1 and len(rows(store, "rollups")) == 1


def test_results_are_never_pruned_before_they_are_rolled_up(store: Store) -> None:
    record(store, "r1", T0 + 3500)
    tiny = Retention(raw_days=0.0001)  # nine seconds
    assert maintain(store.db, T0 + HOUR + 60, tiny).deleted["results"] == 0
    summary = maintain(store.db, T0 + HOUR + Limits().settle_s, tiny)
    assert summary.deleted["results"] == 1 and rows(store, "rollups")[0]["answers"] == 1


def test_old_results_go_but_the_runs_of_active_and_pinned_baselines_stay(store: Store) -> None:
    for run_id in ("retired", "pinned", "active", "plain"):
        record(store, run_id, T0 + 60, n=2)
    store.db["run_energy"].insert_all(
        {"run_id": r, "endpoint": "e", "started_ts": T0 + 60} for r in ("pinned", "plain")
    )
    now = datetime.fromtimestamp(T0 + 20 * DAY, UTC)
    baselines.create(store.db, "e", "default", ["retired"], "first runs", now)
    pinned = baselines.create(store.db, "e", "default", ["pinned"], "recorded", now)
    baselines.pin(store.db, pinned)
    baselines.create(store.db, "e", "default", ["active"], "recorded", now)  # retires the others
    record(store, "recent", T0 + 20 * DAY - HOUR)

    summary = maintain(store.db, T0 + 20 * DAY, Retention(raw_days=14))

    kept = {"pinned", "active", "recent"}
    assert run_ids(store, "results") == kept
    assert run_ids(store, "readiness") == kept and run_ids(store, "server_load") == kept
    assert run_ids(store, "run_energy") == {"pinned"}
    assert summary.deleted["results"] == 4 and summary.deleted["readiness"] == 2
    (old,) = (r for r in rows(store, "rollups") if r["hour_ts"] == T0)
    assert old["answers"] == 8 and old["runs"] == 4  # rolled up before the prune
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_rollups_go_after_rollup_days(store: Store) -> None:
    record(store, "r1", T0 + 60)
    maintain(store.db, T0 + 2 * HOUR, Retention(raw_days=1, rollup_days=2))
    assert len(rows(store, "rollups")) == 1
    summary = maintain(store.db, T0 + 2 * DAY + 2 * HOUR, Retention(raw_days=1, rollup_days=2))
    assert rows(store, "rollups") == [] and rows(store, "results") == []
    assert summary.deleted["rollups"] == 1


def test_pending_pages_and_open_incidents_stay_in_the_outbox(store: Store) -> None:
    old, recent = "2026-11-02T00:00:00.5Z", "2026-11-20T00:00:00Z"
    pages = [
        ("sent-old", "sent", old, "i1"),
        ("suppressed-old", "suppressed", old, "i1"),
        ("pending-old", "pending", old, "i1"),
        ("sending-old", "sending", old, "i1"),
        ("sent-recent", "sent", recent, "i1"),
        ("open-incident", "sent", old, "i2"),
    ]
    store.db["outbox"].insert_all(
        {"key": k, "status": s, "created_at": at, "incident": i, "endpoint": "e"}
        for k, s, at, i in pages
    )
    store.db["alerts"].insert(
        {"endpoint": "e", "kind": "down", "state": "firing", "incident": "i2"}
    )
    maintain(store.db, datetime(2026, 11, 21, tzinfo=UTC).timestamp(), Retention(raw_days=14))
    left = {r["key"] for r in rows(store, "outbox")}
    assert left == {"pending-old", "sending-old", "sent-recent", "open-incident"}


def test_pruning_a_large_table_shrinks_the_file(store: Store) -> None:
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == retention.INCREMENTAL
    for i in range(40):
        record(store, f"r{i}", T0 + i * 60, n=100, excerpt="x" * 2000)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = os.path.getsize(store.path)

    limits = Limits(batch_rows=1000, max_batches=10, max_vacuum_steps=50)
    summary = maintain(store.db, T0 + 20 * DAY, Retention(), limits)

    assert summary.deleted["results"] == 4000 and not summary.more_to_do
    assert summary.pages_freed > 0 and summary.size_after < summary.size_before / 4
    assert os.path.getsize(store.path) < before / 4
    assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_bounded_calls_end_where_one_big_call_does(tmp_path: Path) -> None:
    def fill(store: Store) -> None:
        for i in range(30):
            record(store, f"r{i}", T0 + i * 1200, n=5, excerpt="y" * 500)

    small, big = Store.open(tmp_path / "small.db"), Store.open(tmp_path / "big.db")
    fill(small)
    fill(big)
    limits = Limits(batch_rows=7, max_batches=3, rollup_rows=10, vacuum_pages=4, max_vacuum_steps=2)
    calls = 1
    while maintain(small.db, T0 + 20 * DAY, Retention(), limits).more_to_do and calls < 500:
        calls += 1
    assert not maintain(big.db, T0 + 20 * DAY, Retention()).more_to_do
    assert 5 < calls < 500
    for table in ("rollups", "results", "readiness", "server_load"):
        assert rows(small, table) == rows(big, table)
    assert len(rows(small, "rollups")) == 10 and rows(small, "results") == []
    assert small.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    small.close()
    big.close()


def test_a_file_from_before_schema_6_is_rebuilt_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("create table legacy (x)")  # written: auto_vacuum can no longer change
    conn.close()
    store = Store.open(path)
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    for i in range(20):
        record(store, f"r{i}", T0 + i * 60, n=50, excerpt="z" * 1000)

    first = maintain(store.db, T0 + 20 * DAY, Retention())
    second = maintain(store.db, T0 + 20 * DAY, Retention())

    assert first.rebuilt and first.pages_freed > 0 and first.size_after < first.size_before / 4
    assert not second.rebuilt
    assert store.db.execute("PRAGMA auto_vacuum").fetchone()[0] == retention.INCREMENTAL
    assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store.close()


def test_an_oversized_database_says_so(store: Store) -> None:
    record(store, "r1", T0)
    summary = maintain(store.db, T0 + HOUR, Retention(max_db_bytes=4096))
    assert summary.over_limit and summary.size_after == size_bytes(store.db)
    assert summary.warning == size_warning(store.path, summary.size_after, 4096, 14)
    assert not maintain(store.db, T0 + HOUR, Retention()).over_limit


def test_the_size_warning_names_the_file_the_size_the_limit_and_the_fix() -> None:
    assert size_warning("/var/lib/w.db", 2_345_678_901, 2_000_000_000, 14) == (
        "/var/lib/w.db: the database is 2.35 GB (2,345,678,901 bytes), over "
        "retention.max_db_bytes (2.00 GB (2,000,000,000 bytes)). Every result is kept for "
        "retention.raw_days (14 days) and hourly rollups after that; lower retention.raw_days to "
        "shrink it (pages are given back within a few retention passes), or raise max_db_bytes if "
        "the disk has room"
    )


def test_size_counts_pages_and_the_wal(store: Store) -> None:
    record(store, "r1", T0, n=20)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    page = store.db.execute("PRAGMA page_size").fetchone()[0]
    wal = os.path.getsize(store.path + "-wal")
    assert wal > 0 and size_bytes(store.db) == pages * page + wal


def test_maintain_refuses_to_run_inside_a_transaction(store: Store) -> None:
    with store.transaction(), pytest.raises(RuntimeError, match="outside a transaction"):
        maintain(store.db, T0, Retention())


def test_the_daemon_prunes_in_steps_and_exports_the_size(tmp_path: Path) -> None:
    """Daemon.keep_small: what the scheduler runs every `retention.every`."""
    import asyncio

    import httpx

    from tests.conftest import FakeClock
    from tests.test_alert_kinds import result
    from watchdog.config.load import load_config
    from watchdog.daemon import Daemon

    config = tmp_path / "config.yaml"
    config.write_text(
        "storage: {path: w.db, csv_dir: reports}\n"
        "endpoints:\n  - {name: e, api: openai-chat, base_url: http://e.test}\n"
    )
    cfg = load_config(config)
    store = Store.open(tmp_path / "w.db")
    store.record_run("old", [result("a"), result("b")], {})  # 2026-01-01: past raw_days
    clock = FakeClock()  # 2026-11-23

    async def go() -> Daemon:
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(500))
        ) as c:
            daemon = Daemon(cfg, c, store, clock)
            await daemon.keep_small()
            return daemon

    daemon = asyncio.run(go())
    assert store.db.execute("select count(*) from results").fetchone()[0] == 0
    assert store.db.execute("select count(*) from rollups").fetchone()[0] == 2
    assert daemon.metrics.db_bytes is not None and daemon.metrics.db_bytes > 0


def test_rollups_keep_the_times_of_their_first_and_last_result(store: Store) -> None:
    for i in range(10):
        record(store, f"r{i}", T0 + 900 + i * 600, n=3)
    maintain(store.db, T0 + 4 * HOUR, Retention())
    stored = store.results_since(T0)
    hours = stored.groupby(stored["started_ts"] // HOUR * HOUR)["started_at"]

    got = {r["hour_ts"]: (r["first_at"], r["last_at"]) for r in rows(store, "rollups")}

    assert got == {int(h): (g.iloc[0], g.iloc[-1]) for h, g in hours}
    assert got[int(T0)] == ("2026-11-02T00:15:00Z", "2026-11-02T00:55:02Z")


def test_migration_10_times_the_old_rollups_whose_results_are_all_kept(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    for i in range(12):
        record(store, f"r{i}", T0 + i * 600, n=2)
    maintain(store.db, T0 + 3 * HOUR, Retention())
    timed = {r["hour_ts"]: (r["first_at"], r["last_at"]) for r in rows(store, "rollups")}
    store.db.execute("delete from results where started_ts < ?", [T0 + HOUR])  # pruned
    for column in ("first_at", "last_at"):  # as schema 9 made them
        store.db.execute(f"alter table rollups drop column {column}")
    store.db.execute("PRAGMA user_version = 9")
    store.close()

    store = Store.open(tmp_path / "w.db")

    got = {r["hour_ts"]: (r["first_at"], r["last_at"]) for r in rows(store, "rollups")}
    assert got == {int(T0): (None, None), int(T0 + HOUR): timed[int(T0 + HOUR)]}
    assert timed[int(T0 + HOUR)] == ("2026-11-02T01:00:00Z", "2026-11-02T01:50:01Z")
    store.close()

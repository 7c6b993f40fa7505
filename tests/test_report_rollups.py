"""The reports from hourly rollups: the same figures as from raw results, pruned hours still counted,
late results not lost, and every query an index search over the window, not the file."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from watchdog.drift import baselines
from watchdog.drift.compare import DriftSettings
from watchdog.reports import tally
from watchdog.reports.daily import render_daily, write_daily
from watchdog.reports.health import COLUMNS, health, health_since
from watchdog.result import Answer, CheckOutcome, ErrorClass, ProbeResult
from watchdog.store import Store
from watchdog.store.retention import maintain
from watchdog.store.settings import Retention

HOUR, DAY = 3600.0, 86400.0
NOW = datetime(2026, 11, 10, 12, 20, tzinfo=UTC)  # 20 minutes into an hour
KEEP_ALL = Retention(raw_days=400)  # rolls up every settled hour and prunes nothing
DRIFT = DriftSettings()
# Figures that only raw results can give (rollups cannot make a month's percentile).
FROM_RAW = [
    "ttft_p50_s",
    "ttft_p95_s",
    "e2e_p50_s",
    "e2e_p95_s",
    "tokens_per_s_p50",
    "token_source",
    "last_trace_id",
    "last_failed_trace_id",
]
COUNTED = [c for c in COLUMNS if c not in FROM_RAW]


def probe(
    rng: random.Random, endpoint: str, golden_set: str, prompt_id: str, at: float, run: int
) -> ProbeResult:
    """A result with a bit of everything: passes, failed checks, timeouts, refused connections,
    three ways of counting tokens, and a trace for most."""
    roll = rng.random()
    error: ErrorClass | None = "timeout" if roll < 0.06 else "connect" if roll < 0.09 else None
    ttft = rng.lognormvariate(-2.5, 0.4)
    answer = Answer(
        text="Paris",
        status_code=None if error else 200,
        error_class=error,
        ttft_s=None if error else ttft,
        e2e_s=30.0 if error == "timeout" else None if error else ttft + rng.uniform(0.1, 2.0),
        output_tokens=None if error else rng.randint(3, 40),
        token_source=None if error else rng.choice(["usage", "usage", "estimate", "events"]),
    )
    return ProbeResult(
        endpoint=endpoint,
        prompt_id=prompt_id,
        golden_set=golden_set,
        golden_set_hash="h",
        started_at=datetime.fromtimestamp(at, UTC),
        stream=True,
        answer=answer,
        checks=[] if error else [CheckOutcome("contains", rng.random() > 0.2, "")],
        fingerprint=f"fp{run // 500}",  # the model changes now and then
        trace_id=None if rng.random() < 0.1 else f"{rng.getrandbits(128):032x}",
    )


def fill(
    store: Store, start: float, end: float, every_s: float = 600.0, seed: int = 4, name: str = "r"
) -> None:
    """Runs from `start` to `end`: two endpoints, two golden sets sharing a prompt id."""
    rng = random.Random(seed)
    pairs = {
        "vllm-a": [("default", ("capital", "arithmetic")), ("json", ("capital", "person"))],
        "llama-b": [("default", ("capital", "arithmetic"))],
    }
    run, at = 0, start
    while at < end:
        for endpoint, sets in pairs.items():
            for golden_set, prompts in sets:
                results = [
                    probe(rng, endpoint, golden_set, p, at + i * 1.5, run)
                    for i, p in enumerate(prompts)
                ]
                store.record_run(f"{name}{run}", results, {})
                run += 1
        at += every_s * rng.uniform(0.5, 1.5)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "w.db")
    yield s
    s.close()


def since(days: float) -> float:
    return NOW.timestamp() - days * DAY


def stored_per_hour(store: Store) -> dict[int, int]:
    sql = "select cast(started_ts / 3600 as integer) * 3600, count(*) from results group by 1"
    return dict(store.db.execute(sql).fetchall())


def drained(store: Store, settings: Retention) -> None:
    """Retention passes until nothing is left to do, as the daemon makes them."""
    while maintain(store.db, NOW.timestamp(), settings).more_to_do:
        pass


def test_the_health_report_from_rollups_equals_the_one_from_raw_results(store: Store) -> None:
    fill(store, since(9), NOW.timestamp())
    drained(store, KEEP_ALL)
    window = since(7) + 1234.5  # not on an hour: its first part hour is counted raw
    rolled = tally.rolled_hours(store.db, window, None, stored_per_hour(store))
    assert len(rolled) == 7 * 24 - 1  # every whole hour but the last, still settling

    from_rollups = health_since(store, window)

    assert len(from_rollups) == 6
    pd.testing.assert_frame_equal(from_rollups, health(store.results_since(window)))


def test_the_daily_report_from_rollups_equals_the_one_from_raw_results(
    store: Store, tmp_path: Path
) -> None:
    fill(store, since(2), NOW.timestamp(), every_s=120)
    drained(store, KEEP_ALL)
    out = write_daily(store, [], DRIFT, NOW, tmp_path / "daily.html")

    page = out.read_text(encoding="utf-8")

    assert page == render_daily(store.results_since(since(1)), [], [], NOW)
    assert page.count('<svg class="chart"') == 4 and "llama-b" in page


def test_pruned_hours_are_counted_from_their_rollups(store: Store) -> None:
    """Past raw_days the raw results are gone, but for the runs of a drift baseline. The report
    counts those hours from their rollups (before, it left them out: a "5 days" report counted
    2); its percentiles, token sources and trace ids are those of the results still stored."""
    fill(store, since(6), NOW.timestamp())
    window = since(5)
    old = [r["run_id"] for r in store.db.query(QUERY_RUNS, [since(4), since(3)])]
    baselines.create(store.db, "vllm-a", "default", old, "recorded", NOW)
    stored = store.results_since(window)
    # The window's first part hour is pruned, and its rollups hold the whole hour: it is left
    # out, rather than counting results from before the window.
    everything = health(store.results_since(math.ceil(window / HOUR) * HOUR))
    drained(store, Retention(raw_days=2))
    kept = store.results_since(window)
    pruned = kept[kept["started_ts"] < since(2) - HOUR]
    assert set(pruned["run_id"]) == set(old) and len(kept) < len(stored) / 2

    report = health_since(store, window)

    pd.testing.assert_frame_equal(report[COUNTED], everything[COUNTED])
    pd.testing.assert_frame_equal(report[FROM_RAW], health(kept)[FROM_RAW])
    assert (report["runs"] > health(kept)["runs"]).all()


QUERY_RUNS = "select distinct run_id from results where started_ts >= ? and started_ts < ? limit 3"


def test_a_result_stored_after_its_hour_was_rolled_up_is_counted(store: Store) -> None:
    fill(store, since(1), NOW.timestamp())
    drained(store, KEEP_ALL)
    late = probe(random.Random(1), "vllm-a", "default", "capital", since(0.5), 0)
    store.record_run("from-the-spool", [late], {})  # written when the disk had room again
    hour = int(since(0.5) // HOUR * HOUR)
    assert hour not in tally.rolled_hours(store.db, since(1), None, stored_per_hour(store))
    pd.testing.assert_frame_equal(
        health_since(store, since(1)), health(store.results_since(since(1)))
    )


def test_the_daily_report_counts_pruned_hours_from_rollups(store: Store, tmp_path: Path) -> None:
    fill(store, since(1.5), NOW.timestamp(), every_s=300)
    runs = len(store.results_since(math.ceil(since(1) / HOUR) * HOUR))  # as pruned_hours' test
    drained(store, Retention(raw_days=0.25))  # six hours
    assert len(store.results_since(since(1))) < runs / 3

    page = write_daily(store, [], DRIFT, NOW, tmp_path / "d.html").read_text()

    assert f"{runs} run(s)" in page


def test_rollups_from_before_schema_10_say_the_first_run_they_still_know(store: Store) -> None:
    fill(store, since(3), NOW.timestamp())
    drained(store, Retention(raw_days=1))
    everything = health_since(store, since(3))
    kept = store.results_since(since(3))
    # Schema 9 kept no times; migration 10 gives them to the hours whose results are all kept.
    store.db.execute(
        "update rollups set first_at = null, last_at = null where hour_ts < ?",
        [kept["started_ts"].min() // HOUR * HOUR],
    )

    report = health_since(store, since(3))

    assert (report["first_run"] > everything["first_run"]).all()
    assert report["first_run"].tolist() == health(kept)["first_run"].tolist()
    others = [c for c in COLUMNS if c != "first_run"]
    pd.testing.assert_frame_equal(report[others], everything[others])


def test_an_empty_window_is_an_empty_report(store: Store, tmp_path: Path) -> None:
    fill(store, since(3), since(2))
    drained(store, Retention(raw_days=1))
    assert list(health_since(store, since(1)).columns) == COLUMNS
    assert health_since(store, since(1)).empty
    page = write_daily(store, [], DRIFT, NOW, tmp_path / "d.html").read_text()
    assert "Nothing yet" in page


# The evidence that a report's time follows its window, not the file.


def plans(store: Store, run: Any) -> dict[str, str]:
    """Every select on results or rollups that `run` makes, with its query plan."""
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        run()
    finally:
        store.db.conn.set_trace_callback(None)
    reads = {
        s
        for s in statements
        if s.lstrip().lower().startswith("select") and ("results" in s or "rollups" in s)
    }
    return {
        sql: " / ".join(row[3] for row in store.db.conn.execute("explain query plan " + sql))
        for sql in reads
    }


def test_the_reports_search_indexes_over_the_window(store: Store, tmp_path: Path) -> None:
    fill(store, since(3), NOW.timestamp())
    drained(store, KEEP_ALL)

    seen = plans(store, lambda: health_since(store, since(2)))
    seen |= plans(store, lambda: write_daily(store, [], DRIFT, NOW, tmp_path / "d.html"))

    for sql, plan in seen.items():
        assert "SCAN" not in plan, (sql, plan)
    assert set(seen.values()) == {
        "SEARCH results USING INDEX idx_results_started_ts (started_ts>?)",  # health: from on
        "SEARCH results USING INDEX idx_results_started_ts (started_ts>? AND started_ts<?)",
        "SEARCH rollups USING INDEX idx_rollups_hour_ts (hour_ts>? AND hour_ts<?)",
    }
    assert len(seen) == 6  # per report: its hours' rollup sums, its rollups, its raw results


def test_older_history_adds_no_work(tmp_path: Path) -> None:
    """Ten times the history before the window leaves the report's work as it was: counted in
    SQLite's virtual machine steps, which do not depend on the machine's load."""

    def steps(store: Store) -> int:
        ticks = [0]

        def tick() -> int:
            ticks[0] += 1
            return 0

        store.db.conn.set_progress_handler(tick, 100)
        try:
            health_since(store, since(2))
            write_daily(store, [], DRIFT, NOW, tmp_path / "d.html")
        finally:
            store.db.conn.set_progress_handler(None, 100)
        return ticks[0]

    short, long = Store.open(tmp_path / "short.db"), Store.open(tmp_path / "long.db")
    fill(short, since(3), NOW.timestamp())
    fill(long, since(33), since(3), seed=5, name="old")
    fill(long, since(3), NOW.timestamp())
    for s in (short, long):
        drained(s, KEEP_ALL)
    assert len(long.results_since(0)) > 10 * len(short.results_since(since(2)))

    assert steps(long) <= steps(short) * 1.05
    short.close()
    long.close()

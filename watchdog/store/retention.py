"""Retention: hourly rollups of results, pruning past the configured ages, and incremental vacuum.

`maintain` is called by the daemon every `retention.every` seconds, from the event loop, on the
connection the probes write through. Each call does bounded work (`Limits`) and says in
`Summary.more_to_do` whether it should be called again soon: the first pass over a large, old
database takes many calls, and none of them holds the loop or the write lock for long. One
exception, once: a file made before schema 6 is rebuilt by a full VACUUM (to turn on incremental
vacuum) at the end of its first complete pass, when it holds only raw_days of results.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlite_utils import Database

from watchdog.store.settings import Retention

HOUR_S = 3600
DAY_S = 86400
KEYS = ["endpoint", "golden_set", "prompt_id", "hour_ts"]
WATERMARK = "rolled_until_ts"  # retention_state key: every hour before it is rolled up
INCREMENTAL = 2  # PRAGMA auto_vacuum
UNIX_EPOCH_JD = 2440587.5  # julianday('1970-01-01'): outbox times are text
# Runs that drift compares every new run with: their results outlive raw_days.
PROTECTED_RUNS = (
    "select r.run_id from baseline_runs r join baselines b on b.id = r.baseline_id "
    "where b.active = 1 or b.pinned = 1"
)
# Outbox rows that are done with; "pending" and "sending" ones are never pruned.
FINISHED_PAGES = ("sent", "suppressed", "failed")
# A still-open incident's pages stay, so that its reminders and "resolved" thread under its page.
OPEN_INCIDENTS = "select incident from alerts where state != 'ok' and incident is not null"


@dataclass(frozen=True)
class Limits:
    """How much one `maintain` call may do."""

    # Sized so that a call takes about 0.1 s, 0.25 s at worst, on a 2-core VM (bench/storage.py):
    # it runs on the event loop, and a probe in flight meanwhile would count the wait as latency.
    batch_rows: int = 5_000  # rows per DELETE statement: each its own short write transaction
    max_batches: int = 4  # full DELETE batches per call, over all tables
    rollup_rows: int = 5_000  # results read per call for rollups (whole hours, at least one)
    vacuum_pages: int = 1024  # pages per incremental_vacuum step (4 MiB at 4 KiB pages)
    max_vacuum_steps: int = 4
    # An hour is complete this long after it ends: a run's results are stored when the run ends.
    settle_s: float = 900.0


@dataclass
class Summary:
    """What one `maintain` call did, and whether the database is too large."""

    path: str
    max_db_bytes: int
    raw_days: float
    hours_rolled: int = 0
    deleted: dict[str, int] = field(default_factory=dict)  # table: rows
    pages_freed: int = 0
    size_before: int = 0
    size_after: int = 0
    rebuilt: bool = False  # the one-time VACUUM that turned on incremental vacuum
    vacuum_error: str | None = None  # why that VACUUM failed this time (it is retried)
    more_to_do: bool = False  # call again soon: a limit was reached

    @property
    def over_limit(self) -> bool:
        return self.size_after > self.max_db_bytes

    @property
    def warning(self) -> str | None:
        if not self.over_limit:
            return None
        return size_warning(self.path, self.size_after, self.max_db_bytes, self.raw_days)


def size_warning(path: str, size: int, limit: int, raw_days: float) -> str:
    return (
        f"{path}: the database is {_bytes(size)}, over retention.max_db_bytes ({_bytes(limit)}). "
        f"Every result is kept for retention.raw_days ({raw_days:g} days) and hourly rollups after "
        "that; lower retention.raw_days to shrink it (pages are given back within a few "
        "retention passes), or raise max_db_bytes if the disk has room"
    )


def _bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB ({n:,} bytes)" if n >= 1e8 else f"{n / 1e6:.1f} MB ({n:,} bytes)"


def size_bytes(db: Database) -> int:
    """The database's size on disk: its pages, free ones included, plus the WAL file."""
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    size = pages * int(db.execute("PRAGMA page_size").fetchone()[0])
    path = db_path(db)
    if path:
        with contextlib.suppress(OSError):  # no WAL file right now
            size += os.path.getsize(path + "-wal")
    return size


def db_path(db: Database) -> str:
    """The main database file ("" in memory)."""
    return next(str(r[2] or "") for r in db.execute("PRAGMA database_list") if r[1] == "main")


def maintain(
    db: Database, now_ts: float, settings: Retention, limits: Limits = Limits()
) -> Summary:
    """One bounded retention pass: roll up complete hours, prune, give pages back, measure."""
    if db.conn.in_transaction:
        raise RuntimeError("retention.maintain must run outside a transaction")
    summary = Summary(db_path(db), settings.max_db_bytes, settings.raw_days)
    summary.size_before = size_bytes(db)
    summary.hours_rolled, rolling, rolled_until = _roll_pending(db, now_ts, limits)
    budget = [limits.max_batches]
    # Whole hours, and never one that is not rolled up yet.
    raw_cutoff = min(_hour(now_ts - settings.raw_days * DAY_S), rolled_until)
    keep = f"run_id not in ({PROTECTED_RUNS})"
    plan: list[tuple[str, str, list[Any]]] = [
        ("results", f"started_ts < ? and {keep}", [raw_cutoff]),
        ("readiness", f"started_ts < ? and {keep}", [raw_cutoff]),
        ("server_load", f"at_ts < ? and {keep}", [raw_cutoff]),
        ("run_energy", f"started_ts < ? and {keep}", [raw_cutoff]),
        ("rollups", "hour_ts <= ?", [_hour(now_ts - settings.rollup_days * DAY_S) - HOUR_S]),
        (
            "outbox",
            f"status in ({','.join('?' * len(FINISHED_PAGES))}) and julianday(created_at) < ? "
            f"and incident not in ({OPEN_INCIDENTS})",
            [*FINISHED_PAGES, (now_ts - settings.raw_days * DAY_S) / DAY_S + UNIX_EPOCH_JD],
        ),
    ]
    pruning = False
    for table, where, params in plan:
        summary.deleted[table], done = _prune(db, table, where, params, limits.batch_rows, budget)
        pruning = pruning or not done
    vacuuming = _vacuum(db, summary, limits, finished=not (rolling or pruning))
    if sum(summary.deleted.values()) or summary.pages_freed:
        _truncate_wal(db)
    summary.size_after = size_bytes(db)
    summary.more_to_do = rolling or pruning or vacuuming
    return summary


def roll_up(db: Database, start_ts: float, end_ts: float) -> int:
    """(Re)compute the rollups of the hours in [start_ts, end_ts) from the stored results and
    upsert them; running it again gives the same rows. Meant for hours whose raw results are all
    still stored (past raw_days only the baseline runs' are). Returns the rows written."""
    frame = pd.read_sql_query(
        "select endpoint, golden_set, prompt_id, run_id, started_ts, started_at, ok, error_class, "
        "ttft_s, e2e_s, tokens_per_s, output_tokens, token_source, checks_passed, checks_total, "
        "cold from results "
        "where started_ts >= ? and started_ts < ? order by started_ts",
        db.conn,
        params=(start_ts, end_ts),
    )
    rows = rollup_rows(frame)
    if rows:
        columns = list(rows[0])
        update = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in KEYS)
        sql = (
            f"insert into rollups ({', '.join(columns)}) "
            f"values ({', '.join(':' + c for c in columns)}) "
            f"on conflict ({', '.join(KEYS)}) do update set {update}"
        )
        with db.atomic():
            db.conn.executemany(sql, rows)
    return len(rows)


def rollup_rows(results: pd.DataFrame) -> list[dict[str, Any]]:
    """One rollup row per endpoint × golden set × prompt × hour of these results (oldest first:
    each row keeps the started_at of its hour's first and last result)."""
    if results.empty:
        return []
    classes = results["error_class"]
    answered = classes.isna() | (classes == "check_failed")
    frame = results.assign(
        hour_ts=(results["started_ts"] // HOUR_S * HOUR_S).astype("int64"),
        answered=answered.astype(int),
        # Latency of answered results only, as in the health report: a timeout's e2e is the
        # deadline, not the model.
        ttft_s=results["ttft_s"].where(answered),
        e2e_s=results["e2e_s"].where(answered),
        cold=results["cold"].fillna(0),
        # Tokens only: Triton's streamed events are not.
        output_tokens=results["output_tokens"].where(results["token_source"] != "events"),
    )
    groups = frame.groupby(KEYS, sort=True, dropna=False)
    table = groups.agg(
        answers=("run_id", "size"),
        runs=("run_id", "nunique"),
        ok=("ok", "sum"),
        answered=("answered", "sum"),
        tokens_per_s_mean=("tokens_per_s", "mean"),
        output_tokens=("output_tokens", "sum"),
        checks_passed=("checks_passed", "sum"),
        checks_total=("checks_total", "sum"),
        cold=("cold", "sum"),
        # In time order (roll_up reads them so): the report's first_run and last_run.
        first_at=("started_at", "first"),
        last_at=("started_at", "last"),
    )
    for column in ("ttft_s", "e2e_s"):
        for pct in (50, 95):
            table[f"{column[:-2]}_p{pct}_s"] = groups[column].quantile(pct / 100)
    errors: dict[tuple[Any, ...], dict[str, int]] = {}
    failed = frame[classes.notna()]
    for index, n in failed.groupby([*KEYS, "error_class"]).size().items():
        assert isinstance(index, tuple)
        errors.setdefault(index[:-1], {})[str(index[-1])] = int(n)
    rows = []
    for key, r in table.iterrows():
        assert isinstance(key, tuple)
        row: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        row["hour_ts"] = int(row["hour_ts"])
        row["errors"] = json.dumps(errors.get(key, {}), sort_keys=True)
        for name, value in r.items():
            row[str(name)] = _plain(name, value)
        rows.append(row)
    return rows


def _plain(name: object, value: Any) -> str | float | int | None:
    """A value sqlite3 can bind: NaN (nothing to average) is NULL; counts are ints."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if str(name).endswith("_s") or name == "tokens_per_s_mean":
        return float(value)
    return int(value)


def _roll_pending(db: Database, now_ts: float, limits: Limits) -> tuple[int, bool, float]:
    """Roll up complete hours past the watermark, about limits.rollup_rows results' worth.
    Returns the hours rolled up, whether complete hours are left, and the new watermark."""
    complete_before = _hour(now_ts - limits.settle_s)
    start = watermark(db)
    if start is None:  # first pass: from the oldest result on
        (first,) = db.execute("select min(started_ts) from results").fetchone()
        start = complete_before if first is None else _hour(first)
    (first,) = db.execute(
        "select min(started_ts) from results where started_ts >= ? and started_ts < ?",
        [start, complete_before],
    ).fetchone()
    if first is None:  # nothing to roll up: jump over hours without results
        _set_watermark(db, max(start, complete_before))
        return 0, False, max(start, complete_before)
    lo = _hour(first)
    beyond = db.execute(  # the first result past the next rollup_rows, through the index
        "select started_ts from results where started_ts >= ? order by started_ts limit 1 offset ?",
        [lo, limits.rollup_rows],
    ).fetchone()
    hi = complete_before if beyond is None else max(lo + HOUR_S, _hour(beyond[0]))
    hi = min(hi, complete_before)
    with db.atomic():
        roll_up(db, lo, hi)
        _set_watermark(db, hi)
    (hours,) = db.execute(
        "select count(distinct hour_ts) from rollups where hour_ts >= ? and hour_ts < ?", [lo, hi]
    ).fetchone()
    more = db.execute(
        "select 1 from results where started_ts >= ? and started_ts < ? limit 1",
        [hi, complete_before],
    ).fetchone()
    return int(hours), more is not None, hi


def _prune(
    db: Database, table: str, where: str, params: list[Any], batch: int, budget: list[int]
) -> tuple[int, bool]:
    """Delete matching rows, `batch` per statement, while the shared budget of full batches
    lasts (a last, partial batch is free: every table gets looked at in every call).
    Returns the rows deleted and whether none are left."""
    deleted = 0
    while True:
        n = db.execute(
            f"delete from [{table}] where rowid in "
            f"(select rowid from [{table}] where {where} limit ?)",
            [*params, batch],
        ).rowcount
        deleted += n
        if n < batch:
            return deleted, True
        budget[0] -= 1
        if budget[0] <= 0:
            return deleted, False


def _vacuum(db: Database, summary: Summary, limits: Limits, finished: bool) -> bool:
    """Give free pages back to the file system; returns whether some are left for next time."""
    mode = int(db.execute("PRAGMA auto_vacuum").fetchone()[0])
    free = _pragma(db, "freelist_count")
    if mode == INCREMENTAL:
        for _ in range(limits.max_vacuum_steps):
            if not free:
                break
            # executescript steps the pragma to its end; execute() would free one page only.
            db.conn.executescript(f"PRAGMA incremental_vacuum({limits.vacuum_pages});")
            left = _pragma(db, "freelist_count")
            summary.pages_freed += free - left
            free = left
        return free > 0
    if mode == 0 and finished and free:
        # A file made before schema 6: rebuild it once with incremental vacuum on. After the
        # first complete prune it holds only raw_days of results, so this is as cheap as it gets.
        pages = _pragma(db, "page_count")
        try:
            db.conn.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
        except sqlite3.OperationalError as exc:  # busy, or no room for the copy: next pass
            summary.vacuum_error = f"{summary.path}: VACUUM to enable incremental vacuum: {exc}"
            return False
        summary.rebuilt = True
        summary.pages_freed += pages - _pragma(db, "page_count")
    return False


def _truncate_wal(db: Database) -> None:
    """Checkpoint and cut the WAL back to nothing, without waiting: a busy reader elsewhere
    (a CLI report) just leaves it for the next pass."""
    (timeout,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(timeout)}")


def _pragma(db: Database, name: str) -> int:
    return int(db.execute(f"PRAGMA {name}").fetchone()[0])


def _hour(ts: float) -> int:
    return math.floor(ts / HOUR_S) * HOUR_S


def watermark(db: Database) -> float | None:
    """The end of the last hour rolled up: every hour before it is (None: none yet)."""
    row = db.execute("select value from retention_state where key = ?", [WATERMARK]).fetchone()
    return None if row is None else float(row[0])


def _set_watermark(db: Database, ts: float) -> None:
    db.execute(
        "insert into retention_state (key, value) values (?, ?) "
        "on conflict (key) do update set value = excluded.value",
        [WATERMARK, ts],
    )

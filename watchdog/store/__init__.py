"""SQLite storage through sqlite-utils: WAL, numbered migrations, atomic probe runs."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sqlite_utils import Database

from watchdog.result import ProbeResult, fingerprint_parts
from watchdog.store.migrations import MIGRATIONS


class StoreError(Exception):
    """The database cannot be opened or written; the message names the file."""


@dataclass(frozen=True)
class Held:
    """A table that can live in memory while the database file cannot be written: its unique
    key, and which of its rows to take along."""

    table: str
    key: tuple[str, ...]
    rows: str = "true"  # an SQL condition


class Store:
    def __init__(self, db: Database, path: str):
        self.db = db
        self.path = path
        # While `transaction` holds the outermost transaction: who waits to hear whether it
        # committed (`when_settled`).
        self.waiting: list[Callable[[bool], None]] | None = None

    @classmethod
    def open(cls, path: str | Path) -> Store:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = Database(path)
            db.execute("PRAGMA busy_timeout = 5000")
            # Lets retention.py give pruned pages back to the file system. It only takes on a new,
            # empty file (before WAL mode writes the header); an existing file ignores it, and
            # retention.maintain() converts that one once with a VACUUM.
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.enable_wal()
            db.execute("PRAGMA synchronous = NORMAL")  # durable in WAL at commit boundaries
            db.execute("PRAGMA temp_store = MEMORY")  # see hold_in_memory: not on a full disk
            store = cls(db, str(path))
            store.migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None
        return store

    @classmethod
    def reading(cls, path: str | Path) -> Store:
        """A read-only connection to an existing database, for reports built beside a daemon
        that keeps writing it (WAL lets them run side by side)."""
        try:
            connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("select 1 from results limit 1")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database to read: {exc}") from None
        return cls(Database(connection), str(path))

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: schema version {current} is newer than this mlops-watchdog "
                f"knows ({len(MIGRATIONS)}); upgrade mlops-watchdog"
            )
        for number, step in enumerate(MIGRATIONS[current:], start=current + 1):
            with self.db.atomic():
                step(self.db)
                self.db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """One atomic write; nested calls become savepoints. Errors name the database file."""
        outermost = self.waiting is None and not self.db.conn.in_transaction
        if outermost:
            self.waiting = []
        committed = False
        try:
            with self.db.atomic():
                yield self.db
            committed = True
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot write: {exc}") from None
        finally:
            if outermost:
                waiting, self.waiting = self.waiting or [], None
                for tell in waiting:
                    tell(committed)

    def settles(self) -> bool:
        """Whether a `transaction` of this store is open, so that `when_settled` can be told."""
        return self.waiting is not None

    def when_settled(self, tell: Callable[[bool], None]) -> None:
        """Inside `transaction`: `tell(True)` once the outermost transaction has committed,
        `tell(False)` once it has rolled back. For memory kept beside the database, which may
        take in what a transaction wrote only once it is there."""
        if self.waiting is None:
            raise RuntimeError("when_settled outside a transaction of the store")
        self.waiting.append(tell)

    @contextmanager
    def within(self) -> Iterator[Database]:
        """The caller's transaction when one is open, else one of its own. Unlike a nested
        `transaction`, no savepoint: for work whose failure fails the caller's whole
        transaction anyway, a savepoint's two statements at every probe run buy nothing."""
        if self.db.conn.in_transaction:
            yield self.db
        else:
            with self.transaction():
                yield self.db

    def hold_in_memory(self, tables: Iterable[Held]) -> None:
        """Copies of these tables in memory, which every statement of this connection then reads
        and writes instead: SQLite resolves a table name in the `temp` schema first. While the
        file cannot be written, alert state and pages live on there; `write_back` puts them
        back. Reading the file needs no space."""
        for held in tables:
            if self.holding(held.table):
                continue
            ddl = [
                r["sql"]
                for r in self.db.query(
                    "select sql from main.sqlite_master where tbl_name = ? and sql is not null "
                    "order by type desc",  # the table before its indexes
                    [held.table],
                )
            ]
            self.db.execute(ddl[0].replace("CREATE TABLE ", "CREATE TEMP TABLE ", 1))
            for index in ddl[1:]:
                self.db.execute(index.replace('INDEX "', 'INDEX temp."', 1))
            self.db.execute(
                f"insert into temp.[{held.table}] select * from main.[{held.table}] "
                f"where {held.rows}"
            )

    def holding(self, table: str) -> bool:
        row = self.db.execute(
            "select 1 from temp.sqlite_master where type = 'table' and name = ?", [table]
        ).fetchone()
        return row is not None

    def write_back(self, tables: Iterable[Held]) -> None:
        """Inside a transaction: what the tables held in memory became, into the file (by
        their unique key, new rows in their order), and the copies dropped."""
        for held in tables:
            if not self.holding(held.table):
                continue
            every = self.db[held.table].columns
            # A row id of its own (the outbox's `id`) is the file's to give.
            columns = [c.name for c in every if not c.is_pk or c.name in held.key]
            names = ", ".join(f"[{c}]" for c in columns)
            keys = ", ".join(f"[{c}]" for c in held.key)
            updates = ", ".join(f"[{c}] = excluded.[{c}]" for c in columns if c not in held.key)
            self.db.execute(
                f"insert into main.[{held.table}] ({names}) select {names} "
                f"from temp.[{held.table}] where true order by rowid "
                f"on conflict ({keys}) do update set {updates}"
            )
            self.db.execute(f"drop table temp.[{held.table}]")

    def record_run(
        self,
        run_id: str,
        results: Iterable[ProbeResult],
        identity: dict[str, Any],
        tiers: Iterable[dict[str, Any]] = (),  # readiness.TierOutcome.to_json()
        load: dict[str, Any] | None = None,
    ) -> None:
        """Store one probe run atomically: results, fingerprints, readiness tiers, engine load."""
        results = list(results)
        rows = [_row(run_id, r) for r in results]
        if not rows:
            return
        endpoint, started_ts = rows[0]["endpoint"], rows[0]["started_ts"]
        # Each fingerprint with everything it hashed (the answer's system fingerprint and the
        # golden set's hash too), at its first answer in the run.
        seen = {
            row["fingerprint"]: (row["started_at"], r)
            for row, r in reversed(list(zip(rows, results, strict=True)))
        }
        with self.within():
            for fingerprint, (at, r) in seen.items():
                self._seen(endpoint, fingerprint, at, identity, r)
            self._insert("results", rows)
            self._insert(
                "readiness",
                [
                    {"run_id": run_id, "endpoint": endpoint, "started_ts": started_ts, **t}
                    for t in tiers
                ],
            )
            if load is not None:
                self._insert(
                    "server_load", [{"run_id": run_id, "endpoint": endpoint, **load}], "or replace"
                )

    def _insert(self, table: str, rows: list[dict[str, Any]], conflict: str = "") -> None:
        """Rows of one shape, as one prepared statement: sqlite-utils' insert_all reads the
        table's columns at every call, which cost more than the insert at 100 probes/s."""
        if not rows:
            return
        columns = list(rows[0])
        self.db.conn.executemany(
            f"insert {conflict} into [{table}] ({', '.join(f'[{c}]' for c in columns)}) "
            f"values ({', '.join('?' * len(columns))})",
            [[row[c] for c in columns] for row in rows],
        )

    def _seen(
        self, endpoint: str, fingerprint: str, at: str, identity: dict[str, Any], r: ProbeResult
    ) -> None:
        """The fingerprint seen again at `at`; new, with the parts it hashed."""
        seen_before = self.db.execute(
            "update fingerprints set last_seen = ? where endpoint = ? and fingerprint = ?",
            [at, endpoint, fingerprint],
        ).rowcount
        if not seen_before:
            parts = fingerprint_parts(identity, r.answer.system_fingerprint, r.golden_set_hash)
            self.db.execute(
                "insert into fingerprints (endpoint, fingerprint, first_seen, last_seen, "
                "components) values (?, ?, ?, ?, ?)",
                [endpoint, fingerprint, at, at, json.dumps(parts, sort_keys=True)],
            )

    def last_run_unanswered(self, endpoint: str) -> bool:
        """Whether the endpoint's last stored run got no answer at all (it was down)."""
        last = endmost_result(self.db, endpoint, "run_id")
        if last is None:
            return False
        row = next(
            self.db.query(
                "select sum(error_class is null or error_class = 'check_failed') as answered "
                "from results where run_id = ?",
                [last["run_id"]],
            )
        )
        return not row["answered"]

    def results_since(self, since_ts: float, columns: Sequence[str] = ("*",)) -> pd.DataFrame:
        """The results from `since_ts` on, oldest first: every column, or only `columns` (a
        report over a month reads 200,000 rows; the answers' text and checks are most of them)."""
        return pd.read_sql_query(
            f"select {', '.join(columns)} from results where started_ts >= ? order by started_ts",
            self.db.conn,
            params=(since_ts,),
        )

    def close(self) -> None:
        self.db.close()


def endmost_result(
    db: Database, endpoint: str, columns: str, newest: bool = True
) -> dict[str, Any] | None:
    """`columns` of the endpoint's newest (or first) stored result: its golden sets found one
    at a time, and each one's newest (or first) result, through the index on (endpoint,
    golden_set, started_ts). Ordering all of an endpoint's results by time read and sorted
    every one of them: 0.9 s for a million, at each call of a router's readiness check."""
    order = "desc" if newest else "asc"
    return next(
        db.query(
            "with recursive sets(golden_set) as ("
            "select (select min(golden_set) from results where endpoint = :endpoint) "
            "union all select (select min(golden_set) from results where endpoint = :endpoint "
            "and golden_set > sets.golden_set) from sets where sets.golden_set is not null) "
            f"select {columns} from sets join results on results.id = (select id from results "
            "where endpoint = :endpoint and golden_set = sets.golden_set "
            f"order by started_ts {order} limit 1) order by results.started_ts {order} limit 1",
            {"endpoint": endpoint},
        ),
        None,
    )


def _row(run_id: str, r: ProbeResult) -> dict[str, Any]:
    j = r.to_json()
    timings = r.answer.server_timings
    return {
        "run_id": run_id,
        "endpoint": r.endpoint,
        "prompt_id": r.prompt_id,
        "golden_set": r.golden_set,
        "golden_set_hash": r.golden_set_hash,
        "started_at": j["started_at"],
        "started_ts": r.started_at.timestamp(),
        "stream": int(r.stream),
        "ok": int(r.ok),
        **{
            k: j[k]
            for k in (
                "error_class",
                "error_detail",
                "status_code",
                "ttfb_s",
                "ttft_s",
                "ttft_reasoning_s",
                "e2e_s",
                "itl_p50_s",
                "itl_p95_s",
                "itl_max_s",
                "tpot_s",
                "tokens_per_s",
                "output_tokens",
                "token_source",
                "finish_reason",
                "model",
                "fingerprint",
                "response_excerpt",
                "response_sha256",
                "trace_id",
                "span_id",
            )
        },
        "cold": int(r.cold),
        "cold_reason": r.cold_reason,
        "checks": json.dumps(j["checks"]),
        "checks_passed": sum(c.ok for c in r.checks),
        "checks_total": len(r.checks),
        "server_timings": json.dumps(timings) if timings else None,
        "output_profile": json.dumps(r.output_profile) if r.output_profile is not None else None,
    }

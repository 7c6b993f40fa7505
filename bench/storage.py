"""Storage: insert rate, bytes per result, report and retention times, and the size per endpoint-year.

Fills a fresh database with N results shaped like the default golden set's runs (5 prompts a run,
one run every 60 s, real checks, excerpts and output profiles, 3 readiness tiers and an engine
load row per run, 2% timeouts) through `Store.record_run`, one transaction per run as the daemon
does. The anchor is a bare sqlite3 `executemany` of the same result rows into the same `results`
table and indexes, timed in the same process. Then it times the 30-day CSV report (and, as
before, the same report reading every column of every result) and the daily HTML report of the
last 24 h, drains `retention.maintain` under the default retention (the first pass after an
upgrade), times one steady-state hourly pass, times both reports again (14 days of results,
hourly rollups before them: what the daemon sees), and measures the database that is left: 14
days of results and up to 400 days of hourly rollups, the size one endpoint settles at. The
figures go to bench/results/storage.json (bench/results.py), with how many results the file
held: a --quick run says 250,000.

    .venv/bin/python -m bench.storage [--results 10000000] [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import results
from bench.figures import caption
from watchdog.config.load import SHIPPED_GOLDEN_SETS
from watchdog.drift.compare import DriftSettings, profile
from watchdog.golden.sets import load_golden_set
from watchdog.probers.server_metrics import parse
from watchdog.reports import health as report
from watchdog.reports import tally
from watchdog.reports.daily import write_daily
from watchdog.result import Answer, ProbeResult, TierOutcome
from watchdog.runner import fingerprint, shape_response
from watchdog.store import Store, _row, retention
from watchdog.store.retention import Summary
from watchdog.store.settings import Retention

PROMPTS_PER_RUN = 5
EVERY_S = 60.0  # the default schedule
RAW_DAYS, ROLLUP_DAYS = Retention().raw_days, Retention().rollup_days
ANCHOR_ROWS = 1_000_000  # the anchor takes the first rows only: bytes per row settle long before
END = datetime(2027, 1, 1, tzinfo=UTC).timestamp()  # the last run starts just before this
AFTER = END + 4 * 3600  # after the first retention pass, one more hour of runs, three passes
FULL_RUN = 10_000_000  # results: what issue 22's "< 2 s over 10M results" asks about
# What SmolLM2-sized models answer to the default set: about 60 characters, some failing checks.
ANSWERS = {
    "capital-france": "The capital of France is Paris, which is also its largest city.",
    "arithmetic": "2 + 2 = 4. The answer is 4, the sum of two and two together.",
    "person-json": '{"name": "Alice", "age": 30, "city": "unknown", "active": true}',
    "repeat-word": "hello! You said hello, so I am repeating it back: hello",
    "one-word-answer": "Blue. On a clear day the sky looks blue to our eyes.",
}
MODEL = "SmolLM2-135M-Instruct"
IDENTITY = {"model_ids": [MODEL], "build": "b4500-1a2b3c4", "n_ctx": 2048}
FIXTURE = Path(__file__).parent.parent / "tests" / "fixtures" / "server_metrics" / "llamacpp.txt"


class Shape:
    """Everything about a run that does not change between runs, computed once."""

    def __init__(self) -> None:
        golden = load_golden_set(SHIPPED_GOLDEN_SETS / "default.yaml")
        self.golden = golden
        self.fingerprint = fingerprint(IDENTITY, None, golden.hash)
        self.prompts = []
        for prompt in golden.prompts:
            text = ANSWERS[prompt.id]
            excerpt, digest = shape_response(text, "excerpt", 200)
            answer = Answer(text=text, status_code=200)
            outcomes = [check(answer) for check in prompt.checks]
            self.prompts.append((prompt.id, text, excerpt, digest, outcomes, profile(text)))
        self.load = {
            "ok": 1,
            "load": json.dumps(parse(FIXTURE.read_text()).to_json()),
            "detail": None,
        }

    def run(self, at: float, rng: random.Random) -> tuple[list[ProbeResult], list[dict[str, Any]]]:
        batch = []
        for i, (prompt_id, text, excerpt, digest, outcomes, output) in enumerate(self.prompts):
            started = datetime.fromtimestamp(at + i * 0.8, UTC)
            if rng.random() < 0.02:
                answer = Answer(error_class="timeout", error_detail="read timeout after 60s")
                answer.e2e_s = 60.0
                batch.append(self._result(prompt_id, started, answer, [], None, None, None))
                continue
            tokens = rng.randint(12, 20)
            ttft = rng.lognormvariate(math.log(0.03), 0.3)
            itl = [rng.lognormvariate(math.log(0.012), 0.2) for _ in range(tokens - 1)]
            answer = Answer(
                text=text,
                status_code=200,
                ttfb_s=ttft * 0.9,
                ttft_s=ttft,
                e2e_s=ttft + sum(itl),
                itl_s=itl,
                output_tokens=tokens,
                token_source="usage",
                finish_reason="stop",
                model=MODEL,
                server_timings={
                    "prompt_n": 31.0,
                    "prompt_ms": ttft * 800,
                    "prompt_per_token_ms": ttft * 800 / 31,
                    "prompt_per_second": 31 / ttft / 0.8,
                    "predicted_n": float(tokens),
                    "predicted_ms": sum(itl) * 1000,
                    "predicted_per_token_ms": sum(itl) * 1000 / tokens,
                    "predicted_per_second": tokens / sum(itl),
                },
            )
            batch.append(
                self._result(prompt_id, started, answer, outcomes, excerpt, digest, output)
            )
        answered = [r for r in batch if r.answer.error_class is None]
        tiers = [
            TierOutcome("liveness", True, "GET /health: HTTP 200 in 0.002s", "/health", 200, 0.002),
            TierOutcome(
                "readiness", True, "GET /v1/models: HTTP 200 in 0.003s", "/v1/models", 200, 0.003
            ),
            TierOutcome(
                "completion",
                bool(answered),
                f"{len(answered)}/{len(batch)} golden prompts answered",
                None,
                200,
                answered[0].answer.e2e_s if answered else None,
            ),
        ]
        return batch, [t.to_json() for t in tiers]

    def _result(
        self,
        prompt_id: str,
        started: datetime,
        answer: Answer,
        outcomes: list[Any],
        excerpt: str | None,
        digest: str | None,
        output: dict[str, int] | None,
    ) -> ProbeResult:
        return ProbeResult(
            endpoint="bench",
            prompt_id=prompt_id,
            golden_set=self.golden.name,
            golden_set_hash=self.golden.hash,
            started_at=started,
            stream=True,
            answer=answer,
            checks=outcomes,
            fingerprint=self.fingerprint,
            response_excerpt=excerpt,
            response_sha256=digest,
            output_profile=output,
        )


class Anchor:
    """The same result rows, written by bare sqlite3 executemany, 10,000 rows a transaction."""

    def __init__(self, path: Path, store: Store, limit: int):
        self.conn = sqlite3.connect(path)
        self.path, self.limit, self.rows, self.seconds = path, limit, 0, 0.0
        for (sql,) in store.db.execute(
            "select sql from sqlite_master where tbl_name = 'results' and sql is not null"
        ):
            self.conn.execute(sql)
        self.columns = [r[1] for r in store.db.execute("PRAGMA table_info(results)")][1:]
        self.sql = (
            f"insert into results ({', '.join(self.columns)}) "
            f"values ({', '.join(':' + c for c in self.columns)})"
        )
        self.pending: list[dict[str, Any]] = []

    def add(self, run_id: str, batch: list[ProbeResult]) -> None:
        if self.rows + len(self.pending) >= self.limit:
            return
        self.pending += [_row(run_id, r) for r in batch]
        if len(self.pending) >= 10_000:
            self.flush()

    def flush(self) -> None:
        start = time.perf_counter()
        with self.conn:
            self.conn.executemany(self.sql, self.pending)
        self.seconds += time.perf_counter() - start
        self.rows += len(self.pending)
        self.pending = []

    def size(self) -> int:
        self.flush()
        self.conn.close()
        return self.path.stat().st_size


def table_bytes(store: Store) -> dict[str, int]:
    """Bytes per table, its indexes included (dbstat)."""
    owner = {r[0]: r[1] for r in store.db.execute("select name, tbl_name from sqlite_master")}
    sizes: dict[str, int] = {}
    for name, size in store.db.execute("select name, sum(pgsize) from dbstat group by name"):
        table = owner.get(name, name)
        sizes[table] = sizes.get(table, 0) + int(size)
    return sizes


def fill(store: Store, shape: Shape, anchor: Anchor, n: int) -> list[float]:
    """Insert n results, one record_run per run; returns seconds per run."""
    rng = random.Random(2026)
    runs = math.ceil(n / PROMPTS_PER_RUN)
    per_run = []
    for i in range(runs):
        at = END - (runs - i) * EVERY_S
        batch, tiers = shape.run(at, rng)
        run_id = f"{i:016x}"
        load = {"at_ts": batch[0].started_at.timestamp(), **shape.load}
        start = time.perf_counter()
        store.record_run(run_id, batch, IDENTITY, tiers, load)
        per_run.append(time.perf_counter() - start)
        anchor.add(run_id, batch)
        if i and i % 200_000 == 0:
            print(f"  {i * PROMPTS_PER_RUN:,} results", flush=True)
    return per_run


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def p(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def drain(store: Store, now: float, settings: Retention) -> list[tuple[float, Summary]]:
    """retention.maintain until it has nothing more to do, as the daemon calls it."""
    calls = []
    while True:
        start = time.perf_counter()
        summary = retention.maintain(store.db, now, settings)
        calls.append((time.perf_counter() - start, summary))
        if not summary.more_to_do:
            return calls


def show(title: str, calls: list[tuple[float, Summary]], key: str) -> dict[str, Any]:
    """Print what the passes did, and return it as figures named `key`_..."""
    ms = [t * 1000 for t, _ in calls]
    done = [s for _, s in calls]
    figures = {
        f"{key}_calls": len(calls),
        f"{key}_s": round(sum(ms) / 1000, 2),
        f"{key}_call_ms_p50": round(statistics.median(ms), 1),
        f"{key}_call_ms_p90": round(p(ms, 90), 1),
        f"{key}_call_ms_max": round(max(ms), 1),
        f"{key}_hours_rolled": sum(s.hours_rolled for s in done),
        f"{key}_rows_deleted": sum(sum(s.deleted.values()) for s in done),
        f"{key}_pages_freed": sum(s.pages_freed for s in done),
        f"{key}_bytes_before": done[0].size_before,
        f"{key}_bytes_after": done[-1].size_after,
    }
    print(f"{title}: {len(calls):,} calls, total {sum(ms) / 1000:,.1f} s")
    print(f"  ms per call: p50 {statistics.median(ms):.0f}, p90 {p(ms, 90):.0f}, max {max(ms):.0f}")
    print(
        f"  hours rolled up {figures[f'{key}_hours_rolled']:,}, "
        f"rows deleted {figures[f'{key}_rows_deleted']:,}, "
        f"pages freed {figures[f'{key}_pages_freed']:,}; "
        f"size {mb(done[0].size_before)} -> {mb(done[-1].size_after)}"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=int, default=FULL_RUN)
    parser.add_argument("--quick", action="store_true", help="250,000 results (35 days)")
    parser.add_argument("--dir", type=Path, help="where the databases go (default: a temp dir)")
    args = parser.parse_args()
    n = 250_000 if args.quick else args.results
    # The number of results the file held says which run this was: a --quick one is 250,000.
    figures: dict[str, Any] = {"results_stored": n, "history_days": round(days_of(n), 1)}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Store.open(Path(tmp) / "watchdog.db")
        shape = Shape()
        anchor = Anchor(Path(tmp) / "anchor.db", store, min(n, ANCHOR_ROWS))
        pairs = [("bench", shape.golden.name)]
        figures |= inserts(store, shape, anchor, n)
        figures |= report_times(store, Path(tmp), END, pairs)
        figures |= prune(store, shape)
        # What the daemon sees from now on: 14 days of results, hourly rollups before them.
        figures |= report_times(store, Path(tmp), AFTER, pairs, "_after_retention")
        figures |= endpoint_year(store, figures["database_bytes"], n)
        figures |= rebuild(store)
        figures |= lower_raw_days(store)
        store.close()
    results.record("storage", results.command_line(), figures)


def days_of(n: int) -> float:
    return n / PROMPTS_PER_RUN * EVERY_S / 86400


def inserts(store: Store, shape: Shape, anchor: Anchor, n: int) -> dict[str, Any]:
    print(
        f"{n:,} results, {n // PROMPTS_PER_RUN:,} runs of 5 prompts every 60 s: {days_of(n):,.0f} days"
    )
    start = time.perf_counter()
    per_run = fill(store, shape, anchor, n)
    fill_s = time.perf_counter() - start
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = retention.size_bytes(store.db)
    anchor_size = anchor.size()
    tables = table_bytes(store)
    ours_rate, anchor_rate = n / sum(per_run), anchor.rows / anchor.seconds
    ms = [t * 1000 for t in per_run]

    print("\ninserts (one transaction per run; anchor: executemany, 10k rows a transaction)")
    print(f"{'':<34} {'results/s':>10} {'ms/run p50':>11} {'ms/run p90':>11}")
    print(f"{'bare sqlite3 executemany (anchor)':<34} {anchor_rate:>10,.0f}")
    print(f"{'Store.record_run':<34} {ours_rate:>10,.0f} {p(ms, 50):>11.2f} {p(ms, 90):>11.2f}")
    print(f"ratio (record_run / anchor): {ours_rate / anchor_rate:.3f}; fill took {fill_s:,.0f} s")

    print(f"\nbytes per result (anchor: the first {anchor.rows:,} rows)")
    anchor_per = anchor_size / anchor.rows
    print(f"{'bare sqlite3, results table + indexes (anchor)':<50} {anchor_per:>8,.0f}")
    print(f"{'ours, results table + indexes':<50} {tables.get('results', 0) / n:>8,.0f}")
    print(f"{'ours, whole file (+ readiness, server_load, ...)':<50} {size / n:>8,.0f}")
    print(f"ratio (whole file / anchor): {size / n / anchor_per:.2f}")
    biggest = sorted(tables.items(), key=lambda kv: -kv[1])[:3]
    print(f"database: {mb(size)}; " + ", ".join(f"{k} {mb(v)}" for k, v in biggest))
    return {
        "inserts_per_s": round(ours_rate),
        "anchor_inserts_per_s": round(anchor_rate),
        "inserts_ratio": round(ours_rate / anchor_rate, 3),
        "ms_per_run_p50": round(p(ms, 50), 3),
        "ms_per_run_p90": round(p(ms, 90), 3),
        "fill_s": round(fill_s, 1),
        "anchor_rows": anchor.rows,
        "anchor_bytes_per_result": round(anchor_per),
        "results_table_bytes_per_result": round(tables.get("results", 0) / n),
        "bytes_per_result": round(size / n),
        "bytes_per_result_ratio": round(size / n / anchor_per, 2),
        "database_bytes": size,
    }


def report_times(
    store: Store, tmp: Path, now: float, pairs: list[tuple[str, str]], stage: str = ""
) -> dict[str, Any]:
    """The 30-day CSV report and the daily HTML report of the last 24 h, as the daemon and
    `mlops-watchdog report` make them, interleaved, medians of 5. Before retention (no `stage`),
    also the 30-day report made as it was before: every column of every result, counted raw."""
    since = now - 30 * 86400
    raw = count(store, since, now)
    rolled = len(tally.rolled_hours(store.db, since, None, {}))
    moment = datetime.fromtimestamp(now, UTC)
    csv, page = tmp / "report.csv", tmp / "daily.html"
    times: dict[str, list[float]] = {"report": [], "every_column": [], "daily": []}
    for _ in range(5):
        if not stage:
            times["every_column"].append(
                timed(lambda: report.write_csv(report.health(store.results_since(since)), csv))
            )
        times["report"].append(
            timed(lambda: report.write_csv(report.health_since(store, since), csv))
        )
        times["daily"].append(
            timed(lambda: write_daily(store, pairs, DriftSettings(), moment, page))
        )
    mine, daily = statistics.median(times["report"]), statistics.median(times["daily"])
    print(
        f"\n30-day CSV report of one endpoint{stage.replace('_', ' ')} ({raw:,} raw results, "
        f"{rolled:,} hours from rollups): {mine:.2f} s; daily HTML report of the last 24 h: "
        f"{daily:.3f} s (medians of 5)"
    )
    figures: dict[str, Any] = {
        f"report_30d{stage}_s": round(mine, 3),
        f"report_30d{stage}_raw_results": raw,
        f"report_30d{stage}_rolled_hours": rolled,
        f"daily_24h{stage}_s": round(daily, 3),
        f"daily_24h{stage}_raw_results": count(store, now - 86400, now),
    }
    if not stage:
        before = statistics.median(times["every_column"])
        print(f"  the 30-day report reading every column, as before: {before:.2f} s")
        figures["report_30d_every_column_s"] = round(before, 3)
    return figures


def prune(store: Store, shape: Shape) -> dict[str, Any]:
    print()
    figures = show(
        "retention.maintain, first pass over the whole history",
        drain(store, END + 3600, Retention()),
        "retention_first_pass",
    )
    check = store.db.execute("PRAGMA integrity_check").fetchone()[0]
    print(f"  integrity_check: {check}")
    # One more hour of runs, then the passes the daemon makes every hour from now on.
    rng = random.Random(7)
    for i in range(int(3600 / EVERY_S)):
        batch, tiers = shape.run(END + i * EVERY_S, rng)
        load = {"at_ts": END + i * EVERY_S, **shape.load}
        store.record_run(f"next{i}", batch, IDENTITY, tiers, load)
    hourly = []
    for hour in range(3):  # rolls up the new hour, then prunes one hour a pass
        start = time.perf_counter()
        retention.maintain(store.db, END + (2 + hour) * 3600, Retention())
        hourly.append((time.perf_counter() - start) * 1000)
    print(f"  steady state, three hourly passes: {', '.join(f'{ms:.1f}' for ms in hourly)} ms")
    return figures | {
        "integrity_ok": check == "ok",
        "retention_steady_first_ms": round(hourly[0], 1),
        "retention_steady_next_ms": round(max(hourly[1:]), 1),
    }


def endpoint_year(store: Store, size_before: int, n: int) -> dict[str, Any]:
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    kept = table_bytes(store)
    raw_rows = rows(store, "results")
    rollup_rows = rows(store, "rollups")
    raw = sum(kept.get(t, 0) for t in ("results", "readiness", "server_load"))
    per_raw, per_rollup = raw / raw_rows, kept.get("rollups", 0) / max(rollup_rows, 1)
    other = sum(kept.values()) - raw - kept.get("rollups", 0)
    year_raw = RAW_DAYS * 86400 / EVERY_S * PROMPTS_PER_RUN
    year_rollups = ROLLUP_DAYS * 24 * PROMPTS_PER_RUN
    model = year_raw * per_raw + year_rollups * per_rollup + other
    final = retention.size_bytes(store.db)
    days = days_of(n)
    print(
        "\nsize per endpoint-year (one run of 5 prompts every 60 s, 14 days raw, 400 days rollups)"
    )
    print(
        f"  kept: {raw_rows:,} results at {per_raw:,.0f} bytes with their readiness and load rows, "
        f"{rollup_rows:,} rollup rows at {per_rollup:,.0f} bytes"
    )
    print(
        f"  model: {year_raw:,.0f} x {per_raw:,.0f} + {year_rollups:,} x {per_rollup:,.0f} "
        f"+ {mb(other)} other = {mb(model)}"
    )
    note = "" if days >= RAW_DAYS + ROLLUP_DAYS else f" (only {days:,.0f} days of history)"
    print(
        f"  measured: {mb(final)}{note}; ratio to the file before retention {final / size_before:.3f}"
    )
    return {
        "kept_raw_results": raw_rows,
        "kept_raw_bytes_per_result": round(per_raw),
        "kept_rollup_rows": rollup_rows,
        "rollup_bytes_per_row": round(per_rollup),
        "endpoint_year_model_bytes": round(model),
        "endpoint_year_measured_bytes": final,
    }


def rebuild(store: Store) -> dict[str, Any]:
    """What the one-time VACUUM costs that gives a file made before schema 6 incremental vacuum:
    maintain() runs it after its first complete pass, when the file is at this size."""
    size = retention.size_bytes(store.db)
    start = time.perf_counter()
    store.db.conn.executescript("VACUUM;")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # VACUUM wrote the whole file to the WAL
    seconds = time.perf_counter() - start
    print(f"  full VACUUM of this file: {seconds:.1f} s for {mb(size)}")
    return {"vacuum_s": round(seconds, 2), "vacuum_bytes": size}


def lower_raw_days(store: Store) -> dict[str, Any]:
    print()
    calls = drain(store, AFTER + 3600, Retention(raw_days=7))
    return show("lowering raw_days from 14 to 7", calls, "raw_days_7")


def count(store: Store, since: float = -math.inf, until: float = math.inf) -> int:
    """Results stored in [since, until]."""
    sql = "select count(*) from results where started_ts >= ? and started_ts <= ?"
    return int(store.db.execute(sql, [since, until]).fetchone()[0])


def rows(store: Store, table: str) -> int:
    return int(store.db.execute(f"select count(*) from [{table}]").fetchone()[0])


def _figure(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def _run_size(figures: dict[str, Any]) -> str:
    """How many results the file held, so that a --quick run is not taken for the full one."""
    n = figures["results_stored"]
    size = f"{n:,} results, {figures['history_days']:,.0f} days of a run of 5 prompts a minute"
    return size if n >= FULL_RUN else f"{size}; the full run holds {FULL_RUN:,}"


def table(result: dict[str, Any]) -> str:
    """bench/README.md's table of a run, with its date, machine and size."""
    f = result["figures"]
    n = f["results_stored"]
    rows = [
        ("results stored", f"{n:,}", ""),
        (
            "inserts, `Store.record_run` (one transaction per run)",
            f"{f['inserts_per_s']:,} results/s; {f['ms_per_run_p50']:.2f} ms per run (p50), "
            f"{f['ms_per_run_p90']:.2f} ms (p90)",
            f"bare `executemany`, 10,000 rows a transaction: {f['anchor_inserts_per_s']:,} "
            f"results/s; ratio {f['inserts_ratio']:.3f}",
        ),
        (
            "bytes per result, `results` table + indexes",
            f"{f['results_table_bytes_per_result']:,}",
            f"bare `executemany`: {f['anchor_bytes_per_result']:,} "
            f"(its first {f['anchor_rows']:,} rows)",
        ),
        (
            "bytes per result, whole file",
            f"{f['bytes_per_result']:,}",
            f"ratio to the anchor: {f['bytes_per_result_ratio']:.2f}",
        ),
        ("database before retention", mb(f["database_bytes"]), ""),
        (
            "**30-day CSV report of one endpoint**, before retention "
            f"({f['report_30d_raw_results']:,} raw results)",
            f"**{_figure(f['report_30d_s'])} s**",
            f"reading every column of every result, as before: "
            f"{_figure(f['report_30d_every_column_s'])} s; ratio "
            f"{f['report_30d_s'] / f['report_30d_every_column_s']:.2f}",
        ),
        (
            "**daily HTML report of the last 24 h**, before retention",
            f"**{_figure(f['daily_24h_s'], 3)} s**",
            f"{f['daily_24h_raw_results']:,} raw results",
        ),
        (
            "30-day CSV report after retention "
            f"({f['report_30d_after_retention_raw_results']:,} raw results, "
            f"{f['report_30d_after_retention_rolled_hours']:,} hours from rollups)",
            f"{_figure(f['report_30d_after_retention_s'])} s",
            "",
        ),
        (
            "daily HTML report after retention",
            f"{_figure(f['daily_24h_after_retention_s'], 3)} s",
            "",
        ),
        (
            "`retention.maintain`, first pass over the whole history",
            f"{f['retention_first_pass_calls']:,} calls, {f['retention_first_pass_s']:,.1f} s in "
            f"all; {f['retention_first_pass_call_ms_p50']:.0f} ms per call p50, "
            f"{f['retention_first_pass_call_ms_p90']:.0f} p90, "
            f"{f['retention_first_pass_call_ms_max']:.0f} max",
            "",
        ),
        (
            "... it rolled up, deleted and freed",
            f"{f['retention_first_pass_hours_rolled']:,} hours; "
            f"{f['retention_first_pass_rows_deleted']:,} rows; "
            f"{f['retention_first_pass_pages_freed']:,} pages; "
            f"{mb(f['retention_first_pass_bytes_before'])} → "
            f"{mb(f['retention_first_pass_bytes_after'])}",
            "",
        ),
        (
            "`retention.maintain`, steady state (one new hour to roll up and prune)",
            f"{f['retention_steady_first_ms']:.1f} ms, then {f['retention_steady_next_ms']:.1f} "
            "ms at most for the next passes",
            "",
        ),
        ("`PRAGMA integrity_check` after the prune", "ok" if f["integrity_ok"] else "FAILED", ""),
        (
            "one full `VACUUM` of the steady-state file",
            f"{f['vacuum_s']:.1f} s for {mb(f['vacuum_bytes'])}",
            "",
        ),
        (
            "lowering `raw_days` from 14 to 7",
            f"{f['raw_days_7_calls']:,} calls, {f['raw_days_7_s']:.1f} s in all, "
            f"{f['raw_days_7_call_ms_max']:.0f} ms max; {mb(f['raw_days_7_bytes_before'])} → "
            f"{mb(f['raw_days_7_bytes_after'])}",
            "",
        ),
        (
            "size per endpoint-year (14 days raw, 400 days of rollups)",
            f"{mb(f['endpoint_year_model_bytes'])} modelled",
            f"{f['kept_raw_results']:,} results at {f['kept_raw_bytes_per_result']:,} bytes, "
            f"{f['kept_rollup_rows']:,} rollups at {f['rollup_bytes_per_row']:,} bytes kept; the "
            f"file measures {mb(f['endpoint_year_measured_bytes'])}",
        ),
    ]
    lines = [
        caption(result),
        "",
        f"{_run_size(f)}. Report times are medians of 5, interleaved.",
        "",
        "| what | figure | anchor / ratio |",
        "| --- | --- | --- |",
        *(f"| {what} | {figure} | {anchor} |" for what, figure, anchor in rows),
    ]
    return "\n".join(lines) + "\n"


def readme(result: dict[str, Any]) -> str:
    """One paragraph for the README's "How it compares": the reports' times over the file."""
    f = result["figures"]
    return (
        f"Storage of one endpoint ({_run_size(f)}): the 30-day CSV health report "
        f"takes {_figure(f['report_30d_s'])} s ({_figure(f['report_30d_every_column_s'])} s "
        f"reading every column, as it did), {_figure(f['report_30d_after_retention_s'])} s once "
        "retention keeps 14 days of results and hourly rollups before them, and the daily HTML "
        f"report of the last 24 h {_figure(f['daily_24h_s'], 3)} s. Results are stored at "
        f"{f['inserts_per_s']:,} a second, one transaction per run (a bare `executemany` of "
        f"10,000 rows a transaction: {f['anchor_inserts_per_s']:,}), at "
        f"{f['bytes_per_result']:,} bytes each. {caption(result)}\n"
    )


if __name__ == "__main__":
    main()

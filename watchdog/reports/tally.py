"""What a report counts over a window: the hourly rollups for the hours they hold, raw results for
the rest, and the raw results still stored for what only they can give.

A rollup (store/retention.py) gives its hour's counts exactly: results, passes, answers, error
classes, and the times of the first and last result. It cannot give a percentile over many hours,
so latency percentiles, token sources, trace ids and fingerprints come from the raw results still
stored in the window. Each complete hour that retention has rolled up is counted from its
rollups; raw results are counted only around them: the part hour at the start of the window, the
hours not rolled up yet, and any hour holding more raw results than its rollups counted (a run
stored after its hour was rolled up: the spool, after a full disk). Past retention.raw_days an
hour's raw results are gone (but for drift baselines' runs) and its rollups are what is left;
a window starting inside such an hour leaves that part hour out rather than count the results
of the hour before the window began.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import pandas as pd
from sqlite_utils import Database

from watchdog.store import Store
from watchdog.store.retention import HOUR_S, watermark

KEYS = ["endpoint", "golden_set", "prompt_id"]
COUNTS = [*KEYS, "hour_ts", "answers", "ok", "answered", "first_at", "last_at"]
ERRORS = [*KEYS, "hour_ts", "error_class", "n"]
# What counting reads of each raw result, beside what a report asks for.
COUNTED = (*KEYS, "started_ts", "ok", "error_class")
NUMBERS = ("started_ts", "ok", "ttft_s", "e2e_s", "tokens_per_s")

# The queries over a window (and _read's) each search an index for the window only, never scan
# a table (tests/test_report_rollups.py asks their plans): a report's time follows its window,
# not the size of the file.
SUMMED_HOURS = (
    "select hour_ts, sum(answers) from rollups where hour_ts >= ? and hour_ts < ? group by hour_ts"
)
ROLLUPS = (
    "select endpoint, golden_set, prompt_id, hour_ts, answers, ok, answered, errors, first_at, "
    "last_at from rollups where hour_ts >= ? and hour_ts <= ?"
)


@dataclass(frozen=True)
class Tally:
    """A window's results counted per endpoint × golden set × prompt × hour, and its raw results.

    `counts` has a row per key and hour with results (COUNTS): `answers` results, of which `ok`
    passed and `answered` got an answer, and the `started_at` of the first and last of them (None
    in rollups from before schema 10 whose results were pruned). `errors` has a row per key, hour
    and error class seen (ERRORS). `raw` is the window's raw results still stored, oldest first,
    with `answered` and `key`: a number per key, the row of `keys` that spells it (-1: a result
    missing part of its key, which no report counts)."""

    counts: pd.DataFrame
    errors: pd.DataFrame
    raw: pd.DataFrame
    keys: pd.DataFrame

    def by_key(self, columns: Sequence[str]) -> dict[tuple[str, str, str], pd.DataFrame]:
        """These columns of the raw results of each key."""
        spelled = cast(
            list[tuple[str, str, str]], list(self.keys[KEYS].itertuples(index=False, name=None))
        )
        out = {}
        for code, g in self.raw[["key", *columns]].groupby("key", sort=False):
            if cast(int, code) >= 0:
                out[spelled[cast(int, code)]] = g
        return out


def from_results(results: pd.DataFrame) -> Tally:
    """Every figure counted from these raw results (as Store.results_since reads them)."""
    raw, keys = _keyed(results)
    counts, errors = _count(raw, keys)
    return Tally(counts, errors, raw, keys)


def from_store(
    store: Store, start_ts: float, end_ts: float | None, columns: Sequence[str]
) -> Tally:
    """The results stored from `start_ts` to `end_ts` (None: on), both included, with `columns`
    of the raw ones: each hour that rolled_hours names from its rollups, the rest from raw."""
    raw, keys = _read(store.db, start_ts, end_ts, columns)
    hours = _hours(raw)
    stored = {int(cast(int, h)): int(n) for h, n in hours.value_counts().items()}
    rolled = rolled_hours(store.db, start_ts, end_ts, stored)
    counts, errors = _count(raw[~hours.isin(rolled)], keys)
    if rolled:
        kept, kept_errors = _rollups(store.db, rolled)
        counts = pd.concat([kept, counts], ignore_index=True) if len(counts) else kept
        errors = pd.concat([kept_errors, errors], ignore_index=True) if len(errors) else kept_errors
    return Tally(counts, errors, raw, keys)


def rolled_hours(
    db: Database, start_ts: float, end_ts: float | None, stored: Mapping[int, int]
) -> list[int]:
    """The hours inside [start_ts, end_ts] that their rollups count exactly: rolled up (before
    retention's watermark), and holding no more raw results (`stored`: per hour) than the
    rollups counted. Fewer were pruned; more were stored after the hour was rolled up."""
    rolled_until = watermark(db)
    if rolled_until is None:
        return []
    first = math.ceil(start_ts / HOUR_S) * HOUR_S
    end = rolled_until if end_ts is None else min(rolled_until, _hour(end_ts))
    if end <= first:
        return []
    summed = db.execute(SUMMED_HOURS, [first, end]).fetchall()
    return sorted(int(h) for h, n in summed if n and stored.get(int(h), 0) <= n)


def _rollups(db: Database, hours: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rollups of these hours, as counts and errors."""
    frame = pd.read_sql_query(ROLLUPS, db.conn, params=(hours[0], hours[-1]))
    frame = frame[frame["hour_ts"].isin(hours)]  # some hours between may be counted raw
    errors = [
        (*key, error_class, n)
        for *key, text in frame[[*KEYS, "hour_ts", "errors"]].itertuples(index=False)
        for error_class, n in json.loads(text or "{}").items()
    ]
    return frame[COUNTS].reset_index(drop=True), pd.DataFrame(errors, columns=ERRORS)


def _read(
    db: Database, start_ts: float, end_ts: float | None, columns: Sequence[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The raw results of the window, oldest first, numbered by key (see Tally). Reading the
    month's rows is most of a report's time: each is read once, and a dict numbers its key while
    it is read (in a third of what factorizing three columns of text takes)."""
    wanted = [c for c in dict.fromkeys([*COUNTED, *columns]) if c not in KEYS]
    sql = f"select {', '.join([*KEYS, *wanted])} from results where started_ts >= ?"
    params = [start_ts]
    if end_ts is not None:
        sql, params = sql + " and started_ts <= ?", [start_ts, end_ts]
    rows = db.conn.execute(sql + " order by started_ts", params).fetchall()
    numbers: dict[tuple[str, str, str], int] = {}
    codes = [numbers.setdefault(row[:3], len(numbers)) for row in rows]
    keys = pd.DataFrame(list(numbers), columns=KEYS)
    valid = keys.notna().all(axis=1).to_numpy()  # no golden set: counted nowhere, as in groupby
    raw = pd.DataFrame.from_records(rows, columns=[*KEYS, *wanted], exclude=KEYS)
    raw["key"] = pd.Series(codes, dtype="int64").where(valid[codes], -1)
    return _answered(raw), keys


def _keyed(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results numbered by key (see Tally), with the keys."""
    missing = [c for c in dict.fromkeys([*COUNTED, *NUMBERS]) if c not in results]
    results = results.assign(
        **{c: pd.Series(None, index=results.index, dtype=object) for c in missing}
    )
    if results.empty:
        return _answered(results.assign(key=pd.Series(dtype="int64"))), pd.DataFrame(columns=KEYS)
    codes = results.groupby(KEYS, sort=False).ngroup().fillna(-1).astype("int64")
    keys = results[codes >= 0].assign(key=codes).drop_duplicates("key").sort_values("key")
    return _answered(results.assign(key=codes)), keys[KEYS].reset_index(drop=True)


def _answered(raw: pd.DataFrame) -> pd.DataFrame:
    """The results with numbers as numbers (a column of NULLs reads as objects) and `answered`:
    an answer came (no error class, or check_failed), so its latency counts and its checks
    measure the format."""
    numbers = [c for c in NUMBERS if c in raw and raw[c].dtype == object]
    raw = raw.assign(**{c: pd.to_numeric(raw[c], errors="coerce") for c in numbers})
    classes = raw["error_class"]
    return raw.assign(answered=classes.isna() | (classes == "check_failed"))


def _count(raw: pd.DataFrame, keys: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw results counted per key and hour, as the rollups count them."""
    raw = raw[raw["key"] >= 0]
    if raw.empty:
        return pd.DataFrame(columns=COUNTS), pd.DataFrame(columns=ERRORS)
    frame = raw.assign(hour_ts=_hours(raw), answered=raw["answered"].astype("int64"))
    if "started_at" not in frame:
        frame = frame.assign(started_at=None)
    counts = (
        frame.groupby(["key", "hour_ts"], sort=False)
        .agg(
            answers=("answered", "size"),
            ok=("ok", "sum"),
            answered=("answered", "sum"),
            first_at=("started_at", "first"),
            last_at=("started_at", "last"),
        )
        .reset_index()
    )
    failed = frame[frame["error_class"].notna()]
    sizes = failed.groupby(["key", "hour_ts", "error_class"], sort=False).size()
    errors = sizes.rename("n").reset_index()
    return _spelled(counts, keys)[COUNTS], _spelled(errors, keys)[ERRORS]


def _spelled(frame: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its `key` numbers written out as endpoint, golden set and prompt."""
    return keys.iloc[frame["key"]].reset_index(drop=True).join(frame.reset_index(drop=True))


def _hours(raw: pd.DataFrame) -> pd.Series:
    if "started_ts" not in raw:
        return pd.Series(0, index=raw.index, dtype="int64")
    started = pd.to_numeric(raw["started_ts"], errors="coerce")
    return (started // HOUR_S * HOUR_S).fillna(0).astype("int64")


def _hour(ts: float) -> int:
    return math.floor(ts / HOUR_S) * HOUR_S

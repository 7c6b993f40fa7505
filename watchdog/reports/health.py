"""The health report: one row per endpoint × prompt over a window, as CSV safe to open in Excel."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import cast

import pandas as pd

from watchdog.reports import tally
from watchdog.reports.tally import KEYS, Tally
from watchdog.store import Store

COLUMNS = [
    "endpoint",
    "golden_set",
    "prompt_id",
    "runs",
    "pass_rate",
    "format_accuracy",
    "ttft_p50_s",
    "ttft_p95_s",
    "e2e_p50_s",
    "e2e_p95_s",
    "tokens_per_s_p50",
    "top_error_class",
    "first_run",
    "last_run",
    # Last, so that a spreadsheet reading columns by position keeps working.
    "token_source",
    "last_trace_id",  # the W3C trace of the last run, and of the last failed one
    "last_failed_trace_id",
]
# What `health` reads of each stored result (and tally.COUNTED, for the hours it counts).
READS = (
    "endpoint",
    "golden_set",
    "prompt_id",
    "ok",
    "error_class",
    "ttft_s",
    "e2e_s",
    "tokens_per_s",
    "token_source",
    "started_at",
    "trace_id",
)
# A cell starting with one of these is a formula to Excel and LibreOffice (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def health_since(store: Store, since_ts: float) -> pd.DataFrame:
    """The report rows of the results stored from `since_ts` on. Each hour that retention has
    rolled up is counted from its rollups, also once its raw results are pruned; the latency
    percentiles, token sources and trace ids are those of the raw results still stored (all of
    the last retention.raw_days, and drift baselines' runs before). See tally.py."""
    return rows(tally.from_store(store, since_ts, None, READS))


def health(results: pd.DataFrame) -> pd.DataFrame:
    """Aggregate stored raw results (Store.results_since) into report rows."""
    return rows(tally.from_results(results))


def rows(counted: Tally) -> pd.DataFrame:
    """One report row per endpoint × golden set × prompt of a tally, sorted by them."""
    if counted.counts.empty:
        return pd.DataFrame(columns=COLUMNS)
    by_key = counted.counts.sort_values("hour_ts", kind="stable").groupby(KEYS, sort=True)
    sums = by_key[["answers", "ok", "answered"]].sum()
    first_at, last_at = by_key["first_at"].first(), by_key["last_at"].last()
    errors: dict[tuple[str, ...], dict[str, int]] = {}
    for index, n in counted.errors.groupby([*KEYS, "error_class"])["n"].sum().items():
        *parts, error_class = cast(tuple[str, ...], index)
        errors.setdefault(tuple(parts), {})[error_class] = int(n)
    raw = counted.by_key(list(_NONE.columns))
    out = []
    for key, s in sums.iterrows():
        assert isinstance(key, tuple)
        runs, answered = int(s["answers"]), int(s["answered"])
        seen = errors.get(key, {})
        g = raw.get(key, _NONE)
        answers = g[g["answered"]]
        out.append(
            {
                **dict(zip(KEYS, key, strict=True)),
                "runs": runs,
                "pass_rate": s["ok"] / runs,
                # Of the results with an answer, the share that passed their checks.
                "format_accuracy": (answered - seen.get("check_failed", 0)) / answered
                if answered
                else None,
                "ttft_p50_s": answers["ttft_s"].quantile(0.5),
                "ttft_p95_s": answers["ttft_s"].quantile(0.95),
                "e2e_p50_s": answers["e2e_s"].quantile(0.5),
                "e2e_p95_s": answers["e2e_s"].quantile(0.95),
                "tokens_per_s_p50": answers["tokens_per_s"].quantile(0.5),
                # The most frequent class; of equals, the first by name.
                "top_error_class": min(seen, key=lambda c: (-seen[c], c)) if seen else "",
                "first_run": first_at[key],
                "last_run": last_at[key],
                # How the answers' tokens were counted: `events` (Triton's stream without a
                # tokenizer) has no tokens/s, and `estimate` is a guess.
                "token_source": "+".join(sorted(answers["token_source"].dropna().unique())),
                "last_trace_id": _last(g["trace_id"]),
                "last_failed_trace_id": _last(g.loc[g["ok"] == 0, "trace_id"]),
            }
        )
    return pd.DataFrame(out, columns=COLUMNS)


# The raw results of a key whose hours are all pruned: no latency, token source or trace.
_NONE = pd.DataFrame(
    {
        "ok": pd.Series(dtype="int64"),
        "answered": pd.Series(dtype=bool),
        **{c: pd.Series(dtype=float) for c in ("ttft_s", "e2e_s", "tokens_per_s")},
        **{c: pd.Series(dtype=object) for c in ("token_source", "trace_id")},
    }
)


def _last(values: pd.Series) -> str:
    present = values.dropna()
    return str(present.iloc[-1]) if len(present) else ""


def excel_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a quote."""

    def cell(value: object) -> object:
        if isinstance(value, str) and value.startswith(_FORMULA_START):
            return "'" + value
        return value

    def fix(column: pd.Series) -> pd.Series:
        textual = column.dtype == object or pd.api.types.is_string_dtype(column)
        return column.map(cell) if textual else column

    return frame.apply(fix)


def write_csv(frame: pd.DataFrame, out: Path) -> None:
    """Write atomically, so a reader never sees half a report."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    excel_safe(frame).to_csv(tmp, index=False, float_format="%.4g", quoting=csv.QUOTE_MINIMAL)
    tmp.replace(out)

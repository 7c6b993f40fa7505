"""The health report: one row per endpoint × prompt over a window, as CSV safe to open in Excel."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

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
# What `health` reads of each stored result.
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
# Results that produced an answer: their latency counts, and their checks measure the format.
_ANSWERED = {None, "check_failed"}


def health_since(store: Store, since_ts: float) -> pd.DataFrame:
    """The report rows of the results stored from `since_ts` on, reading only what they need."""
    return health(store.results_since(since_ts, READS))


def health(results: pd.DataFrame) -> pd.DataFrame:
    """Aggregate stored results (Store.results_since) into report rows."""
    if results.empty:
        return pd.DataFrame(columns=COLUMNS)
    results = results.assign(
        answered=results["error_class"].isna() | (results["error_class"] == "check_failed")
    )
    rows = []
    for (endpoint, golden_set, prompt_id), g in results.groupby(
        ["endpoint", "golden_set", "prompt_id"], sort=True
    ):
        answered = g[g["answered"]]
        errors = g["error_class"].dropna()
        rows.append(
            {
                "endpoint": endpoint,
                "golden_set": golden_set,
                "prompt_id": prompt_id,
                "runs": len(g),
                "pass_rate": g["ok"].mean(),
                "format_accuracy": (answered["error_class"].isna()).mean()
                if len(answered)
                else None,
                "ttft_p50_s": answered["ttft_s"].quantile(0.5),
                "ttft_p95_s": answered["ttft_s"].quantile(0.95),
                "e2e_p50_s": answered["e2e_s"].quantile(0.5),
                "e2e_p95_s": answered["e2e_s"].quantile(0.95),
                "tokens_per_s_p50": answered["tokens_per_s"].quantile(0.5),
                "top_error_class": errors.mode().iloc[0] if len(errors) else "",
                "first_run": g["started_at"].iloc[0],
                "last_run": g["started_at"].iloc[-1],
                # How the answers' tokens were counted: `events` (Triton's stream without a
                # tokenizer) has no tokens/s, and `estimate` is a guess.
                "token_source": "+".join(sorted(answered["token_source"].dropna().unique())),
                "last_trace_id": _last(g["trace_id"]),
                "last_failed_trace_id": _last(g.loc[g["ok"] == 0, "trace_id"]),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


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

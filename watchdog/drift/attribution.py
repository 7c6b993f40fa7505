"""Which change made it worse: each drift, with the nearest preceding change and the medians
before and after it."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pandas as pd
from sqlite_utils import Database

from watchdog.drift import baselines, changes
from watchdog.drift.compare import DriftSettings
from watchdog.result import Change, Signal


def report(
    db: Database,
    pairs: Sequence[tuple[str, str]],
    settings: DriftSettings,
    now: float | None = None,
) -> list[str]:
    """One line per drifting signal of `pairs` (endpoint, golden set), e.g. "vllm-a/default
    latency: e2e p95 +212% (0.41s → 1.28s) since 2026-03-02T10:14:00Z, when model_ids: A → B
    (fingerprint change)"."""
    now = time.time() if now is None else now
    lines = []
    for endpoint, golden_set in pairs:
        for signal in baselines.drift(db, endpoint, golden_set, settings):
            if signal.status == "drift":
                cause = changes.before(db, endpoint, now)
                lines.append(line(signal, cause, _split(db, endpoint, golden_set, cause)))
    return lines


def _split(
    db: Database, endpoint: str, golden_set: str, cause: Change | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = pd.read_sql_query(
        "select started_at, started_ts, ok, error_class, e2e_s from results "
        "where endpoint = ? and golden_set = ? order by started_ts",
        db.conn,
        params=[endpoint, golden_set],
    )
    answered = frame[frame["error_class"].isna() | (frame["error_class"] == "check_failed")]
    if cause is None:
        return answered.iloc[:0], answered
    at = pd.Timestamp(cause.at).timestamp()
    return answered[answered["started_ts"] < at], answered[answered["started_ts"] >= at]


def line(signal: Signal, cause: Change | None, split: tuple[pd.DataFrame, pd.DataFrame]) -> str:
    before, after = split
    head = f"{signal.endpoint}/{signal.golden_set} {signal.signal}: "
    if signal.signal == "latency" and len(before) and len(after):
        parts = []
        for name, q in (("p50", 0.5), ("p95", 0.95)):
            b, a = before["e2e_s"].quantile(q), after["e2e_s"].quantile(q)
            parts.append(f"e2e {name} {a / b - 1:+.0%} ({b:.3f}s → {a:.3f}s)")
        what = ", ".join(parts)
    elif signal.signal == "format_accuracy" and len(before) and len(after):
        what = f"pass rate {before['ok'].mean():.0%} → {after['ok'].mean():.0%}"
    else:
        what = signal.detail
    if cause is None:
        return head + what + "; no fingerprint or config change recorded before it"
    return head + f"{what} since {cause.at}, when {cause.detail} ({cause.kind} change)"

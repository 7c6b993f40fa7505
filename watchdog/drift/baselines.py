"""Baselines: the probe runs an endpoint × golden set is compared with, per fingerprint.

`mlops-watchdog baseline record` makes one from fresh runs; the daemon makes one from the first
runs when none exists, and after a fingerprint change when the policy says `rebaseline`. A pinned
baseline is never replaced automatically.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any, Literal

import pandas as pd
from pydantic import Field
from sqlite_utils import Database

from watchdog.drift.compare import SIGNALS, DriftSettings, evaluate
from watchdog.parsing.validate import Strict
from watchdog.result import Signal
from watchdog.runtime.clock import rfc3339


class BaselinePolicy(Strict):
    """The `baseline:` config section: how the baselines drift is measured against are made
    and replaced (`mlops-watchdog baseline record` makes one on purpose)."""

    on_change: Literal["keep", "rebaseline"] = "keep"
    """After a fingerprint change (another model, build or system prompt): `keep` the old
    baseline and flag drift against it, or `rebaseline` from `runs` runs of the new one."""
    runs: int = Field(20, ge=3, le=10000)
    """The runs an automatic baseline is made of; with no baseline, the first `runs` runs make
    one."""


def active(db: Database, endpoint: str, golden_set: str) -> dict[str, Any] | None:
    rows = list(
        db.query(
            "select * from baselines where endpoint = ? and golden_set = ? and active = 1 "
            "order by id desc limit 1",
            [endpoint, golden_set],
        )
    )
    return rows[0] if rows else None


def runs_of(db: Database, baseline_id: int) -> list[str]:
    return [
        r["run_id"]
        for r in db.query("select run_id from baseline_runs where baseline_id = ?", [baseline_id])
    ]


def create(
    db: Database, endpoint: str, golden_set: str, run_ids: list[str], reason: str, now: datetime
) -> int:
    """A new active baseline from these runs; the pair's previous one is retired."""
    frame = _results(db, run_ids)
    fingerprint = Counter(frame["fingerprint"]).most_common(1)[0][0] if len(frame) else ""
    with db.atomic():
        db.execute(
            "update baselines set active = 0 where endpoint = ? and golden_set = ?",
            [endpoint, golden_set],
        )
        table = db.table("baselines").insert(
            {
                "endpoint": endpoint,
                "golden_set": golden_set,
                "fingerprint": fingerprint,
                "created_at": rfc3339(now),
                "created_ts": now.timestamp(),
                "runs": len(run_ids),
                "samples": len(frame),
                "noise": json.dumps(noise(frame)),
                "reason": reason,
                "pinned": 0,
                "active": 1,
            }
        )
        baseline_id = int(table.last_pk or 0)
        db.table("baseline_runs").insert_all(
            {"baseline_id": baseline_id, "run_id": r} for r in run_ids
        )
    return baseline_id


def noise(frame: pd.DataFrame) -> dict[str, float | None]:
    """The spread between repeats: e2e IQR over median per prompt (median of prompts), and the
    pass rate, so a reader of `baseline list` sees how steady the baseline was."""
    answered = frame[frame["answered"]] if len(frame) else frame
    spreads = []
    for _, group in answered.groupby("prompt_id"):
        e2e = group["e2e_s"].dropna()
        if len(e2e) >= 2 and e2e.median() > 0:
            spreads.append(float((e2e.quantile(0.75) - e2e.quantile(0.25)) / e2e.median()))
    return {
        "e2e_spread": float(pd.Series(spreads).median()) if spreads else None,
        "pass_rate": float(answered["ok"].mean()) if len(answered) else None,
    }


def pin(db: Database, baseline_id: int, pinned: bool = True) -> bool:
    table = db.table("baselines")
    if not table.count_where("id = ?", [baseline_id]):
        return False
    table.update(baseline_id, {"pinned": int(pinned)})
    return True


def listing(db: Database) -> list[dict[str, Any]]:
    return list(db.query("select * from baselines order by endpoint, golden_set, id"))


def recent_runs(db: Database, endpoint: str, golden_set: str, limit: int) -> list[str]:
    """The pair's last `limit` runs, newest first: read backwards along an index and stopped
    there, so it costs the window's rows, not the history's."""
    runs: dict[str, None] = {}
    if limit < 1:
        return []
    rows = db.execute(
        "select run_id from results where endpoint = ? and golden_set = ? order by started_ts desc",
        [endpoint, golden_set],
    )
    for (run_id,) in rows:
        runs.setdefault(run_id)
        if len(runs) == limit:
            break
    rows.close()
    return list(runs)


def _results(db: Database, run_ids: list[str]) -> pd.DataFrame:
    """One row per result, in the shape drift.evaluate takes."""
    marks = ",".join("?" * len(run_ids))
    frame = pd.read_sql_query(
        "select run_id, prompt_id, started_ts, ok, error_class, e2e_s, ttft_s, fingerprint, "
        f"output_profile, cold from results where run_id in ({marks}) order by started_ts",
        db.conn,
        params=run_ids,
    )
    classes = frame["error_class"]
    frame["answered"] = classes.isna() | (classes == "check_failed")
    frame["ok"] = frame["ok"].astype(bool)
    # A cold answer (after a change or a restart) times the loading, not the model: no latency.
    cold = frame.pop("cold").fillna(0).astype(bool)
    if cold.any():  # rare; the assignment costs more than the query when there is nothing to do
        frame.loc[cold, ["e2e_s", "ttft_s"]] = None
    frame["output_profile"] = [
        json.loads(p) if isinstance(p, str) else None for p in frame["output_profile"]
    ]
    return frame


def maintain(
    db: Database, endpoint: str, golden_set: str, policy: BaselinePolicy, now: datetime
) -> int | None:
    """Make the pair's automatic baseline when one is due; returns its id, or None."""
    current = active(db, endpoint, golden_set)
    runs = recent_runs(db, endpoint, golden_set, policy.runs)
    if len(runs) < policy.runs:
        return None
    if current is None:
        return create(db, endpoint, golden_set, runs[::-1], "first runs", now)
    if current["pinned"] or policy.on_change != "rebaseline":
        return None
    # Only once every one of the last runs answered with the new fingerprint.
    fingerprints = set(_results(db, runs)["fingerprint"])
    if len(fingerprints) == 1 and current["fingerprint"] not in fingerprints:
        return create(db, endpoint, golden_set, runs[::-1], "after a fingerprint change", now)
    return None


def drift(db: Database, endpoint: str, golden_set: str, settings: DriftSettings) -> list[Signal]:
    """The pair's recent window against its active baseline, one Signal per signal."""
    base = active(db, endpoint, golden_set)
    if base is None:
        why = "no baseline yet: run `mlops-watchdog baseline record`, or wait for the first runs"
        return [Signal(endpoint, golden_set, s, "inconclusive", None, why) for s in SIGNALS]
    baseline_runs = runs_of(db, base["id"])
    recent = [
        r
        for r in recent_runs(db, endpoint, golden_set, settings.window + len(baseline_runs))
        if r not in set(baseline_runs)
    ][: settings.window]
    recent_frame = _results(db, recent)
    current = recent_frame["fingerprint"].iloc[-1] if len(recent_frame) else None
    return evaluate(
        endpoint,
        golden_set,
        _results(db, baseline_runs),
        recent_frame,
        settings,
        baseline_fingerprint=base["fingerprint"],
        current_fingerprint=current,
    )

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

import numpy as np
from pydantic import Field
from sqlite_utils import Database

from watchdog.drift.compare import SIGNALS, DriftSettings, Sample, evaluate
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
    sample, fingerprints = _read(db, run_ids)
    fingerprint = Counter(fingerprints).most_common(1)[0][0] if fingerprints else ""
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
                "samples": len(fingerprints),
                "noise": json.dumps(noise(sample)),
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


def noise(sample: Sample) -> dict[str, float | None]:
    """The spread between repeats: e2e IQR over median per prompt (median of prompts), and the
    pass rate, so a reader of `baseline list` sees how steady the baseline was."""
    spreads = []
    for prompt in dict.fromkeys(sample.prompt[sample.answered]):
        e2e = sample.e2e[sample.answered & (sample.prompt == prompt)]
        e2e = e2e[~np.isnan(e2e)]
        if len(e2e) >= 2 and (median := np.median(e2e)) > 0:
            q25, q75 = np.quantile(e2e, [0.25, 0.75])
            spreads.append(float((q75 - q25) / median))
    return {
        "e2e_spread": float(np.median(spreads)) if spreads else None,
        "pass_rate": float(sample.ok[sample.answered].mean()) if sample.answered.any() else None,
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


def _read(db: Database, run_ids: list[str]) -> tuple[Sample, list[str]]:
    """The runs' results, oldest first, as drift.evaluate takes them, and each one's
    fingerprint. Read straight into arrays: a comparison reads 20 to 40 rows about once a
    minute per pair, and a DataFrame of them cost more than the comparison."""
    marks = ",".join("?" * len(run_ids))
    rows = db.execute(
        "select prompt_id, ok, error_class, e2e_s, cold, output_profile, fingerprint "
        f"from results where run_id in ({marks}) order by started_ts",
        run_ids,
    ).fetchall()
    sample = Sample(
        np.array([r[0] for r in rows], dtype=object),
        np.array([r[2] is None or r[2] == "check_failed" for r in rows], dtype=bool),
        np.array([bool(r[1]) for r in rows], dtype=bool),
        # A cold answer (after a change or a restart) times the loading, not the model.
        np.array([None if r[4] else r[3] for r in rows], dtype=float),
        [json.loads(r[5]) if isinstance(r[5], str) else None for r in rows],
    )
    return sample, [r[6] for r in rows]


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
    fingerprints = set(_read(db, runs)[1])
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
    recent_sample, fingerprints = _read(db, recent)
    return evaluate(
        endpoint,
        golden_set,
        _read(db, baseline_runs)[0],
        recent_sample,
        settings,
        baseline_fingerprint=base["fingerprint"],
        current_fingerprint=fingerprints[-1] if fingerprints else None,
    )

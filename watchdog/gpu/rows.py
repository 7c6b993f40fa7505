"""GPU rows: the inventory, samples (raw, then one-minute averages), XID events, run energy."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlite_utils import Database

from watchdog.gpu.nvml import GpuProcess, GpuSample, Snapshot, Xid
from watchdog.runtime.clock import rfc3339

# Columns copied from GpuSample as they are.
PLAIN = (
    "util_gpu",
    "util_memory",
    "memory_total",
    "memory_used",
    "memory_free",
    "memory_reserved",
    "temperature_c",
    "power_w",
    "power_limit_w",
    "energy_j",
    "sm_clock_hz",
    "memory_clock_hz",
    "ecc_uncorrected_volatile",
    "ecc_corrected_aggregate",
    "pcie_tx_bytes_s",
    "pcie_rx_bytes_s",
    "performance_state",
)
# In one-minute rows: counters and states keep their largest value, the rest their mean.
LARGEST = {
    "memory_total",
    "energy_j",
    "ecc_uncorrected_volatile",
    "ecc_corrected_aggregate",
    "remap_pending",
    "remap_failed",
    "performance_state",
}


def iso(ts: float) -> str:
    return rfc3339(datetime.fromtimestamp(ts, UTC), "seconds")


def record_snapshot(db: Database, snapshot: Snapshot) -> None:
    """The GPUs as seen now, and one raw sample each."""
    rows = []
    for g in snapshot.gpus:
        seen = {
            "uuid": g.uuid,
            "gpu_index": g.index,
            "name": g.name,
            "last_seen": iso(snapshot.at),
            "last_seen_ts": snapshot.at,
        }
        if db.table("gpus").count_where("uuid = ?", [g.uuid]):
            db.table("gpus").update(g.uuid, seen)
        else:
            db.table("gpus").insert({**seen, "first_seen": iso(snapshot.at)})
        rows.append(_row(g))
    if rows:
        db.table("gpu_samples").insert_all(rows)


def _row(g: GpuSample) -> dict[str, Any]:
    row: dict[str, Any] = {"uuid": g.uuid, "at_ts": g.at, "resolution": "raw"}
    row.update({name: getattr(g, name) for name in PLAIN})
    row["clock_events"] = None if g.clock_events is None else ",".join(sorted(g.clock_events))
    row["remap_pending"] = None if g.remap_pending is None else int(g.remap_pending)
    row["remap_failed"] = None if g.remap_failed is None else int(g.remap_failed)
    row["processes"] = (
        None if g.processes is None else json.dumps([p.__dict__ for p in g.processes])
    )
    return row


def record_xids(db: Database, xids: Iterable[Xid]) -> None:
    db.table("gpu_xids").insert_all(
        {"uuid": x.uuid, "code": x.code, "at_ts": x.at, "at": iso(x.at)} for x in xids
    )


def xid_counts(db: Database) -> dict[tuple[str, int], tuple[int, float]]:
    """(UUID, code): (count, last seen), over everything recorded."""
    return {
        (r["uuid"], r["code"]): (r["n"], r["last"])
        for r in db.query(
            "select uuid, code, count(*) as n, max(at_ts) as last from gpu_xids group by uuid, code"
        )
    }


def seen_since(db: Database, since_ts: float) -> dict[str, str]:
    """UUID: name of every GPU seen since `since_ts`: the count that should still be there."""
    return {
        r["uuid"]: r["name"]
        for r in db.query("select uuid, name from gpus where last_seen_ts >= ?", [since_ts])
    }


def history(db: Database, since_ts: float) -> dict[str, list[GpuSample]]:
    """Raw samples since `since_ts` by UUID, oldest first: the detectors' memory after a restart."""
    names = {r["uuid"]: (r["gpu_index"], r["name"]) for r in db.query("select * from gpus")}
    out: dict[str, list[GpuSample]] = defaultdict(list)
    for r in db.query(
        "select * from gpu_samples where resolution = 'raw' and at_ts >= ? order by at_ts",
        [since_ts],
    ):
        index, name = names.get(r["uuid"], (0, ""))
        out[r["uuid"]].append(_sample(r, index, name))
    return dict(out)


def _sample(r: dict[str, Any], index: int, name: str) -> GpuSample:
    events = r["clock_events"]
    processes = r["processes"]
    return GpuSample(
        uuid=r["uuid"],
        index=index,
        name=name,
        at=r["at_ts"],
        **{k: r[k] for k in PLAIN},
        clock_events=None if events is None else frozenset(e for e in events.split(",") if e),
        remap_pending=None if r["remap_pending"] is None else bool(r["remap_pending"]),
        remap_failed=None if r["remap_failed"] is None else bool(r["remap_failed"]),
        processes=None
        if processes is None
        else tuple(GpuProcess(**p) for p in json.loads(processes)),
    )


def downsample(db: Database, now_ts: float, keep_raw_s: float, keep_s: float) -> int:
    """Fold raw samples older than `keep_raw_s` into one-minute rows; drop rows older than
    `keep_s`. Returns the raw rows folded."""
    cutoff = now_ts - keep_raw_s
    numeric = [*PLAIN, "remap_pending", "remap_failed"]
    columns = ", ".join(numeric)
    aggregates = ", ".join(f"{'max' if c in LARGEST else 'avg'}({c})" for c in numeric)
    with db.atomic():
        folded = db.execute(
            "select count(*) from gpu_samples where resolution = 'raw' and at_ts < ?", [cutoff]
        ).fetchone()[0]
        db.execute(
            f"insert into gpu_samples (uuid, at_ts, resolution, {columns}, clock_events) "
            f"select uuid, cast(at_ts / 60 as integer) * 60.0, '1m', {aggregates}, "
            "group_concat(distinct clock_events) "
            "from gpu_samples where resolution = 'raw' and at_ts < ? "
            "group by uuid, cast(at_ts / 60 as integer)",
            [cutoff],
        )
        db.execute("delete from gpu_samples where resolution = 'raw' and at_ts < ?", [cutoff])
        db.execute("delete from gpu_samples where at_ts < ?", [now_ts - keep_s])
        db.execute("delete from gpu_xids where at_ts < ?", [now_ts - keep_s])
    return int(folded)


def record_energy(db: Database, row: dict[str, Any]) -> None:
    db.table("run_energy").insert(row, replace=True)

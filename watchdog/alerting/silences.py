"""Silences from the CLI and maintenance windows from config: alerts are recorded, not sent."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlite_utils import Database

from watchdog.alerting.settings import Maintenance
from watchdog.runtime.clock import rfc3339
from watchdog.runtime.scheduler import in_window


@dataclass(frozen=True)
class Silence:
    id: int
    endpoint: str
    kind: str
    starts_at: str
    ends_at: str
    reason: str
    created_by: str


def add(db: Database, endpoint: str, kind: str, seconds: float, reason: str, now: datetime) -> int:
    ends = now + timedelta(seconds=seconds)
    with db.atomic():
        table = db.table("silences")
        table.insert(
            {
                "endpoint": endpoint,
                "kind": kind,
                "starts_at": rfc3339(now),
                "ends_at": rfc3339(ends),
                "ends_ts": ends.timestamp(),
                "reason": reason,
                "created_by": _user(),
                "created_at": rfc3339(now),
            }
        )
        assert table.last_pk is not None
        return int(table.last_pk)


def _user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for this uid, e.g. a DynamicUser service
        return "unknown"


def remove(db: Database, silence_id: int, now: datetime) -> bool:
    with db.atomic():
        rows = db.execute(
            "update silences set removed_at = ? where id = ? and removed_at is null",
            (rfc3339(now), silence_id),
        )
        return bool(rows.rowcount)


def active(db: Database, now: datetime) -> list[Silence]:
    rows = db.query(
        "select * from silences where removed_at is null and ends_ts > ? order by id",
        (now.timestamp(),),
    )
    return [_silence(r) for r in rows]


def _silence(r: dict[str, Any]) -> Silence:
    return Silence(
        r["id"],
        r["endpoint"],
        r["kind"] or "",
        r["starts_at"],
        r["ends_at"],
        r["reason"],
        r["created_by"],
    )


def why_quiet(
    endpoint: str, kind: str, now: datetime, silences: list[Silence], windows: list[Maintenance]
) -> str | None:
    """The reason an alert is not sent now, or None. Pure: takes `now`."""
    for s in silences:
        if s.endpoint in (endpoint, "*") and s.kind in ("", kind):
            return f"silenced until {s.ends_at} by {s.created_by}: {s.reason}"
    for w in windows:
        if (not w.endpoints or endpoint in w.endpoints) and in_window(
            w.cron, w.timezone, w.duration, now
        ):
            return f"maintenance window ({w.cron} {w.timezone}, {w.duration:g}s): {w.reason}"
    return None

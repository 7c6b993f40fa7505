"""The durable outbox: notifications wait in SQLite until Slack has them, across crashes."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from watchdog.runtime.clock import rfc3339

BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 600.0
GIVE_UP_AFTER_S = 24 * 3600.0


@dataclass(frozen=True)
class Row:
    id: int
    key: str
    incident: str
    endpoint: str
    kind: str
    event: str
    facts: dict[str, Any]
    attempts: int
    created_at: str


def enqueue(
    db: Database, key: str, event: str, facts: dict[str, Any], deliver: bool, now: datetime
) -> None:
    """Insert once per key: replaying the same transition never queues a second page."""
    db.table("outbox").insert(
        {
            "key": key,
            "incident": facts["incident"],
            "endpoint": facts["endpoint"],
            "kind": facts["kind"],
            "event": event,
            "facts": json.dumps(facts, sort_keys=True),
            "status": "pending" if deliver else "suppressed",
            "attempts": 0,
            "next_attempt_ts": now.timestamp(),
            "created_at": rfc3339(now),
        },
        ignore=True,
    )


def due(db: Database, now: datetime, limit: int = 20) -> list[Row]:
    """Pending rows whose time has come, oldest first; an incident's pages go out in order."""
    sql = """
        select * from outbox o
        where o.status = 'pending' and o.next_attempt_ts <= ?
          and not exists (
            select 1 from outbox e where e.incident = o.incident and e.id < o.id
              and e.status in ('pending', 'sending'))
        order by o.id limit ?"""
    return [_row(r) for r in db.query(sql, (now.timestamp(), limit))]


def _row(r: dict[str, Any]) -> Row:
    return Row(
        r["id"],
        r["key"],
        r["incident"],
        r["endpoint"],
        r["kind"],
        r["event"],
        json.loads(r["facts"]),
        r["attempts"],
        r["created_at"],
    )


def in_flight(db: Database) -> list[Row]:
    """Rows a crash left between 'sending' and a verdict."""
    return [_row(r) for r in db.query("select * from outbox where status = 'sending'")]


def pending_count(db: Database) -> int:
    row = next(db.query("select count(*) as n from outbox where status in ('pending', 'sending')"))
    return int(row["n"])


def thread_of(db: Database, incident: str) -> str | None:
    """The Slack ts of the incident's firing page, once it is sent."""
    rows = db.query(
        "select ts from outbox where incident = ? and event = 'firing' and status = 'sent' "
        "and ts is not null order by id limit 1",
        (incident,),
    )
    return next((r["ts"] for r in rows), None)


def mark(db: Database, row_id: int, **fields: Any) -> None:
    with db.atomic():
        db.table("outbox").update(row_id, fields)


def backoff(attempts: int, retry_after_s: float | None, rng: random.Random) -> float:
    """Seconds to wait: Slack's Retry-After when given, else exponential with full jitter."""
    if retry_after_s is not None:
        return retry_after_s + rng.uniform(0, 1)
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return rng.uniform(ceiling / 2, ceiling)

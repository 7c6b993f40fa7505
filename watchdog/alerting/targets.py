"""What a router may read of each endpoint: ok, degraded or down. It rests on the alert state,
so one failed run does not flap it, and names the run it rests on.

`down`: a kind that says there are no good answers fires (unreachable, timeout, HTTP errors,
broken answers, healthy but not serving). `degraded`: it answers, but a kind that says the
answers are wrong, slow, drifted or off the GPU fires. `unknown`: no run stored yet."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from watchdog.alerting.kinds import KINDS
from watchdog.store import endmost_result

# The gauge mlops_watchdog_endpoint_state; `unknown` has no value.
VALUES = {"ok": 0, "degraded": 1, "down": 2}


@dataclass(frozen=True)
class Target:
    endpoint: str
    state: str  # ok | degraded | down | unknown
    since: str | None  # when it entered this state, as far as the alert state tells
    alerts: tuple[str, ...] = ()  # the firing kinds that make it so
    last_error_class: str | None = None  # of the run it rests on
    run_id: str | None = None
    run_at: str | None = None

    def ready(self, strict: bool = False) -> bool:
        """Send it traffic? Degraded answers still answer, unless `strict`; an endpoint not
        probed yet fails open (a starting watchdog must not empty a router)."""
        return self.state == "ok" or (not strict and self.state in ("degraded", "unknown"))

    def to_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "state": self.state,
            "since": self.since,
            "alerts": list(self.alerts),
            "last_error_class": self.last_error_class,
            "run": {"id": self.run_id, "at": self.run_at} if self.run_id else None,
        }


def firing(db: Database) -> dict[str, tuple[str, str | None, tuple[str, ...]]]:
    """Per endpoint with an alert that says something of its serving: its state, since when
    (the earliest of those alerts), and their kinds. One query, for every endpoint."""
    found: dict[str, dict[str, list[tuple[str, str | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in db.query("select endpoint, kind, since from alerts where state = 'firing'"):
        kind = KINDS.get(r["kind"])
        if kind is not None and kind.serving:
            found[r["endpoint"]][kind.serving].append((r["kind"], r["since"]))
    out = {}
    for endpoint, by_state in found.items():
        state = "down" if "down" in by_state else "degraded"
        kinds = sorted(by_state[state])
        since = min((s for _, s in kinds if s), default=None)
        out[endpoint] = (state, since, tuple(k for k, _ in kinds))
    return out


def target(db: Database, endpoint: str) -> Target:
    last = endmost_result(db, endpoint, "run_id, started_at")
    if last is None:
        return Target(endpoint, "unknown", None)
    error = next(
        db.query(
            "select error_class from results where run_id = ? and error_class is not null "
            "group by error_class order by count(*) desc limit 1",
            [last["run_id"]],
        ),
        None,
    )
    state, since, kinds = firing(db).get(endpoint, ("ok", None, ()))
    if state == "ok":  # since its last alert resolved, or its first stored run
        since = next(
            db.query(
                "select max(created_at) as at from outbox where endpoint = ? and "
                "event = 'resolved'",
                [endpoint],
            )
        )["at"]
        if since is None:
            first = endmost_result(db, endpoint, "started_at", newest=False)
            since = first["started_at"] if first else None
    return Target(
        endpoint,
        state,
        since,
        kinds,
        error["error_class"] if error else None,
        last["run_id"],
        last["started_at"],
    )

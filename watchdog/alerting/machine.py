"""The alert state machine per (endpoint, kind): OK → PENDING → FIRING → RESOLVED. Pure."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from watchdog.alerting.kinds import Observation

OK, PENDING, FIRING = "ok", "pending", "firing"


@dataclass(frozen=True)
class Policy:
    failure_threshold: int = 3
    success_threshold: int = 2
    remind_every_s: float = 4 * 3600.0


@dataclass(frozen=True)
class State:
    state: str = OK
    failures: int = 0  # consecutive failing runs
    successes: int = 0  # consecutive fine runs while firing
    since: datetime | None = None  # first failure of this streak
    incident: str | None = None  # set while firing; names the incident in keys and threads
    notified_at: datetime | None = None  # last firing or reminder, sent or suppressed
    firing_sent: bool = False  # the firing page went out (was not silenced)


CLEAR = State()  # no alert: shared, as most kinds of most endpoints are in it after most runs


@dataclass(frozen=True)
class Event:
    name: str  # "firing" | "reminder" | "resolved"
    deliver: bool  # False: recorded in the outbox as suppressed, never sent


def step(
    state: State,
    observation: Observation | None,
    now: datetime,
    policy: Policy,
    silenced: bool,
    incident_prefix: str,
) -> tuple[State, list[Event]]:
    """Advance one probe run. No observation (no evidence either way) changes nothing."""
    if observation is None:
        return state, []
    if observation.failing:
        return _fail(state, now, policy, silenced, incident_prefix)
    return _succeed(state, policy)


def _fail(
    s: State, now: datetime, policy: Policy, silenced: bool, prefix: str
) -> tuple[State, list[Event]]:
    if s.state != FIRING:
        s = replace(s, failures=s.failures + 1, since=s.since or now, successes=0)
        if s.failures < policy.failure_threshold:
            return replace(s, state=PENDING), []
        incident = f"{prefix}:{s.since.strftime('%Y%m%dT%H%M%SZ') if s.since else 'x'}"
        fired = replace(
            s, state=FIRING, incident=incident, notified_at=now, firing_sent=not silenced
        )
        return fired, [Event("firing", deliver=not silenced)]
    s = replace(s, failures=s.failures + 1, successes=0)
    if not s.firing_sent and not silenced:  # a silence or maintenance window ended mid-incident
        return replace(s, firing_sent=True, notified_at=now), [Event("firing", deliver=True)]
    due = s.notified_at is None or (now - s.notified_at).total_seconds() >= policy.remind_every_s
    if s.firing_sent and due:
        return replace(s, notified_at=now), [Event("reminder", deliver=not silenced)]
    return s, []


def _succeed(s: State, policy: Policy) -> tuple[State, list[Event]]:
    if s.state != FIRING:
        return CLEAR, []
    s = replace(s, successes=s.successes + 1)
    if s.successes < policy.success_threshold:
        return s, []
    # A page nobody received needs no "resolved" either; the outbox still records it.
    return CLEAR, [Event("resolved", deliver=s.firing_sent)]

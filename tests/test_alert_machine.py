"""The alert state machine, golden-tested as tables of probe runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from watchdog.alerting.kinds import Observation
from watchdog.alerting.machine import FIRING, OK, PENDING, Policy, State, step

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FAIL = Observation(True, "connect refused", "connect")
FINE = Observation(False, "5/5 answered")
POLICY = Policy(failure_threshold=3, success_threshold=2, remind_every_s=3600)

# Each row: minutes since T0, observation (None: no evidence), silenced, expected state, events.
INCIDENT = [
    (0, FAIL, False, PENDING, []),
    (1, FAIL, False, PENDING, []),
    (2, FAIL, False, FIRING, ["firing"]),
    (3, FAIL, False, FIRING, []),
    (4, None, False, FIRING, []),
    (5, FINE, False, FIRING, []),
    (6, FAIL, False, FIRING, []),  # a relapse resets the success count
    (7, FINE, False, FIRING, []),
    (8, FINE, False, OK, ["resolved"]),
]
FLAP = [
    (0, FAIL, False, PENDING, []),
    (1, FAIL, False, PENDING, []),
    (2, FINE, False, OK, []),
    (3, FAIL, False, PENDING, []),
]
REMINDERS = [
    (0, FAIL, False, PENDING, []),
    (1, FAIL, False, PENDING, []),
    (2, FAIL, False, FIRING, ["firing"]),
    (61, FAIL, False, FIRING, []),
    (62, FAIL, False, FIRING, ["reminder"]),
    (63, FAIL, False, FIRING, []),
    (122, FAIL, False, FIRING, ["reminder"]),
]
SILENCED_THROUGHOUT = [  # recorded, never delivered, and no orphan "resolved"
    (0, FAIL, True, PENDING, []),
    (1, FAIL, True, PENDING, []),
    (2, FAIL, True, FIRING, ["firing (recorded)"]),
    (70, FAIL, True, FIRING, []),
    (71, FINE, True, FIRING, []),
    (72, FINE, True, OK, ["resolved (recorded)"]),
]
SILENCE_ENDS_MID_INCIDENT = [
    (0, FAIL, True, PENDING, []),
    (1, FAIL, True, PENDING, []),
    (2, FAIL, True, FIRING, ["firing (recorded)"]),
    (3, FAIL, False, FIRING, ["firing"]),  # the page goes out once the silence is over
    (4, FINE, False, FIRING, []),
    (5, FINE, False, OK, ["resolved"]),
]


@pytest.mark.parametrize(
    "table",
    [INCIDENT, FLAP, REMINDERS, SILENCED_THROUGHOUT, SILENCE_ENDS_MID_INCIDENT],
    ids=["incident", "flap", "reminders", "silenced-throughout", "silence-ends-mid-incident"],
)
def test_table(table: list[tuple[int, Observation | None, bool, str, list[str]]]) -> None:
    state = State()
    for minute, observation, silenced, expected_state, expected_events in table:
        now = T0 + timedelta(minutes=minute)
        state, events = step(state, observation, now, POLICY, silenced, "e:unreachable")
        shown = [e.name if e.deliver else f"{e.name} (recorded)" for e in events]
        assert (state.state, shown) == (expected_state, expected_events), f"minute {minute}"


def test_incident_is_named_after_its_first_failure() -> None:
    state = State()
    for minute in range(3):
        state, _ = step(state, FAIL, T0 + timedelta(minutes=minute), POLICY, False, "vllm:timeout")
    assert state.incident == "vllm:timeout:20261123T120000Z"
    assert state.since == T0 and state.failures == 3 and state.firing_sent


def test_threshold_of_one_fires_at_once() -> None:
    state, events = step(State(), FAIL, T0, Policy(1, 1, 60), False, "e:k")
    assert state.state == FIRING and [e.name for e in events] == ["firing"]
    state, events = step(state, FINE, T0, Policy(1, 1, 60), False, "e:k")
    assert state.state == OK and [e.name for e in events] == ["resolved"]

"""The alert state is read from the database once per subject and then kept in memory, which takes
in what a transaction wrote only once it has committed: a run whose transaction rolls back leaves
the state as the database has it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.test_alert_quiet import T0, result
from watchdog.alerting.alerter import Alerter
from watchdog.alerting.settings import Alerting
from watchdog.endpoint import Endpoint
from watchdog.result import ErrorClass
from watchdog.store import Store

ENDPOINT = Endpoint(name="e", api="openai-chat", base_url="http://127.0.0.1:1")


class Boom(Exception):
    pass


def stored(store: Store) -> dict[str, tuple[str, int]]:
    return {
        r["kind"]: (r["state"], r["failures"])
        for r in store.db.query("select kind, state, failures from alerts where endpoint = 'e'")
    }


def test_steady_runs_read_no_alert_state(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    alerter = Alerter(Alerting(failure_threshold=3), store)
    read: list[str] = []
    store.db.conn.set_trace_callback(lambda sql: read.append(sql) if "from alerts" in sql else None)
    for n in range(5):
        now = T0 + timedelta(seconds=n)
        with store.transaction():
            alerter.observe(ENDPOINT, [result(now)], now)
    assert len(read) == 1  # the first run's, for all of its kinds


def test_a_rolled_back_run_leaves_the_state_as_stored(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    alerter = Alerter(Alerting(failure_threshold=2, success_threshold=1), store, can_send=False)

    def run(n: int, error_class: ErrorClass | None = None, fail: bool = False) -> list[str]:
        now = T0 + timedelta(seconds=n)
        with store.transaction():
            queued = alerter.observe(ENDPOINT, [result(now, error_class)], now)
            if fail:
                raise Boom  # e.g. a later write of the same run failed
        return queued

    run(0, "connect")  # one failure of two
    with pytest.raises(Boom):
        run(1, "connect", fail=True)  # the second, rolled back: nothing fires
    assert stored(store)["unreachable"] == ("pending", 1)
    assert run(2) == []  # a fine run after one failure as stored: nothing to resolve
    assert stored(store)["unreachable"] == ("ok", 0)
    run(3, "connect")
    (firing,) = run(4, "connect")
    assert ":firing:" in firing and stored(store)["unreachable"] == ("firing", 2)


def test_outside_a_transaction_of_the_store_the_state_is_read_each_time(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    alerter = Alerter(Alerting(failure_threshold=2, success_threshold=1), store, can_send=False)
    with store.transaction():
        alerter.observe(ENDPOINT, [result(T0, "connect")], T0)
    with pytest.raises(Boom), store.db.atomic():  # not the store's: its end goes unheard
        (firing,) = alerter.observe(ENDPOINT, [result(T0, "connect")], T0)
        raise Boom
    assert stored(store)["unreachable"] == ("pending", 1)  # the firing was rolled back
    with store.transaction():  # read again: fires now, as the database says it has not
        (firing,) = alerter.observe(ENDPOINT, [result(T0, "connect")], T0)
    assert ":firing:" in firing and stored(store)["unreachable"] == ("firing", 2)
    with store.db.atomic():  # commits, unheard too: resolved
        (resolved,) = alerter.observe(ENDPOINT, [result(T0)], T0)
    assert ":resolved:" in resolved
    with store.transaction():  # a new incident, not the old one going on
        alerter.observe(ENDPOINT, [result(T0, "connect")], T0)
    assert stored(store)["unreachable"] == ("pending", 1)


def test_the_store_tells_once_the_outermost_transaction_has_ended(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    told: list[bool] = []
    assert not store.settles()
    with store.transaction():
        with store.transaction():  # a savepoint: nothing ends here
            store.when_settled(told.append)
        assert told == []
    assert told == [True]
    with pytest.raises(Boom), store.transaction():
        store.when_settled(told.append)
        raise Boom
    assert told == [True, False]
    with pytest.raises(RuntimeError):
        store.when_settled(told.append)

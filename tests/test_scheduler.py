"""Schedules are pure functions of `now`; the Scheduler never stacks runs and stops on time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from watchdog.runtime.scheduler import (
    Scheduler,
    check_cron,
    cron_trigger,
    crontab_weekdays,
    interval_trigger,
    next_run,
)


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("*/2", "sun,tue,thu,sat"),
        ("*", "*"),
        ("mon-fri", "mon-fri"),
        ("5-7", "fri,sat,sun"),
        ("1-5/2", "mon,wed,fri"),
    ],
)
def test_crontab_weekdays_count_sunday_as_zero(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


def test_cron_keeps_local_hour_across_dst() -> None:
    six_berlin = cron_trigger("0 6 * * *", "Europe/Berlin")
    # The night of 28/29 March 2026 moves Berlin from UTC+1 to UTC+2.
    assert next_run(six_berlin, datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(
        2026, 3, 29, 4, tzinfo=UTC
    )
    assert next_run(six_berlin, datetime(2026, 3, 27, 12, tzinfo=UTC)) == datetime(
        2026, 3, 28, 5, tzinfo=UTC
    )
    # And back on 25 October.
    assert next_run(six_berlin, datetime(2026, 10, 25, 1, tzinfo=UTC)) == datetime(
        2026, 10, 25, 5, tzinfo=UTC
    )


def test_weekday_cron_skips_the_weekend() -> None:
    saturday = datetime(2026, 3, 28, 12, tzinfo=UTC)
    assert next_run(cron_trigger("30 7 * * 1-5"), saturday) == datetime(
        2026, 3, 30, 7, 30, tzinfo=UTC
    )


@pytest.mark.parametrize("bad", ["61 * * * *", "* * *", "* * * * 9", "x * * * *"])
def test_check_cron_refuses_bad_lines(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression"):
        check_cron(bad)


async def test_stop_cancels_a_stuck_probe_and_never_overlaps() -> None:
    scheduler = Scheduler()
    started = asyncio.Event()
    runs = 0
    cancelled = False

    async def stuck() -> None:
        nonlocal runs, cancelled
        runs += 1
        started.set()
        try:
            await asyncio.Event().wait()  # an endpoint that never answers
        except asyncio.CancelledError:
            cancelled = True
            raise

    scheduler.every("stuck", stuck, 0.01, start=datetime.now(UTC))
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=5)
    assert scheduler.in_flight == 1
    await scheduler.stop(grace=0.05)
    assert cancelled and runs == 1 and scheduler.in_flight == 0


async def test_stop_lets_a_finishing_probe_finish() -> None:
    scheduler = Scheduler()
    release = asyncio.Event()
    started = asyncio.Event()
    finished = False

    async def slow() -> None:
        nonlocal finished
        started.set()
        await release.wait()
        finished = True

    scheduler.every("slow", slow, 3600, start=datetime.now(UTC))
    scheduler.start()
    await asyncio.wait_for(started.wait(), timeout=5)
    stopping = asyncio.create_task(scheduler.stop(grace=5))
    release.set()
    await stopping
    assert finished


def test_jitter_delays_each_run_without_slowing_the_interval() -> None:
    """Every 10 s with 5 s of jitter: each run falls within 5 s after its slot on the 10 s grid,
    so a thousand runs take 10,000 s, not the 12,500 s of APScheduler's own trigger."""
    start = datetime(2026, 12, 5, tzinfo=UTC)
    trigger = interval_trigger(10, jitter=5, start=start)
    fire = start
    for n in range(1, 1001):
        after = trigger.get_next_fire_time(fire, fire)
        assert after is not None
        fire = after
        late = (fire - start).total_seconds() - 10 * n
        assert 0 <= late <= 5, (n, late)


def test_a_jitter_longer_than_the_interval_still_keeps_its_runs() -> None:
    start = datetime(2026, 12, 5, tzinfo=UTC)
    trigger = interval_trigger(10, jitter=60, start=start)
    fire = start
    for _ in range(100):
        after = trigger.get_next_fire_time(fire, fire)
        assert after is not None and after > fire
        fire = after
    assert 990 <= (fire - start).total_seconds() <= 1010


def test_runs_start_on_ticks_and_keep_their_slots() -> None:
    """Each run starts on a 100 ms tick, no earlier than its slot on the grid and before the
    next one, even with a jitter of the whole interval: no slot is skipped or run twice."""
    start = datetime(2026, 12, 5, 0, 0, 0, 37_000, tzinfo=UTC)  # the grid is off the ticks
    for jitter in (None, 3.0, 10.0):
        trigger = interval_trigger(10, jitter=jitter, start=start)
        fire = start
        for n in range(1, 1001):
            after = trigger.get_next_fire_time(fire, fire)
            assert after is not None
            fire = after
            assert fire.microsecond % 100_000 == 0, fire
            late = (fire - start).total_seconds() - 10 * n
            assert 0 <= late < (jitter or 0) + 0.1 and late < 10, (jitter, n, late)


def test_an_interval_off_the_ticks_does_not_drift() -> None:
    """Every 1.05 s: each run is at most a tick after its slot, however many runs went before."""
    start = datetime(2026, 12, 5, tzinfo=UTC)
    trigger = interval_trigger(1.05, start=start)
    fire = start
    for n in range(1, 2001):
        after = trigger.get_next_fire_time(fire, fire)
        assert after is not None
        fire = after
        assert -1e-6 <= (fire - start).total_seconds() - 1.05 * n < 0.1


def test_an_interval_shorter_than_a_tick_runs_off_the_ticks() -> None:
    start = datetime(2026, 12, 5, 0, 0, 0, 3_000, tzinfo=UTC)
    trigger = interval_trigger(0.01, start=start)
    after = trigger.get_next_fire_time(start, start)
    assert after == start + timedelta(seconds=0.01)

"""APScheduler 3.x behind a small surface: one job per probe, no overlap, missed runs counted.

This is the only module that imports apscheduler.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("mlops_watchdog.scheduler")


def check_cron(expression: str) -> None:
    """Raise ValueError for a crontab line APScheduler would refuse."""
    try:
        cron_trigger(expression)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {expression!r}: {exc}") from None


TICK_S = 0.1  # runs start on these ticks: those due together cost one wakeup, not one each


class SteadyInterval(IntervalTrigger):
    """An interval whose runs keep the grid of `start_date` plus whole intervals, each up to
    `jitter` late, and start on the next 100 ms tick.

    APScheduler 3 counts each interval from the previous run's jittered time, so a probe every
    10 s with 5 s of jitter ran every 12.5 s on average, a fifth fewer runs than configured.

    On ticks, the runs due within the same 100 ms start together: the scheduler, the event loops
    and the probe thread wake once for all of them. At 100 runs a second that saved a fifth to a
    quarter of the daemon's CPU (bench/README.md, "Runs start together on 100 ms ticks"). Each
    run is timed by the kernel (probers/transport.py), so runs started together do not time each
    other's waits."""

    def __init__(self, tick: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tick_us = round(tick * 1e6)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:  # back to its slot on the grid: ticks never add up
            slots = max(0, (previous_fire_time - self.start_date) // self.interval)
            previous_fire_time = self.start_date + self.interval * slots
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        if fire is None or not self.tick_us:
            return fire
        us = round(fire.timestamp() * 1e6)
        on_tick = -(-us // self.tick_us) * self.tick_us
        return datetime.fromtimestamp(on_tick / 1e6, UTC)


def interval_trigger(
    seconds: float, jitter: float | None = None, start: datetime | None = None
) -> IntervalTrigger:
    """Every `seconds` from `start` (an interval from now by default), each run up to `jitter`
    late and on the next tick; a jitter of a whole interval or more spreads the runs over the
    whole interval. Intervals shorter than two ticks run off them."""
    tick = TICK_S if seconds >= 2 * TICK_S else 0.0
    # A run late by its jitter and then by its tick still falls before its next slot.
    spread = seconds - tick
    return SteadyInterval(
        tick,
        seconds=seconds,
        jitter=min(jitter, spread) if jitter else None,
        start_date=start,
        timezone=UTC,
    )


def cron_trigger(
    expression: str, timezone: str = "UTC", jitter: float | None = None
) -> CronTrigger:
    """A standard crontab line. Times resolve in `timezone`, so DST keeps the local hour."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {len(fields)}")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(weekday),
        timezone=ZoneInfo(timezone),
        jitter=int(jitter) if jitter else None,
    )


_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """Crontab weekday numbers (0 or 7 = Sunday) as names: APScheduler 3 counts 0 as Monday."""
    parts = []
    for part in field.split(","):
        base, _, step = part.partition("/")
        if not re.fullmatch(r"\*|\d+(-\d+)?", base):
            parts.append(part)  # names such as mon-fri mean the same to both
            continue
        if base == "*":
            first, last = 0, 6
        else:
            first_s, _, last_s = base.partition("-")
            first, last = int(first_s), int(last_s or (6 if step else first_s))
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last):
            raise ValueError(f"weekday {part!r} is out of range 0-7")
        if base == "*" and not step:
            parts.append("*")
            continue
        days = range(first, last + 1, int(step or 1))
        parts.append(",".join(dict.fromkeys(_DAYS[d % 7] for d in days)))
    return ",".join(parts)


def next_run(trigger: IntervalTrigger | CronTrigger, now: datetime) -> datetime | None:
    """When `trigger` fires next after `now`: pure, for tests and for `check` output."""
    fire: datetime | None = trigger.get_next_fire_time(None, now)
    return fire


def in_window(expression: str, timezone: str, duration_s: float, now: datetime) -> bool:
    """Whether `now` falls in a window that opens on each cron time and lasts `duration_s`.

    A window is open when a cron time falls in (now - duration, now]; computing in the
    window's own time zone keeps "02:00 for 2h" right across DST changes.
    """
    length = timedelta(seconds=duration_s)
    opened = next_run(cron_trigger(expression, timezone), now - length)
    return opened is not None and opened <= now < opened + length


class Scheduler:
    """Runs coroutine jobs on intervals or cron lines; a slow job is skipped, never stacked."""

    def __init__(
        self,
        on_late: Callable[[str, float], None] | None = None,
        on_missed: Callable[[str], None] | None = None,
    ) -> None:
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
        )
        self._scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        self._on_late = on_late
        self._on_missed = on_missed
        self._running: set[asyncio.Task[None]] = set()
        self.missed: Counter[str] = Counter()  # by job id: misfired or skipped (still running)

    def every(
        self,
        job_id: str,
        func: Callable[[], Awaitable[None]],
        seconds: float,
        *,
        jitter: float | None = None,
        misfire_grace: float = 30.0,
        start: datetime | None = None,
    ) -> None:
        self._add(job_id, func, interval_trigger(seconds, jitter, start), misfire_grace, start)

    def cron(
        self,
        job_id: str,
        func: Callable[[], Awaitable[None]],
        expression: str,
        *,
        timezone: str = "UTC",
        jitter: float | None = None,
        misfire_grace: float = 30.0,
    ) -> None:
        self._add(job_id, func, cron_trigger(expression, timezone, jitter), misfire_grace, None)

    def _add(
        self,
        job_id: str,
        func: Callable[[], Awaitable[None]],
        trigger: object,
        misfire_grace: float,
        start: datetime | None,
    ) -> None:
        async def tracked() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                await func()
            finally:
                self._running.discard(task)

        extra = {"next_run_time": start} if start is not None else {}
        self._scheduler.add_job(
            tracked,
            trigger,
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(misfire_grace)),
            **extra,
        )

    def remove(self, job_id: str) -> None:
        """Schedule no more runs of `job_id`; a run in progress finishes."""
        self._scheduler.remove_job(job_id)

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_ERROR:
            exc = getattr(event, "exception", None)
            log.error("job %s crashed: %r", event.job_id, exc, exc_info=exc)
            return
        self.missed[event.job_id] += 1
        if self._on_missed:
            self._on_missed(event.job_id)
        why = (
            "its previous run is still going"
            if event.code == EVENT_JOB_MAX_INSTANCES
            else "misfired"
        )
        log.warning("job %s skipped a run: %s", event.job_id, why)

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        if self._on_late and event.scheduled_run_times:
            late = (datetime.now(UTC) - event.scheduled_run_times[0]).total_seconds()
            self._on_late(event.job_id, max(0.0, late))

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running) and self._scheduler.state == 1  # STATE_RUNNING

    def start(self) -> None:
        self._scheduler.start()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def stop(self, grace: float) -> None:
        """Start nothing new, let running jobs finish for `grace` seconds, then cancel them."""
        if self._scheduler.running:
            self._scheduler.pause()
        if self._running:
            log.info("waiting up to %.0fs for %d running probe(s)", grace, len(self._running))
            await asyncio.wait(set(self._running), timeout=grace)
        leftover = [t for t in self._running if not t.done()]
        for task in leftover:
            task.cancel()
        if leftover:
            log.warning("cancelled %d probe(s) still running at shutdown", len(leftover))
            await asyncio.wait(leftover, timeout=1.0)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

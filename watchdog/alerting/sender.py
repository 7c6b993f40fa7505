"""Deliver queued pages: retry with backoff, honour Retry-After, never page twice for one key."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from datetime import timedelta
from typing import Any, Protocol

from watchdog.alerting import outbox
from watchdog.alerting.messages import Renderer, TemplateProblem
from watchdog.alerting.notifiers.slack import Delivery
from watchdog.runtime.clock import Clock, from_rfc3339, rfc3339
from watchdog.store import Store

log = logging.getLogger("mlops_watchdog.alerting")
IDLE_POLL_S = 5.0


class Notifier(Protocol):
    def send(
        self, message: dict[str, Any], *, key: str, thread_ts: str | None = None
    ) -> Delivery: ...

    def find_sent(self, key: str, thread_ts: str | None = None) -> str | None: ...


class Sender:
    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        renderer: Renderer,
        clock: Clock,
        rng: random.Random | None = None,
    ):
        self.store = store
        self.db = store.db
        self.notifier = notifier
        self.renderer = renderer
        self.clock = clock
        self.rng = rng or random.Random()
        self.results: Counter[str] = Counter()  # sent | retried | failed
        self.wake = asyncio.Event()

    async def recover(self) -> None:
        """Settle rows a crash left mid-send: found in Slack means sent, else send again."""
        for row in outbox.in_flight(self.db):
            # Reminders and resolved pages are thread replies: look for them in their thread.
            thread = None if row.event == "firing" else outbox.thread_of(self.db, row.incident)
            ts = await asyncio.to_thread(self.notifier.find_sent, row.key, thread)
            now = rfc3339(self.clock.now())
            if ts is not None:
                outbox.mark(self.db, row.id, status="sent", ts=ts, sent_at=now)
                log.info("page %s was delivered before the restart", row.key)
            else:
                when = self.clock.now().timestamp()
                outbox.mark(self.db, row.id, status="pending", next_attempt_ts=when)

    async def deliver_due(self) -> int:
        """Send every page that is due now; returns how many went out."""
        sent = 0
        for row in outbox.due(self.db, self.clock.now()):
            if await self._deliver(row):
                sent += 1
            else:  # keep an incident's pages in order: retry later, from the top
                break
        return sent

    async def _deliver(self, row: outbox.Row) -> bool:
        now = self.clock.now()
        try:
            message = self.renderer.render(row.facts)
        except TemplateProblem as exc:
            log.error("page %s not sent: %s", row.key, exc)
            outbox.mark(self.db, row.id, status="failed", last_error_class="template")
            self.results["failed"] += 1
            return True
        thread = None if row.event == "firing" else outbox.thread_of(self.db, row.incident)
        outbox.mark(self.db, row.id, status="sending", attempts=row.attempts + 1)
        delivery = await asyncio.to_thread(
            self.notifier.send, message, key=row.key, thread_ts=thread
        )
        if delivery.ok:
            outbox.mark(
                self.db, row.id, status="sent", ts=delivery.ts, sent_at=rfc3339(self.clock.now())
            )
            self.results["sent"] += 1
            log.info("page sent: %s %s %s", row.endpoint, row.kind, row.event)
            return True
        age = (now - from_rfc3339(row.created_at)).total_seconds()
        if delivery.permanent or age > outbox.GIVE_UP_AFTER_S:
            outbox.mark(self.db, row.id, status="failed", last_error_class=delivery.error_class)
            self.results["failed"] += 1
            log.error(
                "page for %s %s not delivered, giving up: slack %s",
                row.endpoint,
                row.kind,
                delivery.error_class,
            )
            return True
        wait = outbox.backoff(row.attempts + 1, delivery.retry_after_s, self.rng)
        outbox.mark(
            self.db,
            row.id,
            status="pending",
            last_error_class=delivery.error_class,
            next_attempt_ts=(now + timedelta(seconds=wait)).timestamp(),
        )
        self.results["retried"] += 1
        log.warning(
            "page for %s %s: slack %s, retry in %.0fs",
            row.endpoint,
            row.kind,
            delivery.error_class,
            wait,
        )
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop`; wakes when the alerter queues a page, or polls for retries."""
        await self.recover()
        while True:
            await self.deliver_due()
            if stop.is_set():
                return
            self.wake.clear()
            waiters = [asyncio.create_task(self.wake.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(waiters, timeout=IDLE_POLL_S, return_when=asyncio.FIRST_COMPLETED)
            for task in waiters:
                task.cancel()

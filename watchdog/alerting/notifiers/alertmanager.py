"""The daemon's own alerts, pushed to Alertmanager's v2 API (`alerting.route: alertmanager|both`).

As Prometheus does for its rules:
- every firing alert goes to every listed Alertmanager again each `resend_every`, with `endsAt`
  four resends ahead, so an alert that stops being sent (a dead watchdog) expires rather than
  staying up for ever;
- a resolved alert is sent with `endsAt` at its resolution, for 15 minutes.

Alertmanager then deduplicates (an HA pair pages once), groups, routes, silences and inhibits
these like any other alert. The daemon's own silences and maintenance windows still hold back
what it pushes. The alert state is read from SQLite at each push, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlite_utils import Database

from watchdog.alerting import silences
from watchdog.alerting.kinds import KINDS
from watchdog.alerting.settings import Alerting
from watchdog.runtime.clock import Clock, from_rfc3339, rfc3339

log = logging.getLogger("mlops_watchdog.alerting")
RESOLVED_FOR = timedelta(minutes=15)  # how long a resolution is repeated, as Prometheus does


class AlertmanagerPusher:
    def __init__(
        self, settings: Alerting, db: Database, client: httpx.AsyncClient, clock: Clock, node: str
    ):
        assert settings.alertmanager is not None
        self.settings = settings
        self.push_settings = settings.alertmanager
        self.db = db
        self.client = client
        self.clock = clock
        self.node = node
        self.results: Counter[str] = Counter()  # ok | failed, one per Alertmanager per push
        self.failing: dict[str, bool] = {}

    def alerts(self, now: datetime) -> list[dict[str, Any]]:
        """What to send now: every firing alert that is not held back, and recent resolutions."""
        quiet = silences.active(self.db, now)
        valid_until = now + 4 * timedelta(seconds=self.push_settings.resend_every)
        alerts = [
            self._alert(row["endpoint"], row["kind"], row["since"], row["summary"], valid_until)
            for row in self.db.query(
                "select endpoint, kind, since, summary from alerts where state = 'firing' "
                "order by endpoint, kind"
            )
            if silences.why_quiet(
                row["endpoint"], row["kind"], now, quiet, self.settings.maintenance
            )
            is None
        ]
        for row in self.db.query(
            "select facts, created_at from outbox where event = 'resolved' and created_at >= ? "
            "order by id",
            [rfc3339(now - RESOLVED_FOR)],
        ):
            facts = json.loads(row["facts"])
            if facts.get("kind") in KINDS and facts.get("since"):
                ended = from_rfc3339(row["created_at"])
                alert = self._alert(
                    facts["endpoint"], facts["kind"], facts["since"], facts.get("summary"), ended
                )
                alerts.append(alert)
        return alerts

    def _alert(
        self, subject: str, kind: str, since: str | None, summary: str | None, ends: datetime
    ) -> dict[str, Any]:
        about = "gpu" if KINDS[kind].gpu and subject.startswith("GPU-") else "endpoint"
        labels = {
            "alertname": KINDS[kind].alertname,
            "kind": kind,
            "severity": self.settings.severity.get(kind, KINDS[kind].severity),
            "node": self.node,
            about: subject,
            "source": "mlops-watchdog",  # pushed by the daemon, not evaluated by Prometheus
        }
        annotations = {
            "summary": f"{subject} on {self.node}: {KINDS[kind].title}",
            "description": summary or KINDS[kind].title,
            "runbook_url": self.settings.runbook(kind),
        }
        alert = {"labels": labels, "annotations": annotations, "endsAt": rfc3339(ends)}
        if since:
            alert["startsAt"] = since
        return alert

    async def push(self) -> None:
        """One round: the same alerts to every Alertmanager. A failure is counted and logged
        when it starts and when it ends, never raised: the next round sends everything again."""
        alerts = self.alerts(self.clock.now())
        if not alerts:
            return
        await asyncio.gather(*(self._post(url, alerts) for url in self.push_settings.urls))

    async def _post(self, url: str, alerts: list[dict[str, Any]]) -> None:
        where = httpx.URL(url).copy_with(username=None, password=None)  # no credentials in logs
        try:
            reply = await self.client.post(
                f"{url}/api/v2/alerts", json=alerts, timeout=self.push_settings.timeout_s
            )
            problem = None if reply.is_success else f"HTTP {reply.status_code}: {reply.text[:200]}"
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        self.results["failed" if problem else "ok"] += 1
        if problem and not self.failing.get(url):
            log.warning("alerts not pushed to Alertmanager %s: %s", where, problem)
        elif not problem and self.failing.get(url):
            log.info("alerts pushed to Alertmanager %s again", where)
        self.failing[url] = problem is not None

"""Prometheus metrics from the daemon's stored state, through a custom collector."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlite_utils import Database

from watchdog.alerting import outbox
from watchdog.alerting.kinds import KINDS

PREFIX = "mlops_watchdog_"
NOTIFICATION_RESULTS = ("sent", "retried", "failed", "suppressed")


class AlertingCollector(Collector):
    """Alert state and page delivery, read from SQLite at scrape time."""

    def __init__(
        self,
        db: Database,
        endpoints: Callable[[], list[str]],
        notifications: Callable[[], Mapping[str, int]],
    ):
        self.db = db
        self.endpoints = endpoints
        self.notifications = notifications

    def collect(self) -> Iterator[Metric]:
        firing = GaugeMetricFamily(
            PREFIX + "alerts_firing",
            "1 while an alert of this kind is firing for the endpoint.",
            labels=["endpoint", "kind"],
        )
        now_firing = {
            (r["endpoint"], r["kind"])
            for r in self.db.query("select endpoint, kind from alerts where state = 'firing'")
        }
        for endpoint in self.endpoints():
            for kind in KINDS:
                firing.add_metric([endpoint, kind], float((endpoint, kind) in now_firing))
        yield firing

        sent = CounterMetricFamily(
            PREFIX + "notifications",
            "Notification attempts by result; suppressed ones were silenced or had no notifier.",
            labels=["result"],
        )
        counts = dict(self.notifications())
        counts["suppressed"] = next(
            self.db.query("select count(*) as n from outbox where status = 'suppressed'")
        )["n"]
        for result in NOTIFICATION_RESULTS:
            sent.add_metric([result], float(counts.get(result, 0)))
        yield sent

        yield GaugeMetricFamily(
            PREFIX + "outbox_pending",
            "Pages queued in the outbox and not yet delivered.",
            value=float(outbox.pending_count(self.db)),
        )

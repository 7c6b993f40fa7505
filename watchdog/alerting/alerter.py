"""From a stored probe run to alert state and queued pages, inside the run's transaction."""

from __future__ import annotations

import logging
import socket
import urllib.parse
from dataclasses import asdict
from datetime import datetime
from typing import Any

from watchdog.alerting import outbox, silences
from watchdog.alerting.kinds import KINDS, Observation, observe
from watchdog.alerting.machine import CLEAR, FIRING, Event, Policy, State, step
from watchdog.alerting.settings import Alerting
from watchdog.endpoint import Endpoint, Slo
from watchdog.result import Change, Finding, ProbeResult, TierOutcome
from watchdog.runtime.clock import from_rfc3339, rfc3339
from watchdog.store import Held, Store

log = logging.getLogger("mlops_watchdog.alerting")

# What alert decisions and pages read and write: while the database file cannot be written, the
# daemon holds these in memory (Store.hold_in_memory), so that pages still go out.
STATE = (Held("alerts", ("endpoint", "kind")), Held("outbox", ("key",)))


Known = dict[str, tuple[State, str | None]]  # by kind: the state, and the summary stored with it


class Alerter:
    def __init__(
        self, settings: Alerting, store: Store, can_send: bool = True, node: str | None = None
    ):
        self.store, self.db = store, store.db
        # By subject: the alert states as committed, read from the database once. Only the
        # alerter writes them; what a transaction wrote joins them once it has committed.
        self.known: dict[str, Known] = {}
        self.unsettled: dict[str, Known] = {}  # written in the transaction still open
        self.node = node or socket.gethostname()
        self.no_sender = (
            "left to Alertmanager (alerting.route)"
            if settings.route == "alertmanager"
            else "no notifier configured (alerting.slack)"
        )
        self.can_send = can_send
        self.configure(settings)

    def configure(self, settings: Alerting) -> None:
        """New thresholds and routing (a reload); the alert state stays as it is."""
        self.settings = settings
        self.policy = Policy(
            settings.failure_threshold, settings.success_threshold, settings.remind_every
        )

    def _read(self, subject: str) -> Known:
        """The subject's alert states as stored: one query for all its kinds."""
        return {
            r["kind"]: (_state(r), r["summary"])
            for r in self.db.query("select * from alerts where endpoint = ?", [subject])
        }

    def _before(self, subject: str) -> Known:
        """The subject's alert states: as committed, plus what the open transaction wrote.
        Outside a transaction of the store, whose end the alerter cannot hear of, as stored."""
        if not self.store.settles():
            self.known.pop(subject, None)
            return self._read(subject)
        known = self.known.get(subject)
        if known is None:
            known = self.known[subject] = self._read(subject)
        unsettled = self.unsettled.get(subject)
        return {**known, **unsettled} if unsettled else known

    def _settled(self, committed: bool) -> None:
        unsettled, self.unsettled = self.unsettled, {}
        if committed:
            for subject, states in unsettled.items():
                self.known.setdefault(subject, {}).update(states)

    def observe(
        self,
        endpoint: Endpoint,
        results: list[ProbeResult],
        now: datetime,
        tiers: list[TierOutcome] | None = None,
    ) -> list[str]:
        """Advance every kind of this endpoint; call inside the transaction storing `results`.

        Returns the outbox keys it queued (sent or suppressed)."""
        seen = observe(results, endpoint.slo, tiers)
        return self._advance(endpoint.name, seen, now, endpoint)

    def observe_findings(
        self, kind: str, findings: list[Finding], now: datetime, endpoints: dict[str, Endpoint]
    ) -> list[str]:
        """Advance one GPU kind for each subject a detector spoke about: a GPU or an endpoint."""
        queued = []
        for f in findings:
            observation = Observation(f.failing, f.summary)
            queued += self._advance(f.subject, {kind: observation}, now, endpoints.get(f.subject))
        return queued

    def announce(self, change: Change, now: datetime) -> str:
        """Queue an informational message about a change: not an alert, no state."""
        quiet = silences.why_quiet(
            change.endpoint, "", now, silences.active(self.db, now), self.settings.maintenance
        )
        if quiet is None and not self.can_send:
            quiet = self.no_sender
        facts = {
            "event": "change",
            "node": self.node,
            "incident": f"{change.endpoint}:change:{change.after}",
            "endpoint": change.endpoint,
            "kind": "change",
            "change_kind": change.kind,
            "before": change.before,
            "after": change.after,
            "detail": change.detail,
            "at": change.at,
            "grafana_url": self._grafana(change.endpoint),
        }
        key = f"{facts['incident']}:{change.at}"
        outbox.enqueue(self.db, key, "change", facts, quiet is None, now)
        log.info("%s: %s change: %s", change.endpoint, change.kind, change.detail)
        return key

    def _advance(
        self,
        subject: str,
        observations: dict[str, Observation],
        now: datetime,
        endpoint: Endpoint | None,
    ) -> list[str]:
        quiet_silences: list[silences.Silence] | None = None
        states = self._before(subject)
        queued = []
        for kind, observation in observations.items():
            stored = states.get(kind)
            before = stored[0] if stored else CLEAR
            quiet = None
            # Whether it is quiet matters only to a failure (does it page?) and to a firing
            # alert (is its resolution sent?): a fine run of a fine kind reads no silences.
            if observation.failing or before.state == FIRING:
                if quiet_silences is None:
                    quiet_silences = silences.active(self.db, now)
                quiet = silences.why_quiet(
                    subject, kind, now, quiet_silences, self.settings.maintenance
                )
                if quiet is None and not self.can_send:
                    quiet = self.no_sender
            after, events = step(
                before, observation, now, self.policy, quiet is not None, f"{subject}:{kind}"
            )
            # A steady state is not written again at every run: `updated_at` is its last change.
            changed = after is not before and after != before
            if stored is None or changed or observation.summary != stored[1]:
                self._save(subject, kind, after, observation.summary, now)
            for event in events:
                facts = self.facts(
                    subject, endpoint, kind, before, after, event, observation, now, quiet
                )
                key = f"{facts['incident']}:{event.name}:{rfc3339(now)}"
                outbox.enqueue(self.db, key, event.name, facts, event.deliver, now)
                queued.append(key)
                how = "queued" if event.deliver else f"recorded, not sent: {quiet}"
                level = logging.INFO if event.name == "resolved" else logging.WARNING
                log.log(level, "%s %s: %s (%s)", subject, kind, event.name, how)
        return queued

    def facts(
        self,
        subject: str,
        endpoint: Endpoint | None,
        kind: str,
        before: State,
        after: State,
        event: Event,
        observation: Observation,
        now: datetime,
        quiet: str | None,
    ) -> dict[str, Any]:
        incident_state = after if after.state == FIRING else before
        since = incident_state.since
        grafana = self._grafana(endpoint.name) if endpoint is not None else None
        slo = endpoint.slo if endpoint is not None else Slo()
        return {
            "event": event.name,
            "node": self.node,
            "incident": incident_state.incident,
            "endpoint": subject,
            "scope": "gpu" if KINDS[kind].gpu else "endpoint",
            "kind": kind,
            "kind_title": KINDS[kind].title,
            "severity": self.settings.severity.get(kind, KINDS[kind].severity),
            "model": observation.model or (endpoint.model if endpoint else None),
            "failures": incident_state.failures,
            "since": rfc3339(since) if since else None,
            "at": rfc3339(now),
            "duration_s": (now - since).total_seconds() if since else None,
            "summary": observation.summary,
            "error_class": observation.error_class,
            "error_detail": observation.error_detail,
            "ttft_p50_s": observation.ttft_p50_s,
            "e2e_p50_s": observation.e2e_p50_s,
            "slo_ttft_s": slo.ttft_s,
            "slo_e2e_s": slo.e2e_s,
            "grafana_url": grafana,
            "runbook_url": self.settings.runbook(kind),
            "quiet": quiet,
        }

    def _grafana(self, endpoint: str) -> str | None:
        if not self.settings.grafana_url:
            return None
        separator = "&" if "?" in self.settings.grafana_url else "?"
        return f"{self.settings.grafana_url}{separator}var-endpoint={urllib.parse.quote(endpoint)}"

    def _save(self, endpoint: str, kind: str, s: State, summary: str, now: datetime) -> None:
        row: dict[str, Any] = {"endpoint": endpoint, "kind": kind}
        for name, value in asdict(s).items():
            row[name] = rfc3339(value) if isinstance(value, datetime) else value
        row["firing_sent"] = int(s.firing_sent)
        row["summary"] = summary
        row["updated_at"] = rfc3339(now)
        # Plain SQL, not Table.upsert: this runs for every kind after every probe run, and
        # sqlite-utils reads the table's columns each time.
        names = list(row)
        updates = ", ".join(f"{n} = excluded.{n}" for n in names[2:])
        self.db.execute(
            f"insert into alerts ({', '.join(names)}) values ({', '.join('?' * len(names))}) "
            f"on conflict (endpoint, kind) do update set {updates}",
            [row[n] for n in names],
        )
        if self.store.settles():
            if not self.unsettled:
                self.store.when_settled(self._settled)
            self.unsettled.setdefault(endpoint, {})[kind] = (s, summary)

    def firing(self) -> list[dict[str, Any]]:
        return list(
            self.db.query("select * from alerts where state = 'firing' order by endpoint, kind")
        )


def _state(r: dict[str, Any]) -> State:
    state = State(
        state=r["state"],
        failures=r["failures"],
        successes=r["successes"],
        since=_time(r["since"]),
        incident=r["incident"],
        notified_at=_time(r["notified_at"]),
        firing_sent=bool(r["firing_sent"]),
    )
    return CLEAR if state == CLEAR else state


def _time(value: str | None) -> datetime | None:
    return from_rfc3339(value) if value else None

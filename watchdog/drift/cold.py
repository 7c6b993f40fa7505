"""Cold starts. The first answer after a fingerprint change or an endpoint restart times the
loading (weights, CUDA graphs, caches), not the model, so it is flagged `cold` and kept out of
latency drift. An endpoint with `warmup: true` had an untimed request absorb that first."""

from __future__ import annotations

from dataclasses import dataclass

from watchdog.endpoint import Endpoint
from watchdog.result import Change, Run, ServerLoad


@dataclass(frozen=True)
class Seen:
    """What one run showed of its endpoint, for the next run to compare with: kept by
    `ColdStarts.remember` once the run is stored."""

    endpoint: str
    down: bool | None  # the run got no answer; None: it had no results
    load: ServerLoad | None  # the engine's metrics, when this run read them
    answered_unread: bool  # answered since the last engine metrics read


class ColdStarts:
    """Remembers, per endpoint, what the last run saw: whether it was answered, and the
    engine's own metrics (a process start time or counters that went down mean a restart)."""

    def __init__(self, down: dict[str, bool] | None = None):
        self.down: dict[str, bool] = dict(down or {})  # endpoint: its last run got no answer
        self.loads: dict[str, ServerLoad] = {}
        # Runs answered since the last engine metrics read (a fast probe reads them at most
        # every LOOK_EVERY_S): a restart found now may have had its first answer among them.
        self.answered_unread: dict[str, bool] = {}

    def flag(self, endpoint: Endpoint, run: Run, change: Change | None) -> str | None:
        """`judge` and `remember` at once, where nothing is stored in between."""
        reason, seen = self.judge(endpoint, run, change)
        self.remember(seen)
        return reason

    def judge(self, endpoint: Endpoint, run: Run, change: Change | None) -> tuple[str | None, Seen]:
        """Mark the run's first answer cold when it follows a change or a restart: the reason,
        and what the run showed, to `remember` once the run is stored."""
        name = endpoint.name
        previous = self.loads.get(name)
        answered = [r for r in run.results if r.answer.error_class is None]
        restart = run.load.restarted_since(previous) if run.load and previous else None
        unread = self.answered_unread.get(name, False)
        if run.load is not None:
            if unread:
                restart = None  # its first answer came in a run between the two reads
            unread = False
        elif answered:
            unread = True
        seen = Seen(name, not answered if run.results else None, run.load, unread)
        reason = None
        if change is not None and change.kind == "fingerprint":
            reason = f"first answer after a fingerprint change ({change.detail})"
        elif restart:
            reason = f"first answer after the engine restarted ({restart})"
        elif self.down.get(name):
            reason = "first answer after the endpoint was down"
        if reason is None or not answered or endpoint.warmup:
            return None, seen
        answered[0].cold_reason = reason
        return reason, seen

    def remember(self, seen: Seen) -> None:
        if seen.load is not None:
            self.loads[seen.endpoint] = seen.load
        self.answered_unread[seen.endpoint] = seen.answered_unread
        if seen.down is not None:
            self.down[seen.endpoint] = seen.down

"""Cold starts. The first answer after a fingerprint change or an endpoint restart times the
loading (weights, CUDA graphs, caches), not the model, so it is flagged `cold` and kept out of
latency drift. An endpoint with `warmup: true` had an untimed request absorb that first."""

from __future__ import annotations

from watchdog.endpoint import Endpoint
from watchdog.result import Change, Run, ServerLoad


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
        """Mark the run's first answer cold when it follows a change or a restart; the reason."""
        name = endpoint.name
        previous = self.loads.get(name)
        answered = [r for r in run.results if r.answer.error_class is None]
        restart = run.load.restarted_since(previous) if run.load and previous else None
        if run.load is not None:
            self.loads[name] = run.load
            if self.answered_unread.pop(name, False):
                restart = None  # its first answer came in a run between the two reads
        elif answered:
            self.answered_unread[name] = True
        reason = None
        if change is not None and change.kind == "fingerprint":
            reason = f"first answer after a fingerprint change ({change.detail})"
        elif restart:
            reason = f"first answer after the engine restarted ({restart})"
        elif self.down.get(name):
            reason = "first answer after the endpoint was down"
        if run.results:
            self.down[name] = not answered
        if reason is None or not answered or endpoint.warmup:
            return None
        answered[0].cold_reason = reason
        return reason

"""One probe run into the database, the same way for `run`, `once` and `baseline record`: its
results, readiness tiers and engine load, the change event it shows, and the cold flag of its
first answer. What it teaches in memory is kept only once the transaction has committed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from watchdog.drift import changes
from watchdog.drift.cold import ColdStarts, Seen
from watchdog.endpoint import Endpoint
from watchdog.result import Change, Run
from watchdog.store import Store


@dataclass(frozen=True)
class Recorded:
    """What storing one run found: a change event, and why its first answer is cold."""

    change: Change | None
    cold_reason: str | None
    seen: Seen
    identity: str | None  # the digest of what answered; None when nothing did


class Recorder:
    def __init__(self, store: Store, cold: ColdStarts):
        self.store, self.cold = store, cold
        # By endpoint: the digest of what answered at its last stored run. A run that shows the
        # same is no change, without reading the stored identity back at every run.
        self.identities: dict[str, str] = {}

    @classmethod
    def of(cls, store: Store, endpoints: Iterable[str]) -> Recorder:
        """A recorder that knows which endpoints were down at their last stored run."""
        return cls(store, ColdStarts({name: store.last_run_unanswered(name) for name in endpoints}))

    def record(self, endpoint: Endpoint, run: Run, now: datetime) -> Recorded:
        """Store the run; inside the caller's transaction, or in one of its own. Call
        `committed` with what it returns once that transaction has committed."""
        with self.store.within():
            answered = any(r.answer.error_class is None for r in run.results)
            identity = changes.identity_of(run.identity, run.results)
            digest = changes.digest(identity) if answered else None
            same = digest is not None and self.identities.get(endpoint.name) == digest
            change = (
                None
                if same
                else changes.observe(self.store.db, endpoint.name, identity, answered, now)
            )
            cold_reason, seen = self.cold.judge(endpoint, run, change)
            self.store.record_run(
                run.run_id, run.results, run.identity, run.tier_rows(), run.load_row()
            )
        return Recorded(change, cold_reason, seen, digest)

    def committed(self, recorded: Recorded) -> None:
        self.cold.remember(recorded.seen)
        if recorded.identity is not None:
            self.identities[recorded.seen.endpoint] = recorded.identity

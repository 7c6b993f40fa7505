"""While the database cannot be written (a full disk, most often): the runs wait in memory, in a
bounded spool, and are written when space comes back. The outage is logged once when it starts,
at most once a minute while it lasts, and once when it clears; /metrics counts every failed
write."""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from watchdog.result import Run

log = logging.getLogger("mlops_watchdog.store")

SPOOL_RUNS = 5_000  # at two endpoints probed every second, 40 minutes
SPOOL_BYTES = 64 * 2**20
LOG_EVERY_S = 60.0


@dataclass(frozen=True)
class Waiting:
    """A run that could not be written: its endpoint, when it was decided on, its size."""

    endpoint: str
    run: Run
    at: datetime
    size: int


def size_of(run: Run) -> int:
    """About what the run holds in memory: its results as JSON, and its look."""
    held = [r.to_json() for r in run.results], run.identity, [t.to_json() for t in run.tiers]
    return len(json.dumps(held, default=str)) + 1024


class Spool:
    """The runs waiting for the database, oldest first. Over `max_runs` or `max_bytes`, the
    oldest go first, and are counted."""

    def __init__(self, max_runs: int = SPOOL_RUNS, max_bytes: int = SPOOL_BYTES):
        self.max_runs, self.max_bytes = max_runs, max_bytes
        self.runs: deque[Waiting] = deque()
        self.bytes = 0
        self.dropped = 0  # since the daemon started

    def __len__(self) -> int:
        return len(self.runs)

    def add(self, endpoint: str, run: Run, at: datetime) -> None:
        waiting = Waiting(endpoint, run, at, size_of(run))
        self.runs.append(waiting)
        self.bytes += waiting.size
        while len(self.runs) > self.max_runs or (self.bytes > self.max_bytes and self.runs):
            self.bytes -= self.runs.popleft().size
            self.dropped += 1

    def oldest(self, n: int) -> list[Waiting]:
        return [self.runs[i] for i in range(min(n, len(self.runs)))]

    def written(self, runs: list[Waiting]) -> None:
        """Those runs are in the database now (their transaction committed)."""
        for waiting in runs:
            if self.runs and self.runs[0] is waiting:  # not dropped while it was being written
                self.bytes -= self.runs.popleft().size


class Outage:
    """Says that the database cannot be written, without flooding the log: once when it starts,
    then at most once a minute with what happened since, then once when it clears."""

    def __init__(self, path: str, spool: Spool):
        self.path, self.spool = path, spool
        self.failures = 0  # failed writes since the daemon started: /metrics
        self.since: float | None = None  # monotonic start of the current outage
        self.told_at = 0.0
        self.failed_since_told = 0
        self.dropped_before = 0
        self.written = 0  # waiting runs stored since the outage began

    @property
    def on(self) -> bool:
        return self.since is not None

    def failed(self, what: str, error: Exception, now: float) -> None:
        self.failures += 1
        self.failed_since_told += 1
        if self.since is None:
            self.since, self.told_at, self.failed_since_told = now, now, 0
            self.dropped_before, self.written = self.spool.dropped, 0
            log.error(
                "%s; runs wait in memory (up to %d runs, %d MiB) until it can be written, and "
                "alerts keep paging",
                error,
                self.spool.max_runs,
                self.spool.max_bytes // 2**20,
            )
        elif now - self.told_at >= LOG_EVERY_S:
            log.error(
                "%s still cannot be written (%s): %d failed write(s) in the last %.0f s, "
                "%d run(s) waiting in memory, %d dropped",
                self.path,
                what,
                self.failed_since_told,
                now - self.told_at,
                len(self.spool),
                self.spool.dropped - self.dropped_before,
            )
            self.told_at, self.failed_since_told = now, 0

    def stored(self, runs: int) -> None:
        """Runs that waited are in the database now."""
        self.written += runs

    def cleared(self, now: float) -> None:
        if self.since is None:
            return
        log.warning(
            "%s is written again after %.0f s: %d waiting run(s) stored, %d dropped",
            self.path,
            now - self.since,
            self.written,
            self.spool.dropped - self.dropped_before,
        )
        self.since = None

"""Drift as the daemon follows it: when each endpoint × golden set is compared with its baseline,
the latest signals, and the endpoint's drift alert. Comparing writes (a baseline may be made);
what it learns is kept only once the run's transaction has committed (`remember`)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlite_utils import Database

from watchdog.drift import baselines, changes
from watchdog.drift.baselines import BaselinePolicy
from watchdog.drift.compare import DriftSettings
from watchdog.result import Finding, Signal

# A drift window is 20 runs: comparing after each run of a probe every second only costs CPU.
# About once a minute per pair says the same.
COMPARE_EVERY_S = 60.0


def due(endpoint: str, golden_set: str, runs: int, interval_s: float) -> bool:
    """Whether the pair's run number `runs` (from 0) is compared: its first, then about once
    a minute, each pair at its own place in the minute. Counted alike for every pair, a
    thousand endpoints started together all compared within the same ten seconds, and the
    runs due meanwhile waited for seconds."""
    every = max(1, round(COMPARE_EVERY_S / interval_s))
    place = zlib.crc32(f"{endpoint}\0{golden_set}".encode()) % every
    return runs == 0 or (runs + place) % every == 0


@dataclass(frozen=True)
class Compared:
    """One run's turn of an endpoint × golden set: counted, and compared when it was due."""

    endpoint: str
    golden_set: str
    runs: int  # runs seen since the daemon started, this one included
    signals: tuple[Signal, ...] | None  # None: not due for a comparison
    baseline_made: int | None = None


class DriftWatch:
    def __init__(self, settings: DriftSettings, policy: BaselinePolicy):
        self.settings, self.policy = settings, policy
        self.runs: dict[tuple[str, str], int] = {}  # (endpoint, golden set): runs seen, from 0
        self.signals: dict[tuple[str, str, str], Signal] = {}  # (endpoint, golden set, signal)

    def configure(self, settings: DriftSettings, policy: BaselinePolicy) -> None:
        self.settings, self.policy = settings, policy

    def keep_only(self, endpoints: Iterable[str]) -> None:
        """Forget the pairs of endpoints no longer probed (a reload)."""
        wanted = set(endpoints)
        self.signals = {k: v for k, v in self.signals.items() if k[0] in wanted}
        self.runs = {k: v for k, v in self.runs.items() if k[0] in wanted}

    def compare(
        self, db: Database, endpoint: str, golden_set: str, now: datetime, interval_s: float
    ) -> Compared:
        """Refresh the pair's baseline and compare, when due; call inside the run's
        transaction."""
        runs = self.runs.get((endpoint, golden_set), -1) + 1
        if not due(endpoint, golden_set, runs, interval_s):
            return Compared(endpoint, golden_set, runs, None)
        made = baselines.maintain(db, endpoint, golden_set, self.policy, now)
        signals = baselines.drift(db, endpoint, golden_set, self.settings)
        return Compared(endpoint, golden_set, runs, tuple(signals), made)

    def finding(self, db: Database, compared: Compared, now: datetime) -> Finding | None:
        """The endpoint's drift alert after this comparison: failing while any signal of any
        golden set drifts, with the nearest preceding change named as the likely cause; no
        evidence while all are inconclusive (or nothing was compared)."""
        if compared.signals is None:
            return None
        current = {
            **{k: s for k, s in self.signals.items() if k[0] == compared.endpoint},
            **{(s.endpoint, s.golden_set, s.signal): s for s in compared.signals},
        }
        signals = [s for _, s in sorted(current.items())]
        drifted = [s for s in signals if s.status == "drift"]
        endpoint = compared.endpoint
        if not drifted:
            if all(s.status == "inconclusive" for s in signals):
                return None
            return Finding(endpoint, False, f"{len(signals)} drift signal(s) within the baseline")
        parts = [f"{s.golden_set} {s.signal}: {s.detail}" for s in drifted]
        cause = changes.before(db, endpoint, now.timestamp())
        if cause is not None:
            parts.append(f"likely cause: the {cause.kind} change at {cause.at} ({cause.detail})")
        return Finding(endpoint, True, "; ".join(parts))

    def remember(self, compared: Compared) -> None:
        """What the committed run taught: its count, and its signals when it was compared."""
        self.runs[(compared.endpoint, compared.golden_set)] = compared.runs
        for s in compared.signals or ():
            self.signals[(s.endpoint, s.golden_set, s.signal)] = s

"""Time as a dependency: wall-clock for records, monotonic for durations. Tests pass a fake."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.perf_counter()


def rfc3339(moment: datetime, timespec: str = "auto") -> str:
    """A UTC time as stored and shown everywhere: `2026-03-02T10:14:00Z`."""
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def from_rfc3339(text: str) -> datetime:
    """The inverse of `rfc3339`: a stored time back as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))

"""The `storage:` and `retention:` config sections: where results go and how long they stay."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from watchdog.parsing.fields import Seconds
from watchdog.parsing.validate import Strict


class Storage(Strict):
    """Where results, reports and the answers' text are kept."""

    path: str = "/var/lib/mlops-watchdog/watchdog.db"
    """The SQLite database of results, alert state, baselines and GPU samples, relative to the
    config file. Put it on a local disk the daemon may write; moving it starts an empty history.
    While it cannot be written (a full disk), runs wait in memory, up to 5,000 runs or 64 MiB,
    and alerts keep paging."""
    csv_dir: str = "/var/lib/mlops-watchdog/reports"
    """Folder, relative to the config file, where the daemon refreshes `health-24h.csv` and
    `daily-24h.html`, and where `mlops-watchdog report` writes by default."""
    responses: Literal["full", "excerpt", "hash"] = "excerpt"
    """How much of each model answer is stored: `full`, `excerpt` (the first `excerpt_chars`
    characters) or `hash` (no model text at all, for PII; output drift then stays inconclusive)."""
    excerpt_chars: int = Field(200, ge=0, le=10000)
    """Characters kept of each answer with `responses: excerpt`. Raise it to see more of a failed
    answer in reports; lower it to keep less text."""
    report_every: Seconds = 900.0
    """How often the daemon rewrites the health CSV and the daily HTML report."""


class Retention(Strict):
    """How long results are kept, and how large the database may grow before it warns."""

    raw_days: float = Field(14, gt=0)
    """Days every result is kept as recorded (those of an active or pinned drift baseline stay
    longer). Lower it to keep the database smaller; raise it to look further back in detail."""
    rollup_days: float = Field(400, gt=0)
    """Days the hourly rollups per endpoint, golden set and prompt (counts, error classes, TTFT and
    e2e p50/p95) are kept."""
    max_db_bytes: int = Field(2_000_000_000, gt=0)
    """Database size in bytes past which the daemon logs a warning (the size is always exported as
    `mlops_watchdog_database_size_bytes`). Set it below the free space of its disk."""
    every: Seconds = 3600.0
    """How often results are rolled up and pruned and freed pages are returned by incremental
    vacuum."""

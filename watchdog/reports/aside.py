"""The daemon's periodic reports, written by a child process on a read-only connection.

At a thousand endpoints the health CSV and the daily HTML page take seconds of pandas work.
On the event loop, every run due meanwhile was late by as long; in a thread, Python's global
lock gave the loop no better (pandas holds it through long stretches of C). A process of its
own runs beside the daemon, on another core where there is one, and the daemon only waits for
it to exit. The child reads no config and holds no secret: it is told the database, the folder,
the pairs, the drift settings and the time, on its standard input.

    python -m watchdog.reports.aside < job.json
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from watchdog.drift.compare import DriftSettings
from watchdog.reports.daily import write_daily
from watchdog.reports.health import health_since, write_csv
from watchdog.runtime.clock import from_rfc3339, rfc3339
from watchdog.store import Store, StoreError

WINDOW = timedelta(hours=24)
HEALTH, DAILY = "health-24h.csv", "daily-24h.html"


class ReportFailed(Exception):
    """The child could not write the reports; the message says why, from its last words."""


def write_reports(
    store: Store,
    pairs: Sequence[tuple[str, str]],
    drift: DriftSettings,
    now: datetime,
    folder: Path,
) -> Path:
    """The health CSV and the daily HTML report of the 24 h before `now`, in `folder`."""
    out = folder / HEALTH
    write_csv(health_since(store, (now - WINDOW).timestamp()), out)
    write_daily(store, pairs, drift, now, folder / DAILY)
    return out


async def write_aside(
    database: str,
    pairs: Sequence[tuple[str, str]],
    drift: DriftSettings,
    now: datetime,
    folder: Path,
) -> Path:
    """`write_reports` in a child process; returns when it has exited."""
    job = {
        "database": database,
        "pairs": [list(p) for p in pairs],
        "drift": drift.model_dump(mode="json"),
        "now": rfc3339(now),
        "folder": str(folder),
    }
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await child.communicate(json.dumps(job).encode())
    if child.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ReportFailed(f"the report process exited with {child.returncode}: {last[0]}")
    return Path(out.decode().strip())


def main() -> int:
    job = json.load(sys.stdin)
    try:
        store = Store.reading(job["database"])
    except StoreError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        out = write_reports(
            store,
            [(e, g) for e, g in job["pairs"]],
            DriftSettings.model_validate(job["drift"]),
            from_rfc3339(job["now"]),
            Path(job["folder"]),
        )
    except (OSError, StoreError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        store.close()
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

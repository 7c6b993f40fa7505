"""The status page: what each endpoint is doing, from the database, as self-contained HTML."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlite_utils import Database

from watchdog.reports.svg import seconds, sparkline
from watchdog.runtime.clock import rfc3339

SPARK_POINTS = 40
WINDOW_S = 24 * 3600


@dataclass
class EndpointStatus:
    name: str
    base_url: str
    state: str  # ok | failing | firing | unknown
    runs: int = 0
    pass_rate: float | None = None
    last_at: str | None = None
    last_ok: bool | None = None
    last_error: str | None = None
    e2e_p50_s: float | None = None
    firing: list[str] = field(default_factory=list)
    e2e_recent: list[float] = field(default_factory=list)


def collect(db: Database, endpoints: dict[str, str], now: datetime) -> list[EndpointStatus]:
    """One row per configured endpoint, from the last 24 hours of results and the alert table."""
    since = now.timestamp() - WINDOW_S
    out = []
    for name, base_url in sorted(endpoints.items()):
        rows = list(
            db.query(
                "select ok, prompt_id, error_class, error_detail, checks, e2e_s, started_at from results "
                "where endpoint = ? and started_ts >= ? order by started_ts",
                (name, since),
            )
        )
        firing = [
            r["kind"]
            for r in db.query(
                "select kind from alerts where endpoint = ? and state = 'firing' order by kind",
                (name,),
            )
        ]
        status = EndpointStatus(name, base_url, "unknown", firing=firing)
        if rows:
            last = rows[-1]
            answered = sorted(r["e2e_s"] for r in rows if r["e2e_s"] is not None and r["ok"])
            status.runs = len(rows)
            status.pass_rate = sum(r["ok"] for r in rows) / len(rows)
            status.last_at, status.last_ok = last["started_at"][:19] + "Z", bool(last["ok"])
            status.last_error = None if last["ok"] else _why(last)
            status.e2e_p50_s = answered[len(answered) // 2] if answered else None
            status.e2e_recent = [r["e2e_s"] for r in rows if r["e2e_s"] is not None][-SPARK_POINTS:]
            status.state = "ok" if last["ok"] else "failing"
        if firing:
            status.state = "firing"
        out.append(status)
    return out


def _why(row: dict[str, Any]) -> str:
    detail = row["error_detail"]
    if not detail and row["checks"]:
        failed = [c for c in json.loads(row["checks"]) if not c["ok"]]
        detail = "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
    return f"{row['prompt_id']}: {row['error_class']}: {detail or ''}"


def render(statuses: list[EndpointStatus], now: datetime, version: str, node: str = "") -> str:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["seconds"] = seconds
    env.globals["sparkline"] = lambda values: jinja2.utils.markupsafe.Markup(sparkline(values))
    return env.get_template("status.html.j2").render(
        endpoints=statuses,
        now=rfc3339(now, "seconds"),
        version=version,
        node=node,
    )

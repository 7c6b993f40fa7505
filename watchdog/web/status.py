"""The status page: what each endpoint and GPU is doing, from the database, as one HTML page."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlite_utils import Database

from watchdog.alerting import targets
from watchdog.alerting.kinds import KINDS
from watchdog.gpu.rows import iso
from watchdog.reports.svg import seconds, sparkline
from watchdog.runtime.clock import rfc3339

SPARK_POINTS = 40
WINDOW_S = 24 * 3600


@dataclass
class Alert:
    kind: str
    title: str
    since: str
    summary: str
    runbook: str


@dataclass
class Prompt:
    """The latest result of one golden prompt on one endpoint."""

    prompt_id: str
    golden_set: str
    ok: bool
    at: str
    why: str | None  # error class and detail, or the failed checks


@dataclass
class EndpointStatus:
    name: str
    base_url: str
    state: str  # ok | failing | firing | unknown
    serving: str = "unknown"  # what /targets/<name>/ready tells routers: ok | degraded | down
    runs: int = 0
    pass_rate: float | None = None
    last_at: str | None = None
    ttft_p50_s: float | None = None
    e2e_p50_s: float | None = None
    alerts: list[Alert] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    e2e_recent: list[float] = field(default_factory=list)


@dataclass
class GpuStatus:
    """A GPU seen in the window, from its latest sample."""

    index: int
    name: str
    uuid: str
    at: str
    util: float | None
    memory_used: int | None
    memory_total: int | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class Page:
    endpoints: list[EndpointStatus]
    gpus: list[GpuStatus]


def collect(
    db: Database, endpoints: dict[str, str], now: datetime, runbook: Callable[[str], str]
) -> Page:
    """Per configured endpoint and per GPU, from the last 24 hours; `runbook` gives a kind's URL.

    One query per table, whatever the number of endpoints and prompts: the page refreshes every
    30 s, and a day at one probe a second is 86,400 results."""
    since = now.timestamp() - WINDOW_S
    alerts = defaultdict(list)
    for r in db.query(
        "select endpoint, kind, since, summary from alerts where state = 'firing' "
        "order by endpoint, kind"
    ):
        kind = KINDS.get(r["kind"])
        title = kind.title if kind else r["kind"]
        alert = Alert(r["kind"], title, _second(r["since"]), r["summary"] or "", runbook(r["kind"]))
        alerts[r["endpoint"]].append(alert)
    serving = targets.firing(db)
    statuses = {
        name: EndpointStatus(name, base_url, "unknown", alerts=alerts[name])
        for name, base_url in sorted(endpoints.items())
    }
    latest: dict[tuple[str, str, str], int] = {}
    answered: dict[str, list[tuple[float | None, float]]] = defaultdict(list)
    passed: dict[str, int] = defaultdict(int)
    for id_, name, golden_set, prompt_id, ok, ttft, e2e in db.execute(
        "select id, endpoint, golden_set, prompt_id, ok, ttft_s, e2e_s from results "
        "where started_ts >= ? order by started_ts",
        [since],
    ):
        status = statuses.get(name)
        if status is None:  # no longer configured
            continue
        status.runs += 1
        passed[name] += ok
        latest[name, golden_set, prompt_id] = id_
        if e2e is not None:
            status.e2e_recent.append(e2e)
            if ok:
                answered[name].append((ttft, e2e))
    for r in db.query(
        "select id, endpoint, golden_set, prompt_id, ok, error_class, error_detail, checks, "
        "started_at from results where id in (select value from json_each(?)) "
        "order by endpoint, golden_set, prompt_id",
        [json.dumps(list(latest.values()))],
    ):
        at = _second(r["started_at"])
        why = None if r["ok"] else _why(r)
        prompt = Prompt(r["prompt_id"], r["golden_set"], bool(r["ok"]), at, why)
        statuses[r["endpoint"]].prompts.append(prompt)
    for status in statuses.values():
        if status.runs:
            status.pass_rate = passed[status.name] / status.runs
            status.last_at = max(p.at for p in status.prompts)
            status.ttft_p50_s = _median([t for t, _ in answered[status.name]])
            status.e2e_p50_s = _median([e for _, e in answered[status.name]])
            status.e2e_recent = status.e2e_recent[-SPARK_POINTS:]
            status.state = "ok" if all(p.ok for p in status.prompts) else "failing"
        if status.alerts:
            status.state = "firing"
        status.serving = serving.get(status.name, ("ok",))[0] if status.runs else "unknown"
    return Page(list(statuses.values()), _gpus(db, since, alerts))


def _gpus(db: Database, since: float, alerts: dict[str, list[Alert]]) -> list[GpuStatus]:
    return [
        GpuStatus(
            r["gpu_index"],
            r["name"],
            r["uuid"],
            iso(r["at_ts"]),
            r["util_gpu"],
            r["memory_used"],
            r["memory_total"],
            r["temperature_c"],
            r["power_w"],
            r["power_limit_w"],
            alerts.get(r["uuid"], []),
        )
        for r in db.query(
            "select g.gpu_index, g.name, g.uuid, s.at_ts, s.util_gpu, s.memory_used, "
            "s.memory_total, s.temperature_c, s.power_w, s.power_limit_w "
            "from gpus g join gpu_samples s on s.id = "
            "(select id from gpu_samples where uuid = g.uuid order by at_ts desc limit 1) "
            "where g.last_seen_ts >= ? order by g.gpu_index, g.uuid",
            [since],
        )
    ]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _second(text: str | None) -> str:
    """A stored RFC 3339 time to the second."""
    return f"{text[:19]}Z" if text else ""


def _why(row: dict[str, Any]) -> str:
    detail = row["error_detail"]
    if not detail and row["checks"]:
        failed = [c for c in json.loads(row["checks"]) if not c["ok"]]
        detail = "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
    return f"{row['error_class']}: {detail or ''}"


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


def render(page: Page, now: datetime, version: str, node: str = "") -> str:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["seconds"] = seconds
    env.filters["gib"] = _gib
    env.globals["sparkline"] = lambda values: jinja2.utils.markupsafe.Markup(sparkline(values))
    return env.get_template("status.html.j2").render(
        endpoints=page.endpoints,
        gpus=page.gpus,
        now=rfc3339(now, "seconds"),
        version=version,
        node=node,
    )

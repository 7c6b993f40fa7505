"""The daily report as one self-contained HTML page: latency, pass rates and drift per endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import jinja2
import pandas as pd
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from watchdog.drift import baselines, changes
from watchdog.drift.compare import SIGNALS, DriftSettings
from watchdog.reports import svg, tally
from watchdog.reports.tally import Tally
from watchdog.result import Change, Signal
from watchdog.store import Store

WINDOW = timedelta(hours=24)
TITLE = "mlops-watchdog daily report"
MAX_PROMPTS = 5  # failing prompts named per error class; the CSV report lists every prompt
# What the page reads of each raw result (and tally.COUNTED, for the hours it counts).
READS = ("ttft_s", "e2e_s", "fingerprint")
_WORST_FIRST = ("drift", "inconclusive", "ok")
P50, P95 = "#2563eb", "#7c3aed"
PASS_CHART_HEIGHT = 120  # a share needs less height than a latency to read


@dataclass(frozen=True)
class ErrorSeen:
    error_class: str
    runs: int
    prompts: list[str]  # the first MAX_PROMPTS, sorted
    more_prompts: int


@dataclass(frozen=True)
class EndpointDay:
    name: str
    runs: int
    pass_rate: float | None
    errors: list[ErrorSeen]
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    fingerprints: list[str]
    drift: str | None  # the worst status of its signals
    latency_chart: Markup  # empty without runs
    pass_chart: Markup


def write_daily(
    store: Store,
    pairs: Sequence[tuple[str, str]],
    settings: DriftSettings,
    now: datetime,
    out: Path,
) -> Path:
    """The self-contained HTML report of the last 24 h of `pairs` (endpoint, golden set):
    latency, pass rates, drift, changes. Written whole: a reader never sees half a page.
    Runs, passes and errors of the hours retention has rolled up come from their rollups;
    latency and fingerprints from the raw results (see tally.py)."""
    end = now.astimezone(UTC)
    since = (end - WINDOW).timestamp()
    signals = [s for e, g in pairs for s in baselines.drift(store.db, e, g, settings)]
    counted = tally.from_store(store, since, end.timestamp(), READS)
    page = _render(counted, signals, changes.recent(store.db, since), end, TITLE)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_suffix(".tmp")
    temporary.write_text(page, encoding="utf-8")
    temporary.replace(out)
    return out


def render_daily(
    results: pd.DataFrame,
    signals: list[Signal],
    changes: list[Change],
    now: datetime,
    title: str = TITLE,
) -> str:
    """The page for the 24 hours up to `now`, from `Store.results_since(now - 24h)`."""
    end = now.astimezone(UTC)
    within = results
    if "started_ts" in results:
        started = pd.to_numeric(results["started_ts"], errors="coerce")
        within = results[started.between((end - WINDOW).timestamp(), end.timestamp())]
    return _render(tally.from_results(within), signals, changes, end, title)


def _render(
    counted: Tally, signals: list[Signal], changes: list[Change], end: datetime, title: str
) -> str:
    plot = svg.Plot((end - WINDOW).timestamp(), end.timestamp())
    counts = counted.counts
    names = sorted(
        set(counts["endpoint"]) | {s.endpoint for s in signals} | {c.endpoint for c in changes}
    )
    raw = counted.raw[counted.raw["key"] >= 0]
    raw = raw.assign(endpoint=counted.keys["endpoint"].to_numpy()[raw["key"]] if len(raw) else [])
    days = [_day(name, counted, raw, signals, plot) for name in names]
    order = {name: i for i, name in enumerate(SIGNALS)}
    runs, passed = int(counts["answers"].sum()), int(counts["ok"].sum())
    template = _environment().get_template("daily.html.j2")
    return template.render(
        title=title,
        start=_when(end - WINDOW),
        end=_when(end),
        endpoints=days,
        runs=runs,
        pass_rate=passed / runs if runs else None,
        drifting=sum(s.status == "drift" for s in signals),
        signals=sorted(
            signals, key=lambda s: (s.endpoint, s.golden_set, order.get(s.signal, len(order)))
        ),
        changes=sorted(changes, key=lambda c: (c.at, c.endpoint)),
    )


def _day(
    name: str, counted: Tally, raw: pd.DataFrame, signals: list[Signal], plot: svg.Plot
) -> EndpointDay:
    counts = counted.counts[counted.counts["endpoint"] == name]
    g = raw[raw["endpoint"] == name]
    answered = g[g["answered"]]
    hourly = counts.groupby("hour_ts", sort=True)[["ok", "answers"]].sum()
    shares = [
        svg.Share(float(cast(float, h)), int(r["ok"]), int(r["answers"]))
        for h, r in hourly.iterrows()
    ]
    latency: dict[str, list[tuple[float, float]]] = {"p50": [], "p95": []}
    hours = answered["started_ts"] // svg.HOUR_S * svg.HOUR_S
    for key, e2e in answered["e2e_s"].groupby(hours, sort=True):
        hour, e2e = cast(float, key), e2e.dropna()
        if len(e2e):
            latency["p50"].append((hour, float(e2e.quantile(0.5))))
            latency["p95"].append((hour, float(e2e.quantile(0.95))))
    runs, passed = int(counts["answers"].sum()), int(counts["ok"].sum())
    statuses = {s.status for s in signals if s.endpoint == name}
    return EndpointDay(
        name=name,
        runs=runs,
        pass_rate=passed / runs if runs else None,
        errors=_errors(counted.errors[counted.errors["endpoint"] == name]),
        ttft_p50_s=_quantile(answered["ttft_s"], 0.5),
        ttft_p95_s=_quantile(answered["ttft_s"], 0.95),
        e2e_p50_s=_quantile(answered["e2e_s"], 0.5),
        e2e_p95_s=_quantile(answered["e2e_s"], 0.95),
        fingerprints=sorted(g["fingerprint"].dropna().unique()) if "fingerprint" in g else [],
        drift=next((s for s in _WORST_FIRST if s in statuses), None),
        latency_chart=svg.hourly_lines(
            plot,
            [
                svg.Line("p50", latency["p50"], P50),
                svg.Line("p95", latency["p95"], P95, dash="5 3"),
            ],
            f"{name}: e2e latency p50 and p95 per hour",
        )
        if latency["p50"]
        else Markup(""),
        pass_chart=svg.hourly_shares(
            replace(plot, height=PASS_CHART_HEIGHT), shares, f"{name}: pass rate per hour"
        )
        if shares
        else Markup(""),
    )


def _errors(errors: pd.DataFrame) -> list[ErrorSeen]:
    """Each error class seen (tally.ERRORS rows of one endpoint), most runs first."""
    out = []
    for error_class, e in errors.groupby("error_class", sort=True):
        prompts = sorted(e["prompt_id"].astype(str).unique())
        out.append(
            ErrorSeen(
                str(error_class),
                int(e["n"].sum()),
                prompts[:MAX_PROMPTS],
                len(prompts[MAX_PROMPTS:]),
            )
        )
    return sorted(out, key=lambda e: -e.runs)


def _quantile(values: pd.Series, q: float) -> float | None:
    value = values.quantile(q) if len(values) else None
    return None if value is None or pd.isna(value) else float(value)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _percent(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.0f}%" if value in (0, 1) else f"{value * 100:.1f}%"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _environment() -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["seconds"] = svg.seconds
    env.filters["percent"] = _percent
    env.filters["score"] = _score
    return env

"""Prometheus metrics: the daemon's probe results and stored alert state, via custom collectors."""

from __future__ import annotations

import bisect
import copy
import itertools
import platform
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from sqlite_utils import Database

from watchdog import __version__
from watchdog.alerting import outbox, targets
from watchdog.alerting.kinds import KINDS, PROBE_KINDS, leaked
from watchdog.drift.compare import STATUS_VALUE
from watchdog.endpoint import Endpoint
from watchdog.probers.server_metrics import EXPORTED
from watchdog.result import ERROR_CLASSES, Change, ProbeResult, ServerLoad, Signal, TierOutcome
from watchdog.store.spool import Outage
from watchdog.web.families import Fast, Histograms, Keyed

PREFIX = "mlops_watchdog_"
# Latency of LLM requests: 10 ms to 2 min.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
# Gaps between tokens are milliseconds apart: finer at the low end.
ITL_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1,
)
WORK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
PROBE_RESULTS = ("ok", "check_failed", "error")
# The GPU alert kinds about a GPU (or the host's GPU count) rather than an endpoint.
GPU_SUBJECT_KINDS = [k for k, kind in KINDS.items() if kind.gpu and k != "gpu_idle_while_serving"]
NOTIFICATION_RESULTS = ("sent", "retried", "failed", "suppressed")


@dataclass
class Histogram:
    """Cumulative bucket counts, exported by the collector (no per-sample metric objects)."""

    bounds: tuple[float, ...]  # sorted
    counts: list[int] = field(default_factory=list)  # per bucket; cumulated on export
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.bounds, value)  # the first bound with value <= bound
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def buckets(self) -> list[tuple[str, float]]:
        cumulative = itertools.accumulate(self.counts)
        out = [(_bound(b), float(c)) for b, c in zip(self.bounds, cumulative, strict=True)]
        return [*out, ("+Inf", float(self.n))]


def _bound(value: float) -> str:
    return repr(float(value))


class ProbeMetrics:
    """What the daemon has seen since it started; fed once per stored probe run."""

    def __init__(self, endpoints: Mapping[str, Endpoint], prompts: Mapping[str, Iterable[str]]):
        self.endpoints = endpoints
        self.success: dict[tuple[str, str], float] = {}
        self.check_ratio: dict[tuple[str, str], float] = {}
        self.tokens_per_s: dict[tuple[str, str], float] = {}
        self.accuracy: dict[tuple[str, str], float] = {}
        self.results: dict[tuple[str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, dict[tuple[str, str], Histogram]] = defaultdict(dict)
        self.fingerprints: dict[str, tuple[str, str, float]] = {}  # endpoint: (fp, model, since)
        self.last_cycle: float | None = None
        self.lateness = Histogram(LATENCY_BUCKETS)
        self.missed: dict[str, int] = defaultdict(int)
        self.write = Histogram(WORK_BUCKETS)
        self.changes: dict[tuple[str, str], int] = defaultdict(int)  # (endpoint, kind)
        self.canary_leaks: dict[str, int] = {}
        self.tiers: dict[tuple[str, str], TierOutcome] = {}  # (endpoint, tier)
        self.loads: dict[str, ServerLoad | None] = {}  # None: the last read failed
        # endpoint: until when its engine values count as current (Unix seconds)
        self.loads_until: dict[str, float] = {}
        self.db_bytes: int | None = None  # the database with its WAL, after retention
        self.outage: Outage | None = None  # failed writes, and the runs waiting for the database
        self.adopt(endpoints, prompts)

    def adopt(
        self, endpoints: Mapping[str, Endpoint], prompts: Mapping[str, Iterable[str]]
    ) -> None:
        """Follow a (re)loaded config: each endpoint and its prompt ids. Series that can be known
        up front exist at zero from the start, and those no longer probed go."""
        self.endpoints = endpoints
        wanted = set(endpoints)
        probed = {(endpoint, prompt_id) for endpoint, ids in prompts.items() for prompt_id in ids}
        for series in (self.success, self.check_ratio, self.tokens_per_s):
            for key in [k for k in series if k not in probed]:
                del series[key]
        for by_prompt in self.latency.values():
            for key in [k for k in by_prompt if k not in probed]:
                del by_prompt[key]
        for keyed in (self.accuracy, self.results, self.errors, self.changes, self.tiers):
            for key in [k for k in keyed if k[0] not in wanted]:
                del keyed[key]
        for flat in (self.fingerprints, self.missed, self.canary_leaks, self.loads):
            for name in [k for k in flat if k not in wanted]:
                del flat[name]
        for endpoint in endpoints:
            for error_class in ERROR_CLASSES:
                self.errors.setdefault((endpoint, error_class), 0)
            for result in PROBE_RESULTS:
                self.results.setdefault((endpoint, result), 0)
            self.missed.setdefault(endpoint, 0)
            self.canary_leaks.setdefault(endpoint, 0)
            for kind in ("fingerprint", "template"):
                self.changes.setdefault((endpoint, kind), 0)
        for endpoint, prompt_id in probed:
            self._histograms(endpoint, prompt_id)

    def _histograms(self, endpoint: str, prompt_id: str) -> None:
        key = (endpoint, prompt_id)
        for name in ("ttfb", "ttft", "e2e"):
            self.latency[name].setdefault(key, Histogram(LATENCY_BUCKETS))
        self.latency["itl"].setdefault(key, Histogram(ITL_BUCKETS))

    def observe_run(self, results: Iterable[ProbeResult], finished_at: float) -> None:
        by_golden: dict[tuple[str, str], list[ProbeResult]] = defaultdict(list)
        for r in results:
            key = (r.endpoint, r.prompt_id)
            a = r.answer
            self.success[key] = float(r.ok)
            outcome = (
                "ok" if r.ok else ("check_failed" if r.error_class == "check_failed" else "error")
            )
            self.results[(r.endpoint, outcome)] += 1
            if r.error_class:
                self.errors[(r.endpoint, r.error_class)] += 1
            if leaked(r):
                self.canary_leaks[r.endpoint] = self.canary_leaks.get(r.endpoint, 0) + 1
            if r.checks:
                self.check_ratio[key] = sum(c.ok for c in r.checks) / len(r.checks)
            if a.tokens_per_s is not None:
                self.tokens_per_s[key] = a.tokens_per_s
            self._histograms(*key)
            if a.error_class is None:  # latency of answers only: failures are timed by their class
                for name, value in (("ttfb", a.ttfb_s), ("ttft", a.ttft_s), ("e2e", a.e2e_s)):
                    if value is not None:
                        self.latency[name][key].observe(value)
                for gap in a.itl_s:
                    self.latency["itl"][key].observe(gap)
            by_golden[(r.endpoint, r.golden_set)].append(r)
            # `since` moves only on a change event: an endpoint probed with two golden sets has
            # two fingerprints, and taking turns is not a change.
            since = self.fingerprints.get(r.endpoint, ("", "", finished_at))[2]
            self.fingerprints[r.endpoint] = (r.fingerprint, a.model or "", since)
        for key, group in by_golden.items():
            answered = [r for r in group if r.answer.error_class is None]
            if answered:
                self.accuracy[key] = sum(r.ok for r in answered) / len(answered)
        self.last_cycle = finished_at

    def observe_serving(
        self,
        endpoint: str,
        tiers: Iterable[TierOutcome],
        load: ServerLoad | None,
        load_error: str | None,
        at: float = 0.0,
        current_for: float = float("inf"),
    ) -> None:
        """The run's liveness, readiness and completion, and the engine's own metrics, read at
        `at` and current for `current_for` seconds: past that (a frozen engine whose runs
        hang), they are left out rather than shown as if read just now."""
        for t in tiers:
            self.tiers[(endpoint, t.tier)] = t
        if load is not None or load_error is not None:
            self.loads[endpoint] = load
            self.loads_until[endpoint] = at + current_for

    def changed(self, change: Change, at: float) -> None:
        """A change event, once the run that found it is stored."""
        self.changes[(change.endpoint, change.kind)] += 1
        fingerprint, model, _ = self.fingerprints.get(change.endpoint, ("", "", at))
        self.fingerprints[change.endpoint] = (fingerprint, model, at)

    def remember_fingerprint(
        self, endpoint: str, fingerprint: str, model: str, since: float
    ) -> None:
        """Seed from the database at start, so a restart is not mistaken for a change."""
        self.fingerprints[endpoint] = (fingerprint, model, since)


class ProbeCollector(Collector):
    def __init__(
        self,
        metrics: ProbeMetrics,
        drift: Callable[[], Mapping[tuple[str, str, str], Signal]] = dict,
        now: Callable[[], float] = lambda: 0.0,
    ):
        self.m = metrics
        self.drift = drift  # (endpoint, golden set, signal): the latest signal
        self.now = now  # Unix seconds: engine values past their time are left out

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield InfoMetricFamily(
            PREFIX + "build",
            "mlops-watchdog version and Python.",
            value={"version": __version__, "python": platform.python_version()},
        )
        yield _gauge(
            "probe_success",
            "1 if the last probe of this prompt passed, else 0.",
            ["endpoint", "prompt_id"],
            m.success,
        )
        yield _counter(
            "probes",
            "Probes by result: ok, check_failed or error.",
            ["endpoint", "result"],
            m.results,
        )
        yield _counter(
            "probe_errors", "Failed probes by error class.", ["endpoint", "class"], m.errors
        )
        yield _gauge(
            "check_pass_ratio",
            "Share of the prompt's checks that passed, last probe.",
            ["endpoint", "prompt_id"],
            m.check_ratio,
        )
        yield _gauge(
            "format_accuracy_ratio",
            "Share of answered prompts whose checks all passed, last run.",
            ["endpoint", "golden_set"],
            m.accuracy,
        )
        yield _gauge(
            "probe_output_tokens_per_second",
            "Decode speed of the last answer (1/TPOT).",
            ["endpoint", "prompt_id"],
            m.tokens_per_s,
        )
        help_text = {
            "ttfb": "Time to the response headers.",
            "ttft": "Time to the first content token.",
            "e2e": "Time to the end of the answer.",
            "itl": "Gaps between content chunks.",
        }
        for name, series in m.latency.items():
            yield Histograms(
                f"{PREFIX}probe_{name}_seconds",
                help_text[name],
                ["endpoint", "prompt_id"],
                [(labels, h.buckets(), h.total) for labels, h in sorted(series.items())],
            )
        info = GaugeMetricFamily(
            PREFIX + "fingerprint_info",
            "What answers: 1 for the current fingerprint.",
            labels=["endpoint", "fingerprint", "model"],
        )
        change = GaugeMetricFamily(
            PREFIX + "fingerprint_change_timestamp_seconds",
            "When the current fingerprint was first seen.",
            labels=["endpoint"],
        )
        for endpoint, (fp, model, since) in sorted(m.fingerprints.items()):
            info.add_metric([endpoint, fp, model], 1.0)
            change.add_metric([endpoint], since)
        yield info
        yield change
        slo_ttft = GaugeMetricFamily(
            PREFIX + "slo_ttft_seconds", "Configured TTFT objective.", labels=["endpoint"]
        )
        slo_e2e = GaugeMetricFamily(
            PREFIX + "slo_e2e_seconds", "Configured end-to-end objective.", labels=["endpoint"]
        )
        for ep_name, ep in sorted(m.endpoints.items(), key=lambda kv: kv[0]):
            if ep.slo.ttft_s is not None:
                slo_ttft.add_metric([ep_name], ep.slo.ttft_s)
            if ep.slo.e2e_s is not None:
                slo_e2e.add_metric([ep_name], ep.slo.e2e_s)
        yield slo_ttft
        yield slo_e2e
        if m.last_cycle is not None:
            yield GaugeMetricFamily(
                PREFIX + "last_cycle_timestamp_seconds",
                "When a probe run last finished.",
                value=m.last_cycle,
            )
        lateness = HistogramMetricFamily(
            PREFIX + "scheduler_lateness_seconds", "How late scheduled runs started."
        )
        lateness.add_metric([], m.lateness.buckets(), m.lateness.total)
        yield lateness
        yield _counter(
            "scheduler_missed_runs",
            "Runs skipped: misfired, or the previous run still going.",
            ["endpoint"],
            {(k,): v for k, v in m.missed.items()},
        )
        yield _counter(
            "changes",
            "Change events: what answers (fingerprint) or the system prompt (template) changed.",
            ["endpoint", "kind"],
            m.changes,
        )
        pair_signal = ["endpoint", "golden_set", "signal"]
        drift = self.drift()
        yield _gauge(
            "drift_status",
            "Drift against the baseline: 0 ok, 1 drift, -1 inconclusive.",
            pair_signal,
            {k: float(STATUS_VALUE[s.status]) for k, s in drift.items()},
        )
        yield _gauge(
            "drift_score",
            "The drift signal's effect: p50 ratio - 1, pass-rate drop, or similarity drop.",
            pair_signal,
            {k: s.score for k, s in drift.items() if s.score is not None},
        )
        yield _counter(
            "canary_leaks",
            "Answers that gave away the run's canary token from the system prompt.",
            ["endpoint"],
            {(k,): v for k, v in m.canary_leaks.items()},
        )
        yield _gauge(
            "tier_success",
            "1 if the tier passed in the last run: liveness (health route), readiness (models "
            "route), completion (a golden prompt answered).",
            ["endpoint", "tier"],
            {k: float(t.ok) for k, t in m.tiers.items()},
        )
        yield _gauge(
            "tier_duration_seconds",
            "How long the tier's request took in the last run.",
            ["endpoint", "tier"],
            {k: t.latency_s for k, t in m.tiers.items() if t.latency_s is not None},
        )
        now = self.now()
        yield from _server_families(
            {e: None if m.loads_until.get(e, 0.0) < now else v for e, v in m.loads.items()}
        )
        if m.db_bytes is not None:
            yield GaugeMetricFamily(
                PREFIX + "database_size_bytes",
                "The SQLite database with its WAL, as of the last retention pass.",
                value=float(m.db_bytes),
            )
        write = HistogramMetricFamily(
            PREFIX + "storage_write_seconds",
            "Time to store one probe run: its share of the transaction that stored it with the "
            "runs that finished beside it.",
        )
        write.add_metric([], m.write.buckets(), m.write.total)
        yield write
        if m.outage is not None:
            yield CounterMetricFamily(
                PREFIX + "storage_write_errors",
                "Writes to the database that failed (a full disk, most often); runs then wait "
                "in memory and alerts keep paging.",
                value=m.outage.failures,
            )
            yield GaugeMetricFamily(
                PREFIX + "storage_waiting_runs",
                "Probe runs waiting in memory for the database to be written again.",
                value=len(m.outage.spool),
            )
            yield CounterMetricFamily(
                PREFIX + "storage_dropped_runs",
                "Probe runs lost because the in-memory spool was full (the oldest go first).",
                value=m.outage.spool.dropped,
            )


def _server_families(loads: Mapping[str, ServerLoad | None]) -> Iterator[Metric]:
    """The engines' own metrics under our names, one series per endpoint that has them."""
    yield _gauge(
        "server_metrics_up",
        "1 if the engine's own /metrics was read lately: in the last look at the endpoint, "
        "within twice its probe interval (at least a minute). Past that, the engine's values "
        "are left out.",
        ["endpoint"],
        {(e,): float(load is not None) for e, load in loads.items()},
    )
    current = {e: load for e, load in sorted(loads.items()) if load is not None}
    for name, kind, doc in EXPORTED:
        if kind == "histogram":
            family = HistogramMetricFamily(f"{PREFIX}server_{name}", doc, labels=["endpoint"])
            for e, load in current.items():
                if load.ttft is not None:
                    buckets = [(_bound(le), count) for le, count in load.ttft.buckets]
                    buckets[-1] = ("+Inf", buckets[-1][1])
                    family.add_metric([e], buckets, load.ttft.sum)
            yield family
            continue
        values = {
            (e,): (load.started_at if name == "start_time_seconds" else load.values.get(name))
            for e, load in current.items()
        }
        yield _gauge("server_" + name, doc, ["endpoint"], present(values))


def present(values: Mapping[Any, float | None]) -> dict[Any, float]:
    return {k: v for k, v in values.items() if v is not None}


def _gauge(name: str, doc: str, labels: list[str], values: Mapping[Any, float]) -> Metric:
    return Keyed(PREFIX + name, doc, "gauge", labels, values)


def _counter(name: str, doc: str, labels: list[str], values: Mapping[Any, float]) -> Metric:
    return Keyed(PREFIX + name, doc, "counter", labels, values)


class AlertingCollector(Collector):
    """Alert state and page delivery, read from SQLite at scrape time."""

    def __init__(
        self,
        db: Database,
        endpoints: Callable[[], list[str]],
        notifications: Callable[[], Mapping[str, int]],
        pushes: Callable[[], Mapping[str, int] | None] = lambda: None,
        gpus: Callable[[], list[str]] = list,
    ):
        self.db = db
        self.endpoints = endpoints
        self.notifications = notifications
        self.pushes = pushes
        self.gpus = gpus  # the UUIDs of the GPUs NVML lists now

    def collect(self) -> Iterator[Metric]:
        now_firing = {
            (r["endpoint"], r["kind"])
            for r in self.db.query("select endpoint, kind from alerts where state = 'firing'")
        }
        # Per endpoint: its own kinds and idle-while-serving; GPU subjects show in gpu_detected.
        kinds = [*PROBE_KINDS, "drift", "gpu_idle_while_serving"]
        firing = {
            (endpoint, kind): float((endpoint, kind) in now_firing)
            for endpoint in self.endpoints()
            for kind in kinds
        }
        serving = targets.firing(self.db)
        yield _gauge(
            "endpoint_state",
            "What /targets/<endpoint>/ready tells routers, from the firing alerts: 0 ok "
            "(also before the first run), 1 degraded (answers, but wrong, slow, drifted or off "
            "its GPU), 2 down.",
            ["endpoint"],
            {(e,): float(targets.VALUES[serving.get(e, ("ok",))[0]]) for e in self.endpoints()},
        )
        yield _gauge(
            "alerts_firing",
            "1 while an alert of this kind is firing for the endpoint.",
            ["endpoint", "kind"],
            firing,
        )
        # Per GPU (its UUID), and `gpus` for the host's GPU count: every GPU listed now, and
        # any other subject still firing (a GPU that fell off the bus stays visible).
        gpu_firing = {k: 1.0 for k in now_firing if k[1] in GPU_SUBJECT_KINDS}
        for uuid in self.gpus():
            for kind in GPU_SUBJECT_KINDS:
                if kind != "gpu_missing":
                    gpu_firing.setdefault((uuid, kind), 0.0)
        gpu_firing.setdefault(("gpus", "gpu_missing"), 0.0)
        yield _gauge(
            "gpu_alerts_firing",
            "1 while the daemon's GPU alert of this kind is firing for the GPU (`gpus`: the "
            "host's GPU count).",
            ["gpu", "kind"],
            gpu_firing,
        )
        counts = dict(self.notifications())
        counts["suppressed"] = next(
            self.db.query("select count(*) as n from outbox where status = 'suppressed'")
        )["n"]
        yield _counter(
            "notifications",
            "Notification attempts by result; suppressed ones were silenced or had no notifier.",
            ["result"],
            {(r,): counts.get(r, 0) for r in NOTIFICATION_RESULTS},
        )
        yield GaugeMetricFamily(
            PREFIX + "outbox_pending",
            "Pages queued in the outbox and not yet delivered.",
            value=float(outbox.pending_count(self.db)),
        )
        pushes = self.pushes()
        if pushes is not None:  # only with alerting.alertmanager
            yield _counter(
                "alertmanager_pushes",
                "Pushes of the daemon's alerts to each Alertmanager, by result (ok or failed).",
                ["result"],
                {(r,): pushes.get(r, 0) for r in ("ok", "failed")},
            )


class NodeLabelled(Collector):
    """A registry as the listener exposes it: every sample gains the watchdog's `node` label, so
    a fleet's Prometheus (or a federation above it) tells nodes apart without relabelling."""

    def __init__(self, registry: Collector, node: str):
        self.registry, self.node = registry, node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        for family in self.registry.collect():
            if isinstance(family, Fast):
                yield family.labelled(node)
                continue
            labelled = copy.copy(family)
            # Sample(...) directly: namedtuple's _replace costs twice as much, per sample.
            labelled.samples = [
                Sample(s.name, {"node": node, **s.labels}, *s[2:]) for s in family.samples
            ]
            yield labelled

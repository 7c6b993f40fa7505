"""The long-running watchdog: schedule every probe, store each run, refresh the CSV report."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from watchdog.alerting.alerter import STATE as ALERT_STATE
from watchdog.alerting.alerter import Alerter
from watchdog.alerting.messages import Renderer
from watchdog.alerting.notifiers.alertmanager import AlertmanagerPusher
from watchdog.alerting.sender import Notifier, Sender
from watchdog.config.load import Config, until_restart
from watchdog.drift import changes
from watchdog.drift.watch import Compared, DriftWatch
from watchdog.endpoint import Endpoint, Probe
from watchdog.gpu.nvml import Nvml
from watchdog.gpu.watch import GpuWatch, Measured, RunMeter
from watchdog.otlp.export import Exporter
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.reports import aside
from watchdog.result import Run
from watchdog.runner import LOOK_EVERY_S, Runner
from watchdog.runtime.clock import Clock, from_rfc3339
from watchdog.runtime.probing import ProbeLoop
from watchdog.runtime.scheduler import Scheduler
from watchdog.runtime.systemd import Notify
from watchdog.store import Store, StoreError, retention
from watchdog.store.recorder import Recorded, Recorder
from watchdog.store.spool import Outage, Spool
from watchdog.web import listener as web
from watchdog.web.gpu_metrics import GpuCollector
from watchdog.web.metrics import AlertingCollector, NodeLabelled, ProbeCollector, ProbeMetrics

log = logging.getLogger("mlops_watchdog.daemon")
SHUTDOWN_GRACE_S = 6.0  # systemd waits 90 s by default; DESIGN asks for exit within 10 s
SENDER_GRACE_S = 2.0
WRITE_BACK_BATCH = 100  # runs that waited for the database, written per transaction
SELF_CHECK_S = 20.0  # without systemd's watchdog; with it, a third of WatchdogSec
HEARTBEAT_EVERY_S = 60.0
HEARTBEAT_TIMEOUT_S = 10.0
DRIFT_EVERY_S = 60.0
STAGGER_S = 0.01
# Python's defaults but for the last: a full collection after 100 of the middle generation's,
# not 10. Connections kept for the next run live seconds, reach the old generation and die
# there, as garbage only the collector frees (asyncio's transport and httpx's response each
# point at themselves). At a thousand endpoints that set off a full collection every 5 s, each
# stopping the probe thread for 20 to 50 ms; now about one a minute, of 50 to 100 ms. An answer
# read that late has its first token stamped with the tokens read after it (bench.scale).
COLLECTOR_THRESHOLDS = (700, 10, 100)


def engine_values_current_for(probe: Probe) -> float:
    """How long an engine's metrics read for this probe count as current: twice the time
    between its reads (at least a minute), so that a run that hangs on a frozen engine does not
    leave the values read before it standing as if they were read just now."""
    return 2 * max(probe.interval_s, LOOK_EVERY_S)


def summary(probe: Probe, run: Run) -> str:
    ok = sum(r.ok for r in run.results)
    failed = [f"{r.prompt_id}={r.error_class}" for r in run.results if not r.ok]
    e2e = sorted(r.answer.e2e_s for r in run.results if r.answer.e2e_s is not None and r.ok)
    median = f", e2e p50 {e2e[len(e2e) // 2]:.3f}s" if e2e else ""
    tail = f"; failed: {' '.join(failed)}" if failed else ""
    golden = run.results[0].golden_set if run.results else probe.golden_set
    return f"{probe.endpoint}/{golden}: {ok}/{len(run.results)} ok{median}{tail}"


@dataclass(frozen=True)
class Finished:
    """A run back from its probe, waiting for the group commit."""

    endpoint: Endpoint
    probe: Probe
    run: Run
    meter: RunMeter | None
    stored: asyncio.Future[bool]


@dataclass(frozen=True)
class Staged:
    """What storing one run found, for the daemon to take in once the transaction commits."""

    endpoint: str
    at: datetime
    recorded: Recorded
    measured: Measured | None
    compared: Compared | None
    queued: bool  # it queued pages


def _settle(future: asyncio.Future[bool], outcome: bool | BaseException) -> None:
    if future.cancelled():  # the run's job was cancelled meanwhile; the run is stored anyway
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Daemon:
    def __init__(
        self,
        config: Config,
        client: httpx.AsyncClient,
        store: Store,
        clock: Clock,
        notifier: Notifier | None = None,
        registry: CollectorRegistry | None = None,
        nvml: Nvml | None = None,
        notify: Notify | None = None,
        otlp: Exporter | None = None,
        probing: ProbeLoop | None = None,
    ):
        self.config = config
        self.client = client  # the daemon's own requests: heartbeat, Alertmanager
        # Probes run on `probing`'s thread and loop, with its client, when there is one.
        self.probing = probing
        self.notify = notify or Notify({})
        self.heartbeat_at = float("-inf")
        self.heartbeat_ok = True
        self.load_errors: dict[str, str | None] = {}  # endpoint: the class of the last failure
        self.finished: list[Finished] = []  # runs waiting for the group commit
        self.endpoints = {name: ep.base_url for name, ep in config.endpoints.items()}
        self.store = store
        self.clock = clock
        self.runner = Runner(config, probing.client if probing else client, clock)
        self.metrics = ProbeMetrics(config.endpoints, config.prompts())
        self.drift = DriftWatch(config.drift, config.baseline)
        self.jobs: dict[str, tuple[str, str]] = {}  # scheduler job id: (endpoint, what it runs)
        self.scheduler = Scheduler(
            on_late=lambda job, seconds: self.metrics.lateness.observe(seconds),
            on_missed=lambda job: self._missed(job),
        )
        self.spool = Spool()  # runs waiting in memory while the database cannot be written
        self.outage = Outage(store.path, self.spool)
        self.writing_back = False
        self.metrics.outage = self.outage
        self.alerter = Alerter(
            config.alerting, store, can_send=notifier is not None, node=config.node
        )
        templates = config.alerting.templates_dir
        renderer = Renderer(config.resolve(templates) if templates else None)
        self.sender = Sender(store, notifier, renderer, clock) if notifier else None
        pushes = config.alerting.alertmanager and config.alerting.route != "slack"
        self.pusher = (
            AlertmanagerPusher(config.alerting, store.db, client, clock, config.node)
            if pushes
            else None
        )
        self.pushing: set[asyncio.Task[None]] = set()
        self.registry = registry or CollectorRegistry()
        for row in store.db.query(
            "select endpoint, fingerprint, first_seen from fingerprints f where last_seen = "
            "(select max(last_seen) from fingerprints g where g.endpoint = f.endpoint)"
        ):
            latest = changes.before(store.db, row["endpoint"], clock.now().timestamp())
            since = from_rfc3339(latest.at if latest else row["first_seen"]).timestamp()
            self.metrics.remember_fingerprint(row["endpoint"], row["fingerprint"], "", since)
        self.metrics.db_bytes = retention.size_bytes(store.db)
        self.recorder = Recorder.of(store, config.endpoints)
        self.gpu = GpuWatch(config.gpu, config.endpoints, nvml, store)
        self.otlp = otlp  # OpenTelemetry export, when `otlp:` is set
        if otlp is not None:
            otlp.watch_gpus(lambda: (list(self.gpu.latest.values()), self.gpu.driver))
        self.registry.register(
            ProbeCollector(
                self.metrics, lambda: self.drift.signals, lambda: self.clock.now().timestamp()
            )
        )
        self.registry.register(GpuCollector(self.gpu))
        self.registry.register(
            AlertingCollector(
                store.db,
                lambda: list(self.config.endpoints),
                lambda: self.sender.results if self.sender else {},
                lambda: self.pusher.results if self.pusher else None,
                lambda: sorted(self.gpu.latest),
            )
        )

    async def probe_once(self, probe: Probe) -> Run:
        # Without NVML there is nothing to meter: not worth resolving every endpoint's GPUs.
        nvml = self.gpu.nvml is not None
        meter = self.gpu.meter(probe.endpoint, self.clock.now().timestamp()) if nvml else None
        runner = self.runner  # as it was when the run began, a reload notwithstanding
        probing = self.probing
        run = await (probing.run(lambda: runner.run(probe)) if probing else runner.run(probe))
        endpoint = self.config.endpoints[probe.endpoint]
        if self.outage.on:
            await self.write_back()
        # Nothing older waits for the database: this run goes in now, or waits in memory too.
        if self.outage.on or not await self._stored(endpoint, probe, run, meter):
            self._hold(endpoint, run, meter)
        if self.otlp is not None:  # stored or not: the collector hears of every run
            self.otlp.record(endpoint, run.results)
        self.metrics.observe_run(run.results, self.clock.now().timestamp())
        self.metrics.observe_serving(
            probe.endpoint,
            run.tiers,
            run.load,
            run.load_error,
            self.clock.now().timestamp(),
            engine_values_current_for(probe),
        )
        self._log_load(probe.endpoint, run)
        if log.isEnabledFor(logging.INFO):  # not worth building at 100 probes/s when unread
            log.info("%s", summary(probe, run))
        return run

    def _stored(
        self, endpoint: Endpoint, probe: Probe, run: Run, meter: RunMeter | None
    ) -> asyncio.Future[bool]:
        """The run, into the group commit of the runs that finish in the same turn of the loop:
        True once it is in the database, False when the database cannot be written."""
        loop = asyncio.get_running_loop()
        if not self.finished:
            loop.call_soon(self._commit_finished)
        waiting = Finished(endpoint, probe, run, meter, loop.create_future())
        self.finished.append(waiting)
        return waiting.stored

    def _commit_finished(self) -> None:
        """The runs that finished together, in one transaction; a run that shares its endpoint
        with an earlier one goes into the next (what the first teaches, the second reads)."""
        finished, self.finished = self.finished, []
        while finished:
            by_endpoint: dict[str, Finished] = {}
            later: list[Finished] = []
            for waiting in finished:
                if waiting.endpoint.name in by_endpoint:
                    later.append(waiting)
                else:
                    by_endpoint[waiting.endpoint.name] = waiting
            self._commit(list(by_endpoint.values()))
            finished = later

    def _commit(self, group: list[Finished]) -> None:
        """One transaction for the group, and each run's await settled. A group whose
        transaction failed in a way the database did not cause is stored again run by run, so
        that a bad run fails alone."""
        try:
            staged = self._store(group)
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0].stored, exc)
            else:
                for waiting in group:
                    self._commit([waiting])
            return
        taught: list[Staged | None] = [*staged] if staged else [None] * len(group)
        for waiting, learnt in zip(group, taught, strict=True):
            try:
                if learnt is not None:
                    self._learn(learnt)
            except Exception as exc:
                _settle(waiting.stored, exc)
            else:
                _settle(waiting.stored, learnt is not None)

    def _store(self, group: list[Finished]) -> list[Staged] | None:
        """The runs, their alert decisions and pages, their GPU energy and drift comparisons,
        in one transaction: what each taught, for `_learn` once it is committed; None when
        the database cannot be written."""
        started = time.perf_counter()
        try:
            with self.store.transaction():  # results, alert state and pages: all or nothing
                now = self.clock.now()
                staged = [self._record(w, now) for w in group]
        except StoreError as exc:
            first = f"{group[0].probe.endpoint}/{group[0].probe.golden_set}"
            others = f" and of {len(group) - 1} other run(s)" if len(group) > 1 else ""
            self._cannot_write(f"the results of {first}{others}", exc)
            return None
        share = (time.perf_counter() - started) / len(group)  # each run's share of the write
        for _ in group:
            self.metrics.write.observe(share)
        return staged

    def _record(self, waiting: Finished, now: datetime) -> Staged:
        """Inside the group's transaction: one run and what follows from it."""
        endpoint, probe, run, meter = waiting.endpoint, waiting.probe, waiting.run, waiting.meter
        recorded = self.recorder.record(endpoint, run, now)
        change = recorded.change
        queued = [self.alerter.announce(change, now)] if change else []
        measured = (
            self.gpu.finish(meter, run.results, run.run_id, now.timestamp()) if meter else None
        )
        queued += self.alerter.observe(endpoint, run.results, now, run.tiers)
        compared = (
            self.drift.compare(
                self.store.db, endpoint.name, run.results[0].golden_set, now, probe.interval_s
            )
            if run.results
            else None
        )
        finding = self.drift.finding(self.store.db, compared, now) if compared else None
        if finding is not None:
            queued += self.alerter.observe_findings("drift", [finding], now, self.config.endpoints)
        return Staged(endpoint.name, now, recorded, measured, compared, bool(queued))

    def _learn(self, staged: Staged) -> None:
        """Once its transaction has committed: what the run taught, into memory."""
        recorded = staged.recorded
        self.recorder.committed(recorded)
        if recorded.cold_reason:
            log.info("%s: %s, kept out of latency drift", staged.endpoint, recorded.cold_reason)
        if recorded.change is not None:
            self.metrics.changed(recorded.change, staged.at.timestamp())
        if staged.measured is not None:
            self.gpu.remember(staged.measured)
        compared = staged.compared
        if compared is not None:
            self.drift.remember(compared)
            if compared.baseline_made is not None:
                log.info(
                    "%s/%s: baseline %d made from the last runs",
                    compared.endpoint,
                    compared.golden_set,
                    compared.baseline_made,
                )
        if staged.queued:
            self._page_soon()

    def _cannot_write(self, what: str, error: StoreError) -> None:
        """The database cannot be written: from now on, until `write_back` has put everything
        back, runs wait in memory and the alert state and pages live there."""
        self.outage.failed(what, error, self.clock.monotonic())
        try:
            self.store.hold_in_memory(ALERT_STATE)
        except sqlite3.Error as exc:  # reading the file failed too: pages wait for it
            log.error("alert state not taken into memory: %s: %s", self.store.path, exc)

    def _hold(self, endpoint: Endpoint, run: Run, meter: RunMeter | None) -> None:
        """While the database cannot be written: the run waits in memory, and its alert
        decisions and pages are made there (no change events and no drift until the runs are
        written: they need the history)."""
        now = self.clock.now()
        self.spool.add(endpoint.name, run, now)
        try:
            with self.store.transaction():  # the tables held in memory only
                measured = (
                    self.gpu.finish(meter, run.results, run.run_id, now.timestamp(), stored=False)
                    if meter
                    else None
                )
                queued = self.alerter.observe(endpoint, run.results, now, run.tiers)
        except StoreError as exc:
            # Counted and logged at most once a minute, with the outage.
            self.outage.failed(f"the alert state of {endpoint.name}", exc, self.clock.monotonic())
            return
        if measured is not None:
            self.gpu.remember(measured)
        if queued:
            self._page_soon()

    async def write_back(self) -> None:
        """The runs that waited, oldest first and a batch per transaction (the probes run in
        between), then the alert state and pages held in memory; the outage ends when all is
        in the file."""
        if self.writing_back:
            return
        self.writing_back = True
        try:
            while self.outage.on:
                batch = self.spool.oldest(WRITE_BACK_BATCH)
                endpoints = self.config.endpoints  # a run of an endpoint since removed is not
                try:
                    with self.store.transaction():
                        recorded = [
                            (w, self.recorder.record(endpoints[w.endpoint], w.run, w.at))
                            for w in batch
                            if w.endpoint in endpoints
                        ]
                        queued = [
                            self.alerter.announce(r.change, w.at) for w, r in recorded if r.change
                        ]
                        last = len(batch) == len(self.spool)
                        if last:
                            self.store.write_back(ALERT_STATE)
                except StoreError as exc:
                    self.outage.failed("the runs waiting in memory", exc, self.clock.monotonic())
                    return
                self.spool.written(batch)
                for w, r in recorded:
                    self.recorder.committed(r)
                    if r.change is not None:
                        self.metrics.changed(r.change, w.at.timestamp())
                if queued:
                    self._page_soon()
                self.outage.stored(len(batch))
                if last:
                    self.outage.cleared(self.clock.monotonic())
                await asyncio.sleep(0)
        finally:
            self.writing_back = False

    def _page_soon(self) -> None:
        """New pages: the Slack sender wakes, and Alertmanager hears now, not at the next resend."""
        if self.sender:
            self.sender.wake.set()
        if self.pusher:
            task = asyncio.create_task(self.pusher.push())
            self.pushing.add(task)
            task.add_done_callback(self.pushing.discard)

    def _log_load(self, endpoint: str, run: Run) -> None:
        """Once when the engine's metrics stop being readable, once when they are back: not at
        every run (the metric server_metrics_up says it all along)."""
        before = self.load_errors.get(endpoint)
        now = run.load_error.split(":")[0] if run.load_error else None
        if run.load is None and run.load_error is None:
            return
        if now and now != before:
            log.warning("%s: engine metrics not read: %s", endpoint, run.load_error)
        elif before and not now:
            log.info("%s: engine metrics read again", endpoint)
        self.load_errors[endpoint] = now

    async def gpu_once(self) -> None:
        """Sample every GPU, store it, and let the detectors' findings drive the GPU alerts.
        While the database cannot be written, the sample is not stored but still judged."""
        snapshot = await self.gpu.sample()
        xids = self.gpu.new_xids()
        if self.outage.on:
            await self.write_back()
        now = self.clock.now()
        for stored in (True, False) if not self.outage.on else (False,):
            try:
                with self.store.transaction():
                    sampled = self.gpu.record(snapshot, xids, now.timestamp(), stored)
                    queued = []
                    for kind, findings in sampled.findings.items():
                        queued += self.alerter.observe_findings(
                            kind, findings, now, self.config.endpoints
                        )
                break
            except StoreError as exc:
                if not stored:
                    self.outage.failed("the GPU alert state", exc, self.clock.monotonic())
                    return
                self._cannot_write("a GPU sample", exc)
        self.gpu.remember(sampled)
        if queued:
            self._page_soon()

    def _missed(self, job_id: str) -> None:
        if job_id in self.jobs:
            self.metrics.missed[self.jobs[job_id][0]] += 1

    def ready(self) -> dict[str, bool]:
        return {"config": True, "store": not self.outage.on, "scheduler": self.scheduler.running}

    def reload_from(self, load: Callable[[], Config]) -> bool:
        """SIGHUP: read and validate the config again. An invalid one is refused, its problems
        logged, and the daemon runs on with the one it has."""
        self.notify.reloading()
        try:
            new = load()
        except InvalidFile as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            refused = f"reload refused: {len(exc.problems)} problem(s); still running on the config loaded before"
            log.error("%s", refused)
            self.notify.ready(refused)
            return False
        restart = self.reload(new)
        status = (
            f"reloaded {new.path}: {len(self.config.endpoints)} endpoint(s), "
            f"{len(self.config.probes)} probe(s)"
        )
        log.info("%s", status)
        if restart:
            log.warning("changed, but kept until a restart: %s", ", ".join(restart))
        self.notify.ready(status)
        return True

    def reload(self, new: Config) -> list[str]:
        """Apply a validated config live: probes added, removed or changed, thresholds and SLOs
        new; alert state stays (it lives in the database). Returns the keys that changed but
        need a restart to take effect (config/load.py's RESTART), which keep their old values
        until then."""
        new, restart = until_restart(self.config, new)
        self.config = new
        self.runner = Runner(new, self.runner.client, self.clock, self.runner.canary)
        self.metrics.adopt(new.endpoints, new.prompts())
        self.drift.configure(new.drift, new.baseline)
        self.drift.keep_only(new.endpoints)
        self.alerter.configure(new.alerting)
        self.gpu.bind(new.endpoints)
        self.endpoints.clear()
        self.endpoints.update({name: ep.base_url for name, ep in new.endpoints.items()})
        self.schedule_probes()
        return restart

    async def keep_small(self) -> None:
        """Retention: roll up, prune and vacuum in bounded steps, yielding to the probes between
        them; warn once the database is over `retention.max_db_bytes`."""
        while True:
            now = self.clock.now().timestamp()
            try:
                summary = retention.maintain(self.store.db, now, self.config.retention)
            except sqlite3.Error as exc:
                log.error("retention: %s: %s", self.store.path, exc)
                return
            self.metrics.db_bytes = summary.size_after
            if summary.vacuum_error:
                log.warning("retention: vacuum: %s", summary.vacuum_error)
            if not summary.more_to_do:
                break
            await asyncio.sleep(0)
        if summary.warning:
            log.warning("%s", summary.warning)
        deleted = sum(summary.deleted.values())
        if deleted or summary.hours_rolled:
            log.info(
                "retention: %d hour(s) rolled up, %d row(s) deleted, database %d bytes",
                summary.hours_rolled,
                deleted,
                summary.size_after,
            )

    async def self_check(self) -> None:
        """The scheduler's own heartbeat: WATCHDOG=1 to systemd and a ping to `heartbeat_url`
        when the database answers and the scheduler runs. A stuck event loop or a dead
        scheduler sends nothing, and systemd restarts the service. A database that cannot be
        written does not stop it: probes and pages go on, and a restart would lose the runs
        waiting in memory."""
        try:
            self.store.db.execute("select 1").fetchone()
        except sqlite3.Error as exc:
            log.error("self-check: the database does not answer: %s", exc)
            return
        if not self.scheduler.running:
            log.warning("self-check: unhealthy (%s)", self.ready())
            return
        running = self.scheduler.in_flight
        status = f"{len(self.config.endpoints)} endpoint(s), {running} probe run(s) in progress"
        if self.outage.on:
            status += f"; the database cannot be written, {len(self.spool)} run(s) wait in memory"
        self.notify.alive(status)
        await self._heartbeat()

    async def _heartbeat(self) -> None:
        url = self.config.heartbeat_url
        if not url or self.clock.monotonic() - self.heartbeat_at < HEARTBEAT_EVERY_S:
            return
        self.heartbeat_at = self.clock.monotonic()
        try:
            response = await self.client.get(url, timeout=HEARTBEAT_TIMEOUT_S)
            ok, why = response.status_code < 400, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, type(exc).__name__  # the URL is a secret: never in the log
        if ok != self.heartbeat_ok:
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "heartbeat_url ping %s (%s)", "works" if ok else "failed", why)
        self.heartbeat_ok = ok

    def write_reports(self) -> Path:
        """The health CSV and the daily HTML report of the last 24 h, in `storage.csv_dir`."""
        folder = self.config.resolve(self.config.storage.csv_dir)
        return aside.write_reports(
            self.store, self.config.pairs(), self.config.drift, self.clock.now(), folder
        )

    def _refresh_report(self) -> None:
        try:
            out = self.write_reports()
            log.info("health report written to %s", out)
        except (OSError, StoreError) as exc:
            log.error("health report not written: %s", exc)

    async def refresh_report_aside(self) -> None:
        """The reports, written by a child process (reports/aside.py): at a thousand endpoints
        they take seconds, which on the event loop made every run due meanwhile late."""
        folder = self.config.resolve(self.config.storage.csv_dir)
        try:
            out = await aside.write_aside(
                self.store.path, self.config.pairs(), self.config.drift, self.clock.now(), folder
            )
            log.info("health report written to %s", out)
        except (OSError, aside.ReportFailed) as exc:
            log.error("health report not written: %s", exc)

    def schedule_probes(self) -> None:
        """One job per probe; a reload keeps the jobs of unchanged probes as they are."""
        now = self.clock.now()
        wanted = {}
        for n, probe in enumerate(self.config.probes):
            job_id = f"{probe.endpoint}/{probe.golden_set}#{n}"
            wanted[job_id] = (probe, self._job_key(probe))
        for job_id in [j for j in self.jobs if self.jobs[j][1] != wanted.get(j, (None, ""))[1]]:
            self.scheduler.remove(job_id)
            del self.jobs[job_id]
        for n, (job_id, (probe, key)) in enumerate(wanted.items()):
            if job_id in self.jobs:
                continue
            self.jobs[job_id] = (probe.endpoint, key)

            async def job(probe: Probe = probe) -> None:
                await self.probe_once(probe)

            if probe.cron:
                self.scheduler.cron(
                    job_id,
                    job,
                    probe.cron,
                    timezone=probe.timezone,
                    jitter=probe.jitter,
                    misfire_grace=probe.misfire_grace,
                )
            else:
                # First runs 10 ms apart (within the interval), not all at once: a thousand
                # endpoints starting together would queue behind each other for seconds. The
                # runs after them start on the scheduler's 100 ms ticks, a few together.
                spread = min(probe.interval_s, len(wanted) * STAGGER_S)
                offset = spread * n / len(wanted)
                self.scheduler.every(
                    job_id,
                    job,
                    probe.interval_s,
                    jitter=probe.jitter,
                    misfire_grace=probe.misfire_grace,
                    start=now + timedelta(seconds=offset),
                )

    def _job_key(self, probe: Probe) -> str:
        """What a probe's job runs: the probe, its endpoint and its golden set's content."""
        endpoint = self.config.endpoints[probe.endpoint].model_dump_json()
        return probe.model_dump_json() + endpoint + self.config.golden_sets[probe.golden_set].hash

    def schedule(self) -> None:
        now = self.clock.now()
        self.schedule_probes()
        if self.gpu.nvml is not None:
            self.scheduler.every("gpu", self.gpu_once, self.config.gpu.interval, start=now)

            async def downsample() -> None:
                try:
                    self.gpu.downsample(self.clock.now().timestamp())
                except StoreError as exc:
                    log.error("GPU samples not downsampled: %s", exc)

            self.scheduler.every("gpu-downsample", downsample, 3600, start=now)

        keep = self.config.retention.every
        self.scheduler.every(
            "retention", self.keep_small, keep, start=now + timedelta(seconds=min(keep, 60))
        )
        every = self.notify.watchdog_s / 3 if self.notify.watchdog_s else SELF_CHECK_S
        self.scheduler.every("self-check", self.self_check, every, start=now)
        if self.pusher:
            resend = self.pusher.push_settings.resend_every
            self.scheduler.every("alertmanager-push", self.pusher.push, resend, start=now)

        every = self.config.storage.report_every
        self.scheduler.every(
            "health-report",
            self.refresh_report_aside,
            every,
            start=now + timedelta(seconds=min(every, 60)),
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then finish or cancel in-flight probes and write the report."""
        sending = asyncio.Event()
        sender = asyncio.create_task(self.sender.run(sending)) if self.sender else None
        listener = None
        if self.config.listen:
            application = web.app(
                NodeLabelled(self.registry, self.config.node),
                self.store,
                self.endpoints,
                self.ready,
                self.clock.now,
                self.config.node,
                lambda kind: self.config.alerting.runbook(kind),  # as reloaded
            )
            web_config = self.config.web_config
            listener = await web.serve(application, self.config.listen, web_config)
            scheme = "https" if web_config and web_config.tls else "http"
            log.info("metrics and status page on %s://%s/", scheme, self.config.listen)
        self.gpu.start(self.clock.now().timestamp())
        if self.otlp is not None:
            log.info("%s", self.otlp.describe())
        self.schedule()
        self.scheduler.start()
        # What is loaded now (modules, config, the schedule) lives as long as the daemon: out of
        # the collector's full passes, which otherwise walk it all and stall the loop for 100 ms
        # and more at a thousand endpoints, delaying runs and inflating the timings they read.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*COLLECTOR_THRESHOLDS)
        status = (
            f"watching {len(self.config.endpoints)} endpoint(s) with {len(self.config.probes)} "
            f"probe(s); database {self.store.path}"
        )
        log.info("%s", status)
        self.notify.ready(status)
        await stop.wait()
        log.info("stopping")
        self.notify.stopping()
        await self.scheduler.stop(grace=SHUTDOWN_GRACE_S)
        if self.outage.on:  # a last try; what cannot be written now is lost with the process
            await self.write_back()
            if self.outage.on:
                log.error(
                    "%s cannot be written: %d run(s) waiting in memory, and the alert state "
                    "since the outage began, are lost",
                    self.store.path,
                    len(self.spool),
                )
        if sender:  # one last delivery round for pages the final runs queued, then stop
            sending.set()
            try:
                await asyncio.wait_for(sender, timeout=SENDER_GRACE_S)
            except TimeoutError:
                log.warning("undelivered pages stay queued for the next start")
        if listener:
            await listener.cleanup()
        self.gpu.close()
        if self.otlp is not None:
            self.otlp.close()
        self._refresh_report()

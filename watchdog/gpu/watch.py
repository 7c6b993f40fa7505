"""GPU telemetry: sample NVML every `gpu.interval`, store it, run the detectors, and measure the
bound GPUs around each probe run (energy per token, utilisation for idle-while-serving)."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from watchdog.endpoint import Endpoint
from watchdog.gpu import detectors
from watchdog.gpu import rows as gpu_rows
from watchdog.gpu.detectors import Context, ProbeWindow, XidCount, idle
from watchdog.gpu.nvml import GpuSample, Nvml, Snapshot, Xid
from watchdog.gpu.serving import Procfs, Server
from watchdog.gpu.settings import Gpu
from watchdog.result import Finding, ProbeResult
from watchdog.store import Store

log = logging.getLogger("mlops_watchdog.gpu")
WINDOWS_KEPT = 20  # probe runs per endpoint that the idle detector may look back on
SERVERS_EVERY_S = 60.0  # how often the bound endpoints' serving processes are looked for
SERVERS_RETRY_S = 5.0  # the first retry for one not found; doubling up to SERVERS_EVERY_S


@dataclass
class RunMeter:
    """The bound GPUs' energy counter and utilisation at the start of one probe run."""

    endpoint: str
    uuids: list[str]
    started: float
    energy_j: float | None


@dataclass
class Energy:
    joules: float
    tokens: int
    joules_per_token: float | None
    cost_per_1k_tokens: float | None


@dataclass(frozen=True)
class Measured:
    """One probe run as its GPUs saw it: kept by `GpuWatch.remember` once the run is stored."""

    window: ProbeWindow
    energy: Energy | None


@dataclass(frozen=True)
class Sampled:
    """One periodic sample and what the detectors found with it: kept by `GpuWatch.remember`
    once it is stored."""

    at: float  # Unix seconds
    snapshot: Snapshot | None
    latest: dict[str, GpuSample]
    lost: set[str]
    xids: dict[tuple[str, int], XidCount]
    findings: dict[str, list[Finding]]


@dataclass
class GpuWatch:
    """What the daemon knows about its GPUs; fed by the periodic sample and by the meters
    around runs. Each read is stored first and kept in memory after the store commits."""

    settings: Gpu
    endpoints: Mapping[str, Endpoint]  # those with `gpus:` are bound to them
    nvml: Nvml | None  # None: gpu.enabled is false
    store: Store
    procfs: Procfs = field(default_factory=Procfs)
    servers: dict[str, Server] = field(default_factory=dict)  # endpoint: its local process
    servers_seen: tuple[float, frozenset[int]] | None = None  # when looked for, and GPU pids
    servers_misses: int = 0  # looks in a row that missed a bound endpoint's server
    latest: dict[str, GpuSample] = field(default_factory=dict)
    history: dict[str, deque[GpuSample]] = field(default_factory=dict)
    windows: dict[str, deque[ProbeWindow]] = field(default_factory=dict)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    xids: dict[tuple[str, int], XidCount] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    energy: dict[str, Energy] = field(default_factory=dict)  # endpoint: last run's
    sampling_s: list[float] = field(default_factory=list)  # since the last scrape
    # NVML's sample buffers are read only while they can hold evidence about a run: for the
    # GPUs of endpoints with a run in flight, and until one reading after each run's end has
    # let NVML post the samples that cover it.
    running: dict[str, int] = field(default_factory=dict)  # endpoint: runs in flight
    buffers_until: dict[str, float] = field(default_factory=dict)  # uuid: read up to then
    buffers_read: dict[str, float] = field(default_factory=dict)  # uuid: last read at
    driver: str | None = None

    def __post_init__(self) -> None:
        for (uuid, code), (count, last) in gpu_rows.xid_counts(self.store.db).items():
            self.xids[(uuid, code)] = XidCount(count, last)

    @property
    def up(self) -> bool:
        return self.nvml is not None and self.nvml.up

    def start(self, now: float) -> None:
        """Open NVML and reload recent samples, so a restart does not blind the detectors."""
        if self.nvml is None:
            log.info("GPU telemetry disabled (gpu.enabled: false)")
            return
        if self.nvml.start():
            self.driver = self.nvml.driver
            log.info(
                "GPU telemetry: %d GPU(s), driver %s, every %gs",
                len(self.nvml.devices),
                self.driver,
                self.settings.interval,
            )
            self.nvml.start_xid_watch()
        for uuid, samples in gpu_rows.history(self.store.db, now - self._horizon()).items():
            self.history[uuid] = deque(samples)

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()

    def _horizon(self) -> float:
        s = self.settings
        return max(s.leak.window, s.throttle.after) + 3 * s.interval

    # --- the periodic sample -------------------------------------------------------------------

    async def sample(self) -> Snapshot | None:
        """One NVML read of every GPU, off the event loop (NVML calls block)."""
        if self.nvml is None:
            return None
        started = time.perf_counter()
        buffers = self._buffers_wanted()
        snapshot = await asyncio.to_thread(self.nvml.sample, False, buffers)
        if snapshot is None:
            return None
        self.buffers_read.update(dict.fromkeys(buffers, snapshot.at))
        self.sampling_s.append(time.perf_counter() - started)
        self.driver = snapshot.driver
        due = self._servers_due(snapshot)
        if due:
            self.servers = await asyncio.to_thread(self.find_servers, snapshot, due == "timer")
        if self.nvml.xid_registered == {} and self.nvml.devices:
            self.nvml.start_xid_watch()  # after a re-initialisation
        return snapshot

    def _buffers_wanted(self) -> set[str]:
        bound = self.bindings()
        wanted = {u for e, n in self.running.items() if n > 0 for u in bound.get(e, ())}
        return wanted | {
            u for u, until in self.buffers_until.items() if self.buffers_read.get(u, 0) < until
        }

    def new_xids(self) -> list[Xid]:
        """The XIDs NVML reported since the last call (each is read once)."""
        return self.nvml.xids() if self.nvml is not None else []

    def record(
        self, snapshot: Snapshot | None, new: list[Xid], now: float, stored: bool = True
    ) -> Sampled:
        """Store the sample and the XIDs seen since the last one (unless the database cannot be
        written: not `stored`), and run the detectors on the history with it; call inside the
        store transaction that also records the alert state, then `remember` what it returns
        once that has committed."""
        db = self.store.db
        latest, lost = self.latest, set(self.lost)
        history = {u: list(s) for u, s in self.history.items()}
        if snapshot is not None:
            if stored:
                gpu_rows.record_snapshot(db, snapshot)
            seen = {g.uuid: g for g in snapshot.gpus}
            lost = (lost | (set(latest) - set(seen))) - set(seen)
            latest = seen
            for g in snapshot.gpus:
                history.setdefault(g.uuid, []).append(g)
        elif not self.up:  # NVML went away: what it listed is lost until it answers again
            lost |= set(latest)
            latest = {}
        xids = dict(self.xids)
        if new:
            if stored:
                gpu_rows.record_xids(db, new)
            for x in new:
                log.error("GPU %s: XID %d", x.uuid, x.code)
                before = xids.get((x.uuid, x.code), XidCount(0, 0.0))
                xids[(x.uuid, x.code)] = XidCount(before.count + 1, x.at)
        horizon = now - self._horizon()
        history = {u: [s for s in samples if s.at >= horizon] for u, samples in history.items()}
        context = self.context(now, latest, history, xids, lost)
        return Sampled(now, snapshot, latest, lost, xids, detectors.run_all(context))

    def context(
        self,
        now: float,
        latest: Mapping[str, GpuSample],
        history: Mapping[str, Sequence[GpuSample]],
        xids: Mapping[tuple[str, int], XidCount],
        lost: set[str],
    ) -> Context:
        seen = gpu_rows.seen_since(self.store.db, now - self.settings.hardware.missing_window)
        names = {u: f"GPU {g.index} ({g.name})" for u, g in latest.items()}
        return Context(
            now=now,
            settings=self.settings,
            history=history,
            windows=[w for ws in self.windows.values() for w in ws],
            bindings=self.bindings(latest),
            xids=xids,
            lost=frozenset(lost),
            gpu_count=len(latest) if self.up else 0,
            gpu_count_max=len(seen),
            names={**{u: f"{n}" for u, n in seen.items()}, **names},
            servers=dict(self.servers),
        )

    def remember(self, read: Sampled | Measured) -> None:
        """What a committed sample or run taught: the GPUs' history, or the run's window and
        energy."""
        if isinstance(read, Measured):
            w = read.window
            self.windows.setdefault(w.endpoint, deque(maxlen=WINDOWS_KEPT)).append(w)
            self.running[w.endpoint] = max(0, self.running.get(w.endpoint, 0) - 1)
            for uuid in self.bindings().get(w.endpoint, ()):
                posted = w.ended + idle.PROCESS_PERIOD_S
                self.buffers_until[uuid] = max(self.buffers_until.get(uuid, 0), posted)
            if read.energy is not None:
                self.energy[read.window.endpoint] = read.energy
            return
        self.latest, self.lost, self.xids, self.findings = (
            read.latest,
            read.lost,
            read.xids,
            read.findings,
        )
        for g in read.snapshot.gpus if read.snapshot else ():
            self.history.setdefault(g.uuid, deque()).append(g)
        horizon = read.at - self._horizon()
        for samples in self.history.values():
            while samples and samples[0].at < horizon:
                samples.popleft()

    def bindings(self, latest: Mapping[str, GpuSample] | None = None) -> dict[str, list[str]]:
        """endpoint: the UUIDs of its GPUs (indexes resolved through NVML's list)."""
        by_index = {g.index: u for u, g in (self.latest if latest is None else latest).items()}
        return {
            name: [r if isinstance(r, str) else by_index.get(r, f"index {r}") for r in ep.gpus]
            for name, ep in self.endpoints.items()
            if ep.gpus
        }

    def bind(self, endpoints: Mapping[str, Endpoint]) -> None:
        """A reload: the endpoints and their GPUs; their servers are looked for again."""
        self.endpoints = endpoints
        self.servers_seen, self.servers_misses = None, 0

    def _servers_due(self, snapshot: Snapshot) -> str | None:
        """Why to look for the bound endpoints' servers now, if at all: at the first sample and
        every SERVERS_EVERY_S ("timer"), or when a server's process is gone, when the GPUs'
        compute processes changed (an engine that restarted its workers has a new family), or
        when an endpoint whose server was not found begins to answer ("event")."""
        bound = self.bindings()
        if not bound:
            return None
        if self.servers_seen is None:
            return "timer"
        at, seen = self.servers_seen
        gone = any(not self.procfs.alive(s.pid) for s in self.servers.values())
        # A server not found yet (still starting, or behind a proxy): again soon, then less
        # often, up to every SERVERS_EVERY_S; and as soon as its endpoint begins to answer,
        # since a server that answers is listening.
        missing = set(bound) - set(self.servers)
        wait = (
            min(SERVERS_EVERY_S, SERVERS_RETRY_S * 2 ** max(0, self.servers_misses - 1))
            if missing
            else SERVERS_EVERY_S
        )
        began = any(_began_answering(self.windows.get(name, ()), at) for name in missing)
        if snapshot.at - at >= wait:
            return "timer"
        return "event" if gone or began or _pids(snapshot) != seen else None

    def find_servers(self, snapshot: Snapshot, timer: bool = True) -> dict[str, Server]:
        """endpoint: the local process listening on its port, for each bound endpoint that has
        one (blocking: reads /proc). A look due by the timer that misses one waits longer for
        the next; one prompted by an event leaves the wait as it was."""
        self.servers_seen = (snapshot.at, _pids(snapshot))
        found = {}
        for name in self.bindings():
            server = self.procfs.server(self.endpoints[name].base_url)
            if server is not None:
                found[name] = server
        if len(found) == len(self.bindings()):
            self.servers_misses = 0
        elif timer:
            self.servers_misses += 1
        return found

    # --- around each probe run -----------------------------------------------------------------

    def meter(self, endpoint: str, now: float) -> RunMeter | None:
        uuids = self.bindings().get(endpoint)
        if not uuids or not self.up or self.nvml is None:
            return None
        self.running[endpoint] = self.running.get(endpoint, 0) + 1
        return RunMeter(endpoint, uuids, now, self.nvml.energy_j(uuids))

    def finish(
        self,
        meter: RunMeter,
        results: Sequence[ProbeResult],
        run_id: str,
        now: float,
        stored: bool = True,
    ) -> Measured:
        """The run's energy per token, and how busy its GPUs were; call in the run's transaction
        (it stores the energy, when `stored`), then `remember` what it returns once that has
        committed."""
        assert self.nvml is not None
        utilisation = self.nvml.utilization(meter.uuids)
        for uuid in meter.uuids:  # periodic samples taken during the run count too
            during = [
                s.util_gpu
                for s in self.history.get(uuid, ())
                if meter.started <= s.at <= now + 1 and s.util_gpu is not None
            ]
            if during:
                utilisation[uuid] = max(utilisation.get(uuid, 0.0), *during)
        speeds = [r.answer.tokens_per_s for r in results if r.answer.tokens_per_s]
        window = ProbeWindow(
            endpoint=meter.endpoint,
            started=meter.started,
            ended=now,
            answered=bool(results) and all(r.answer.error_class is None for r in results),
            tokens_per_s=statistics.median(speeds) if speeds else None,
            gpu_utilization=utilisation,
        )
        end = self.nvml.energy_j(meter.uuids)
        # Tokens only: a run with an answer counted in streamed events (Triton without a
        # tokenizer) has no energy per token.
        uncounted = any(r.answer.output_tokens and r.answer.tokens is None for r in results)
        tokens = 0 if uncounted else sum(r.answer.tokens or 0 for r in results)
        if meter.energy_j is None or end is None:
            return Measured(window, None)
        joules = max(end - meter.energy_j, 0.0)
        per_token = joules / tokens if tokens else None
        price = self.settings.price_per_kwh
        cost = None
        if per_token is not None and price is not None:
            cost = per_token * 1000 / 3.6e6 * price
        if stored:
            gpu_rows.record_energy(
                self.store.db,
                {
                    "run_id": run_id,
                    "endpoint": meter.endpoint,
                    "started_ts": meter.started,
                    "ended_ts": now,
                    "gpus": ",".join(meter.uuids),
                    "energy_j": joules,
                    "output_tokens": tokens,
                    "joules_per_token": per_token,
                    "cost_per_1k_tokens": cost,
                    "currency": self.settings.currency if cost is not None else None,
                },
            )
        return Measured(window, Energy(joules, tokens, per_token, cost))

    def downsample(self, now: float) -> None:
        s = self.settings
        with self.store.transaction():
            folded = gpu_rows.downsample(self.store.db, now, s.keep_raw, s.keep)
        if folded:
            log.info("GPU samples: %d raw rows folded into one-minute averages", folded)


def _pids(snapshot: Snapshot) -> frozenset[int]:
    return frozenset(p.pid for g in snapshot.gpus for p in g.processes or ())


def _began_answering(windows: Iterable[ProbeWindow], since: float) -> bool:
    """Whether runs that ended after `since` answered when the last one before it had not (or
    there was none): the endpoint's server has come up."""
    before = [w for w in windows if w.ended <= since]
    after = [w for w in windows if w.ended > since]
    return any(w.answered for w in after) and not (before and before[-1].answered)

"""Fleet sizing from one node agent's /metrics, measured: its series, bytes and scrape time, and
what Prometheus pays for them (head memory per series, remote_write bytes per sample, /federate).

The node is an in-process Daemon with 8 GPUs (the fake NVML replaying the recorded H100 trace's
load phase, one compute process per GPU) and 4 vLLM-like endpoints on the default 5-prompt golden
set, answered by httpx.MockTransport with streamed answers and vLLM's own /metrics. It runs enough
probe runs (with drift baselines) and GPU samples that every steady-state series exists. Its
exposition, exactly as the listener serves it (NodeLabelled), is then measured.

Then Debian's prometheus scrapes K copies of that exposition (each with its own `node`), next to
an empty one (the baseline), for the same time: A only scrapes; B also remote_writes through the
cardinality cuts to a local receiver; C also evaluates the fleet recording rules. Head memory per
series is (A - baseline) heap over (A - baseline) head series: a small-scale figure, which the
sizing table extrapolates linearly to 1,000 nodes. /federate is fetched from A and C.

    .venv/bin/python -m bench.fleet_series [--copies 40] [--seconds 80] [--interval 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gzip
import json
import logging
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from tests.fakenvml import PHASES, UUID, FakeGpu, FakeNvml
from tests.peers import PeerMissing, Prometheus, free_port, start_prometheus, stop_process
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.gpu.nvml import Nvml
from watchdog.store import Store
from watchdog.web import listener as web
from watchdog.web.metrics import NodeLabelled

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "golden_sets" / "default.yaml"
FLEET_RULES = ROOT / "deploy" / "fleet" / "mlops-watchdog-fleet.rules.yml"
VLLM_METRICS = (ROOT / "tests" / "fixtures" / "server_metrics" / "vllm.txt").read_bytes()
NODE = "gpu-node-0001"
GPUS = 8
ENDPOINTS = 4
FLEET_NODES = 1000
SCRAPE_INTERVALS_S = (15, 30)
ROUNDS = 45  # probe runs per endpoint: 20 for the baseline, then a drift window with scores
GPU_SAMPLES_PER_ROUND = 12  # a run every 60 s, a GPU sample every 5 s
SCRAPES = 200
HTTP_GETS = 20
# What Prometheus 2.x asks for: OpenMetrics first, so that is what the listener serves it.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SYNTHETIC_PER_TARGET = 5  # up, scrape_duration_seconds, scrape_samples_*, scrape_series_added
# The cardinality cuts, as deploy/fleet/prometheus.yml and deploy/fleet/README.md give them.
PER_PROCESS = ("mlops_watchdog_gpu_process_memory_bytes",)
PER_PROMPT_BUCKETS = tuple(
    f"mlops_watchdog_probe_{h}_seconds_bucket" for h in ("ttfb", "ttft", "e2e", "itl")
)
CUT_REGEX = "mlops_watchdog_gpu_process_memory_bytes|mlops_watchdog_probe_(ttfb|ttft|e2e|itl)_seconds_bucket"
REMOTE_WRITE_QUEUE = {
    "capacity": 10000,
    "max_shards": 50,
    "max_samples_per_send": 2000,
    "batch_send_deadline": "5s",
}
ANSWERS = (  # keyword in the question: the answer, in chunks
    ("capital", ["Par", "is"]),
    ("2 + 2", ["4"]),
    ("JSON", ['{"name": ', '"Alice", ', '"age": 30}']),
    ("Repeat", ["hel", "lo"]),
    ("sky", ["Bl", "ue"]),
)


# --- the node ----------------------------------------------------------------------------------


class BenchClock:
    """Wall time that the bench moves (a minute per round), and a monotonic clock that moves
    with it and with real time, so latencies are real and windows are the daemon's."""

    def __init__(self) -> None:
        self._now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
        self._skipped = 0.0
        self._t0 = time.perf_counter()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return 1000.0 + self._skipped + time.perf_counter() - self._t0

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._skipped += seconds


def steady_load(index: int, n: int) -> list[dict[str, Any]]:
    """The trace's matmul load (its first, idle sample left out) looped for `n` samples, with
    time and the energy counter running on and one compute process of the GPU's own."""
    loop = PHASES["matmul_load"][1:]
    period = loop[-1]["t"] - loop[0]["t"] + (loop[1]["t"] - loop[0]["t"])
    energy = loop[-1]["energy_mj"] - loop[0]["energy_mj"] + 400_000
    out = []
    for i in range(n):
        lap, sample = divmod(i, len(loop))
        s = copy.deepcopy(loop[sample])
        s["t"] += lap * period
        s["energy_mj"] += lap * energy
        s["compute_procs"] = [dict(p, pid=4000 + index) for p in s["compute_procs"]]
        out.append(s)
    return out


def fake_nvml(samples: int) -> FakeNvml:
    gpus = []
    for i in range(GPUS):
        uuid = UUID[:-2] + f"{i:02x}"
        gpus.append(FakeGpu(uuid, steady_load(i, samples), process_names={4000 + i: "python3"}))
    return FakeNvml(gpus)


def sse(*events: object) -> bytes:
    return b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )


def vllm(request: httpx.Request) -> httpx.Response:
    """A healthy vLLM: health, models, its own /metrics, and streamed golden answers."""
    path = request.url.path
    if path == "/health":
        return httpx.Response(200, stream=httpx.ByteStream(b""))
    if path == "/metrics":
        return httpx.Response(
            200, headers={"content-type": "text/plain"}, stream=httpx.ByteStream(VLLM_METRICS)
        )
    if path == "/v1/models":
        body = json.dumps({"data": [{"id": "meta-llama/Llama-3.1-8B-Instruct"}]}).encode()
        return httpx.Response(
            200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(body)
        )
    if path != "/v1/chat/completions":
        return httpx.Response(404, stream=httpx.ByteStream(b"not found"))
    question = json.loads(request.content)["messages"][-1]["content"]
    pieces = next((a for k, a in ANSWERS if k in question), ["?"])
    chunk = {"model": "meta-llama/Llama-3.1-8B-Instruct", "system_fingerprint": "fp-8b"}
    events: list[object] = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
        for p in pieces
    ]
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 6}})
    events.append("[DONE]")
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=httpx.ByteStream(sse(*events))
    )


def node_config(folder: Path) -> Path:
    """deploy/fleet/node-agent.yaml's shape, with 4 endpoints bound to 2 GPUs each."""
    endpoints = "\n".join(
        f"  - {{name: vllm-{i}, api: openai-chat, base_url: http://vllm-{i}.test:8000, "
        f"model: meta-llama/Llama-3.1-8B-Instruct, gpus: [{2 * i}, {2 * i + 1}], "
        f"slo: {{ttft_s: 2, e2e_s: 10}}}}"
        for i in range(ENDPOINTS)
    )
    probes = "\n".join(
        f"  - {{endpoint: vllm-{i}, golden_set: {GOLDEN}, every: 60s, stream: true}}"
        for i in range(ENDPOINTS)
    )
    path = folder / "config.yaml"
    path.write_text(
        f"node: {NODE}\nstorage: {{path: watchdog.db, csv_dir: reports}}\n"
        "listen: 127.0.0.1:9464\nalerting: {route: alertmanager}\n"
        "gpu: {interval: 5s, price_per_kwh: 0.30}\n"
        f"endpoints:\n{endpoints}\nprobes:\n{probes}\n"
    )
    return path


@dataclass
class Node:
    daemon: Daemon
    clock: BenchClock
    client: httpx.AsyncClient
    store: Store


async def build_node(folder: Path) -> Node:
    config = load_config(node_config(folder), env={})
    clock = BenchClock()
    fake = fake_nvml(ROUNDS * GPU_SAMPLES_PER_ROUND + 10)
    nvml = Nvml(lib=fake, wall=lambda: clock.now().timestamp(), monotonic=clock.monotonic)
    store = Store.open(folder / "watchdog.db")
    client = httpx.AsyncClient(transport=httpx.MockTransport(vllm))
    daemon = Daemon(config, client, store, clock, None, CollectorRegistry(), nvml=nvml)
    daemon.gpu.start(clock.now().timestamp())
    for _ in range(ROUNDS):
        for probe in config.probes:
            await daemon.probe_once(probe)
        for _ in range(GPU_SAMPLES_PER_ROUND):
            await daemon.gpu_once()
            clock.advance(60 / GPU_SAMPLES_PER_ROUND)
            fake.step()
    return Node(daemon, clock, client, store)


# --- the exposition ----------------------------------------------------------------------------


@dataclass
class Families:
    total: int
    by_family: Counter[str]
    per_process: int
    per_prompt: int
    buckets: int
    per_prompt_buckets: int
    by_name: Counter[str]
    by_scope: Counter[str]


def scope(labels: dict[str, str]) -> str:
    """What a series is one of: the node's, a GPU's, an endpoint's, or an endpoint's prompt's."""
    if "prompt_id" in labels:
        return "prompt"
    if "endpoint" in labels:
        return "endpoint"
    return "gpu" if "gpu" in labels else "node"


def count(text: str) -> Families:
    by_family: Counter[str] = Counter()
    by_name: Counter[str] = Counter()
    by_scope: Counter[str] = Counter()
    per_process = per_prompt = buckets = per_prompt_buckets = 0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            by_family[family.name] += 1
            by_name[s.name] += 1
            by_scope[scope(s.labels)] += 1
            per_process += "pid" in s.labels
            per_prompt += "prompt_id" in s.labels
            bucket = s.name.endswith("_bucket")
            buckets += bucket
            per_prompt_buckets += bucket and "prompt_id" in s.labels
    return Families(
        sum(by_family.values()),
        by_family,
        per_process,
        per_prompt,
        buckets,
        per_prompt_buckets,
        by_name,
        by_scope,
    )


def timings(makes: dict[str, Any], n: int) -> dict[str, list[float]]:
    """Wall time of each call, interleaved so that every one sees the same noise."""
    out: dict[str, list[float]] = {name: [] for name in makes}
    for make in makes.values():
        make()  # warm
    for _ in range(n):
        for name, make in makes.items():
            started = time.perf_counter()
            make()
            out[name].append(time.perf_counter() - started)
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def http_scrape(node: Node) -> dict[str, Any]:
    """GETs of /metrics through the daemon's own listener (watchdog.web.listener), as Prometheus asks."""
    listen = f"127.0.0.1:{free_port()}"
    d = node.daemon
    application = web.app(
        NodeLabelled(d.registry, d.config.node), d.store, d.endpoints, d.ready, node.clock.now
    )
    runner = await web.serve(application, listen)
    walls = []
    try:
        async with httpx.AsyncClient() as client:
            headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
            for _ in range(HTTP_GETS + 1):
                started = time.perf_counter()
                reply = await client.get(f"http://{listen}/metrics", headers=headers)
                walls.append(time.perf_counter() - started)
                reply.raise_for_status()
    finally:
        await runner.cleanup()
    return {
        "wall_s": walls[1:],
        "content_type": reply.headers.get("content-type", ""),
        "content_encoding": reply.headers.get("content-encoding", "none"),
        "wire_bytes": reply.num_bytes_downloaded,
        "body_bytes": len(reply.content),
    }


# --- Prometheus --------------------------------------------------------------------------------


class Copies:
    """K copies of one exposition, each on its own loopback port and with its own `node`."""

    def __init__(self, body: bytes, k: int):
        self.servers: list[ThreadingHTTPServer] = []
        for i in range(k):
            own = body.replace(f'node="{NODE}"'.encode(), f'node="bench-node-{i:04d}"'.encode())
            self.servers.append(ThreadingHTTPServer(("127.0.0.1", 0), serving(own)))
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def targets(self) -> list[dict[str, Any]]:
        return [
            {
                "targets": [f"127.0.0.1:{s.server_address[1]}"],
                "labels": {"node": f"bench-node-{i:04d}"},
            }
            for i, s in enumerate(self.servers)
        ]

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def serving(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class Receiver:
    """A remote_write endpoint that counts what arrives (snappy-compressed protobuf) and says 204."""

    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", 0))
                self.rfile.read(size)
                with lock:
                    receiver.bytes += size
                    receiver.requests += 1
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/write"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def prometheus(
    folder: Path,
    targets: list[dict[str, Any]],
    interval: str,
    rule_files: tuple[Path, ...] = (),
    remote_write: dict[str, Any] | None = None,
) -> Prometheus:
    """tests/peers' Prometheus (job mlops-watchdog, honor_labels) in a folder of its own."""
    folder.mkdir()
    return start_prometheus(folder, targets, rule_files, interval, remote_write=remote_write)


def own_metrics(prometheus: Prometheus) -> dict[str, float]:
    """Prometheus' own /metrics, summed over labels."""
    text = httpx.get(prometheus.url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def query(prometheus: Prometheus, expr: str) -> float:
    reply = httpx.get(prometheus.url + "/api/v1/query", params={"query": expr}, timeout=10)
    result = reply.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def federate(prometheus: Prometheus, matches: list[str], n: int = 5) -> dict[str, float]:
    """/federate as an upper Prometheus scrapes it: size (plain, gzip) and time, median of n."""
    walls, size, wire = [], 0, 0
    with httpx.Client(timeout=60) as client:
        for _ in range(n):
            started = time.perf_counter()
            reply = client.get(
                prometheus.url + "/federate",
                params=[("match[]", m) for m in matches],
                headers={"Accept-Encoding": "gzip"},
            )
            walls.append(time.perf_counter() - started)
            size, wire = len(reply.content), reply.num_bytes_downloaded
    series = sum(
        1 for line in reply.text.splitlines() if line and not line.startswith("#")
    )  # one line per series
    return {"wall_s": statistics.median(walls), "bytes": size, "wire": wire, "series": series}


@dataclass
class Measured:
    head_series: float
    heap_inuse: float
    rss: float
    cores: float = 0.0  # CPU seconds per second over the measured window


def settle(prometheus: list[Prometheus], readings: int, every_s: float) -> list[Measured]:
    """Medians of a few readings of each Prometheus' head series, heap in use and RSS."""
    seen: list[list[dict[str, float]]] = [[] for _ in prometheus]
    for _ in range(readings):
        for i, prom in enumerate(prometheus):
            seen[i].append(own_metrics(prom))
        time.sleep(every_s)  # waiting for Prometheus' own scrapes and GC, not for our code
    return [
        Measured(
            statistics.median(r["prometheus_tsdb_head_series"] for r in rows),
            statistics.median(r["go_memstats_heap_inuse_bytes"] for r in rows),
            statistics.median(r["process_resident_memory_bytes"] for r in rows),
        )
        for rows in seen
    ]


def recorded_per_node() -> int:
    rules = yaml.safe_load(FLEET_RULES.read_text())
    return sum(1 for g in rules["groups"] for r in g["rules"] if "record" in r) * ENDPOINTS


def scrape_prometheus(body: bytes, k: int, seconds: float, interval: int) -> dict[str, Any]:
    """Side by side for the same time: a baseline with no target; A scraping K copies; B, A with
    remote_write through the cuts; C, A with the fleet recording rules. Then their heaps and
    CPU, what remote_write sent, and /federate."""
    copies = Copies(body, k)
    receiver = Receiver()
    started: list[Prometheus] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            every = f"{interval}s"
            targets = copies.targets()
            remote = {
                "url": receiver.url,
                "queue_config": REMOTE_WRITE_QUEUE,
                "write_relabel_configs": [
                    {"source_labels": ["__name__"], "regex": CUT_REGEX, "action": "drop"}
                ],
            }
            started = [prometheus(folder / "baseline", [], every)]
            started.append(prometheus(folder / "a", targets, every))
            started.append(prometheus(folder / "b", targets, every, remote_write=remote))
            started.append(prometheus(folder / "c", targets, every, (FLEET_RULES,)))
            _, a, remote_writing, c = started
            time.sleep(seconds / 2)  # Prometheus scrapes K targets at its own pace
            before, received_before = [own_metrics(p) for p in started], receiver.bytes
            window_started = time.perf_counter()
            time.sleep(seconds / 2)
            measured = settle(started, readings=5, every_s=3.0)
            after, window = [own_metrics(p) for p in started], time.perf_counter() - window_started
            cpu = "process_cpu_seconds_total"
            for m, x, y in zip(measured, before, after, strict=True):
                m.cores = (y[cpu] - x[cpu]) / window
            i = started.index(remote_writing)
            sent_samples, sent_bytes = (
                after[i][name] - before[i].get(name, 0)
                for name in (
                    "prometheus_remote_storage_samples_total",
                    "prometheus_remote_storage_bytes_total",
                )
            )
            kept = '{job="mlops-watchdog",__name__!~"' + CUT_REGEX + '"}'
            figures = {
                "measured": dict(zip(("baseline", "a", "b", "c"), measured, strict=True)),
                "samples_scraped_a": query(a, 'sum(scrape_samples_scraped{job="mlops-watchdog"})'),
                "up_a": query(a, 'sum(up{job="mlops-watchdog"})'),
                "recorded_series_c": query(c, 'count({__name__=~"endpoint:.+"})'),
                "remote_samples_per_s": sent_samples / window,
                "remote_bytes_per_s": sent_bytes / window,
                "remote_received_bytes": receiver.bytes - received_before,
                "remote_failed": after[i].get("prometheus_remote_storage_samples_failed_total", 0),
                "federate_all": federate(a, ['{job="mlops-watchdog"}']),
                "federate_cut": federate(c, [kept, '{__name__=~"endpoint:.+"}']),
            }
        finally:
            for prom in started:
                stop_process(prom.process)
            copies.close()
            receiver.close()
    return figures


# --- the report --------------------------------------------------------------------------------


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


@dataclass
class Exposition:
    families: Families
    text: bytes
    openmetrics: bytes
    walls: dict[str, list[float]]
    http: dict[str, Any]
    built_s: float


def measure_node() -> Exposition:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        node = asyncio.run(build_node(Path(tmp)))
        built_s = time.perf_counter() - started
        d = node.daemon
        try:
            exposed: Any = NodeLabelled(d.registry, d.config.node)  # what web.app is handed
            text, om = generate_latest(exposed), generate_openmetrics(exposed)
            walls = timings(
                {
                    "bare registry (anchor), text": lambda: generate_latest(d.registry),
                    "NodeLabelled, text (as served)": lambda: generate_latest(exposed),
                    "NodeLabelled, OpenMetrics": lambda: generate_openmetrics(exposed),
                },
                SCRAPES,
            )
            http = asyncio.run(http_scrape(node))
        finally:
            d.gpu.close()
            asyncio.run(node.client.aclose())
            node.store.close()
    walls[f"HTTP GET /metrics via watchdog.web.listener ({HTTP_GETS})"] = http.pop("wall_s")
    return Exposition(count(text.decode()), text, om, walls, http, built_s)


def print_node(e: Exposition) -> None:
    fam = e.families
    print(
        f"One node: {GPUS} GPUs (fake NVML, recorded H100 load, 1 process each), {ENDPOINTS} "
        f"endpoints × the default golden set ({ROUNDS} runs each, drift baselines made), "
        f"{ROUNDS * GPU_SAMPLES_PER_ROUND} GPU samples; built in {e.built_s:.1f} s"
    )
    print(f"samples (series) exposed: {fam.total}, in {len(fam.by_family)} families")
    prompts = len(yaml.safe_load(GOLDEN.read_text())["prompts"])
    sc = fam.by_scope
    print(
        f"  by scope: node {sc['node']}; per GPU {sc['gpu'] / GPUS:g} (×{GPUS}); per endpoint "
        f"{sc['endpoint'] / ENDPOINTS:g} (×{ENDPOINTS}); per endpoint × prompt "
        f"{sc['prompt'] / ENDPOINTS / prompts:g} (×{ENDPOINTS}×{prompts})"
    )
    print(f"  per-process (pid label): {fam.per_process}  [{', '.join(PER_PROCESS)}]")
    print(f"  per-prompt (prompt_id label): {fam.per_prompt}")
    print(f"  histogram buckets: {fam.buckets}, of which per-prompt: {fam.per_prompt_buckets}")
    print("  top 15 families by samples:")
    for name, n in fam.by_family.most_common(15):
        print(f"    {n:6d}  {name}")
    print()
    print("exposition size, bytes             plain      gzip   ratio")
    for name, body in (("text 0.0.4", e.text), ("OpenMetrics", e.openmetrics)):
        zipped = len(gzip.compress(body))
        print(f"  {name:<28} {len(body):9,d} {zipped:9,d} {len(body) / zipped:7.1f}")
    zipped = len(gzip.compress(e.text))
    print(f"  per sample, text: {len(e.text) / fam.total:.0f} plain, {zipped / fam.total:.1f} gzip")
    print()
    print(f"scrape time, {SCRAPES} calls each, ms (wall)          median     p90")
    for name, values in e.walls.items():
        print(f"  {name:<46} {statistics.median(values) * 1e3:7.2f} {p(values, 0.9) * 1e3:7.2f}")
    anchor, served = (statistics.median(v) for v in list(e.walls.values())[:2])
    print(f"  ratio NodeLabelled / bare registry, medians: {served / anchor:.2f}")
    h = e.http
    print(
        f"  asked as Prometheus asks, the listener answered {h['content_type']!r}, "
        f"Content-Encoding {h['content_encoding']}: {h['wire_bytes']:,d} bytes on the wire"
    )
    print()


def print_prometheus(prom: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Prometheus' side; returns the measured bytes per head series and CPU per sample."""
    m = prom["measured"]
    m0, ma = m["baseline"], m["a"]
    added = ma.head_series - m0.head_series
    per_series = (ma.heap_inuse - m0.heap_inuse) / added
    per_sample = (ma.cores - m0.cores) / (added / args.interval)
    print(
        f"Prometheus {prometheus_version()} scraping {args.copies} copies of that exposition "
        f"(each its own `node`) every {args.interval}s for {args.seconds:.0f}s, next to an "
        "empty one; medians of 5 readings, 3 s apart; CPU over the last "
        f"{args.seconds / 2 + 15:.0f}s"
    )
    print(f"  {'':<32} {'head series':>11} {'heap in use':>12} {'RSS':>10} {'CPU cores':>9}")
    for name, key in (
        ("baseline (no target)", "baseline"),
        (f"A ({args.copies} targets)", "a"),
        ("B (A + remote_write, cut)", "b"),
        ("C (A + fleet recording rules)", "c"),
    ):
        x = m[key]
        print(
            f"  {name:<32} {x.head_series:11,.0f} {mib(x.heap_inuse):>12} {mib(x.rss):>10} "
            f"{x.cores:9.3f}"
        )
    print(
        f"  up: {prom['up_a']:.0f} of {args.copies}; samples per scrape round: "
        f"{prom['samples_scraped_a']:,.0f}"
    )
    print(
        f"  MEASURED bytes per head series (A - baseline): {per_series:,.0f} heap in use, "
        f"{(ma.rss - m0.rss) / added:,.0f} RSS; a small-scale figure ({added:,.0f} series, "
        "values that do not change), extrapolated linearly below"
    )
    print(f"  MEASURED CPU per sample ingested (A - baseline): {per_sample * 1e6:.2f} µs")
    for name, key in (("remote_write", "b"), ("the recording rules", "c")):
        extra = (m[key].heap_inuse - ma.heap_inuse) / added
        cores = m[key].cores - ma.cores
        print(
            f"  {name} ({key.upper()} - A): {extra:+,.0f} bytes of heap per series scraped, "
            f"{cores:+.3f} cores"
        )
    fam = prom["families"]
    expected = (
        fam.total
        - fam.per_process
        - fam.per_prompt_buckets
        + recorded_per_node()
        + SYNTHETIC_PER_TARGET
    )
    rate, sent = prom["remote_samples_per_s"], prom["remote_bytes_per_s"]
    print(
        f"  C's recorded series: {prom['recorded_series_c']:,.0f} "
        f"({prom['recorded_series_c'] / args.copies:.0f} per node)"
    )
    print(
        f"  B's remote_write through the cuts: {rate * args.interval / args.copies:,.0f} samples "
        f"per node per scrape (expected {expected - recorded_per_node():,d} without the "
        f"recorded series), {sent / max(rate, 1):.2f} bytes per sample after snappy; failed "
        f"samples: {prom['remote_failed']:.0f}"
    )
    for name, f in (
        ("/federate, every series of A", prom["federate_all"]),
        ("/federate, C's cut set + recorded", prom["federate_cut"]),
    ):
        print(
            f"  {name}: {f['series']:,d} series, {f['bytes']:,d} bytes plain, "
            f"{f['wire']:,d} gzip, served in {f['wall_s'] * 1e3:.0f} ms"
        )
    print()
    return {"bytes_per_series": per_series, "cpu_s_per_sample": per_sample}


def print_sizing(
    e: Exposition, costs: dict[str, float], prom: dict[str, Any] | None, k: int, interval: int
) -> list[dict[str, Any]]:
    per_series = costs.get("bytes_per_series")
    fam = e.families
    served = e.http["wire_bytes"]
    zipped = len(gzip.compress(e.openmetrics))
    per_node = {
        "all series": fam.total,
        "(a) per-process dropped": fam.total - fam.per_process,
        "(a)+(b) buckets -> recorded": fam.total
        - fam.per_process
        - fam.per_prompt_buckets
        + recorded_per_node(),
    }
    print(
        f"Sizing: {FLEET_NODES:,d} nodes × {GPUS} GPUs × {ENDPOINTS} endpoints, each as the node "
        f"above (+{SYNTHETIC_PER_TARGET} series per target: up, scrape_*). Head memory: the "
        "bytes per series MEASURED above at small scale, extrapolated linearly."
    )
    print(
        "  (a) counts where it is dropped, at scrape or upwards; (b) only upwards of the "
        "Prometheus that scrapes the agents: it keeps the buckets for the rules"
    )
    print(
        f"  {'series kept':<28} {'every':>5} {'per node':>8} {'active series':>13} "
        f"{'samples/s':>9} {'scraped, as served':>18} {'if gzip':>12} {'head memory':>11}"
    )
    table = []
    for name, series in per_node.items():
        fleet = FLEET_NODES * (series + SYNTHETIC_PER_TARGET)
        share = series / fam.total  # bytes scale with the series kept
        for every in SCRAPE_INTERVALS_S:
            row = {
                "kept": name,
                "interval_s": every,
                "series_per_node": series,
                "active_series": fleet,
                "samples_per_s": fleet / every,
                "bytes_per_s_served": FLEET_NODES * served * share / every,
                "bytes_per_s_gzip": FLEET_NODES * zipped * share / every,
                "head_bytes": fleet * per_series if per_series else None,
            }
            table.append(row)
            head = gib(row["head_bytes"]) if row["head_bytes"] else "n/a"
            print(
                f"  {name:<28} {every:>4}s {series:>8,d} {fleet:>13,d} "
                f"{row['samples_per_s']:>9,.0f} {mib(row['bytes_per_s_served']) + '/s':>18} "
                f"{mib(row['bytes_per_s_gzip']) + '/s':>12} {head:>11}"
            )
    if "cpu_s_per_sample" in costs:
        for every in SCRAPE_INTERVALS_S:
            cores = [
                FLEET_NODES * (n + SYNTHETIC_PER_TARGET) / every * costs["cpu_s_per_sample"]
                for n in per_node.values()
            ]
            print(
                f"  Prometheus CPU for scraping every {every}s (measured µs per sample, linear): "
                f"{cores[0]:.2f} cores for all series, {cores[-1]:.2f} for (a)+(b)"
            )
    if prom is not None:
        per_scrape = prom["remote_samples_per_s"] * interval / k
        per_sample = prom["remote_bytes_per_s"] / max(prom["remote_samples_per_s"], 1)
        for every in SCRAPE_INTERVALS_S:
            rate = FLEET_NODES * per_scrape / every
            print(
                f"  remote_write of (a)+(b) every {every}s: {rate:,.0f} samples/s, "
                f"{mib(rate * per_sample)}/s"
            )
        for name, f in (("every series", prom["federate_all"]), ("(a)+(b)", prom["federate_cut"])):
            print(
                f"  /federate of {name}, linear from {k} nodes: "
                f"{mib(f['bytes'] / k * FLEET_NODES)} plain, {mib(f['wire'] / k * FLEET_NODES)} "
                f"gzip and {f['wall_s'] / k * FLEET_NODES:.1f} s per federation scrape"
            )
    return table


def report(args: argparse.Namespace) -> dict[str, Any]:
    e = measure_node()
    print_node(e)
    prom: dict[str, Any] | None = None
    costs: dict[str, float] = {}
    try:
        prom = scrape_prometheus(e.text, args.copies, args.seconds, args.interval)
    except PeerMissing as exc:
        print(f"no Prometheus measurement: {exc}\n")
    if prom is not None:
        prom["families"] = e.families
        costs = print_prometheus(prom, args)
    table = print_sizing(e, costs, prom, args.copies, args.interval)
    fam = e.families
    return {
        "series": fam.total,
        "by_family": dict(fam.by_family),
        "per_process": fam.per_process,
        "per_prompt": fam.per_prompt,
        "buckets": fam.buckets,
        "per_prompt_buckets": fam.per_prompt_buckets,
        "by_scope": dict(fam.by_scope),
        "bytes_text": len(e.text),
        "bytes_openmetrics": len(e.openmetrics),
        "http": e.http,
        "scrape_s": {k: statistics.median(v) for k, v in e.walls.items()},
        "costs": costs,
        "prometheus": {k: v for k, v in (prom or {}).items() if k != "families"},
        "table": table,
    }


def prometheus_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).split()[2]
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--copies", type=int, default=40, help="targets Prometheus scrapes (K)")
    parser.add_argument("--seconds", type=float, default=80, help="scraping before measuring")
    parser.add_argument("--interval", type=int, default=5, help="Prometheus scrape interval, s")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    # A TERM stops the Prometheus and servers it started, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.getLogger("mlops_watchdog").setLevel(logging.ERROR)  # the alerts the load raises
    figures = report(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()

"""Probe cost: CPU seconds per probe of a running daemon against Prometheus' blackbox_exporter
and a bare aiohttp client, all probing the same nginx-served canned chat completion (Debian's
nginx and prometheus-blackbox-exporter), each pinned to one core, side by side and interleaved
in one run.

Two shapes, each at --rate probes a second:
- 5 prompts a run on 20 endpoints, every second: the readiness, identity, SQLite, alerting and
  metrics work of a run is shared by five prompts;
- 1 prompt a run on 100 endpoints, every second: that work falls on every probe.

A watchdog probe is one golden prompt: the request, its checks, its SQLite write, its metrics,
and its share of the run's readiness, engine metrics, identity and drift work. nginx serves the
routes a llama-server has (health, models, props, metrics); "lean" turns the first three off.
Before its measured window, the daemon's database is given ten minutes of its endpoints' runs
(its own first runs, copied back in time), as a daemon that has run for a while has: on a fresh
file a stored run costs less than it does in service. Beside it, the watchdog's bare path: its
scheduler and HTTP transport sending the same requests, and nothing else.

blackbox_exporter is driven the same way in both shapes: one target per endpoint (a query string
tells them apart; nginx serves them all), probes started at the daemon's rate on a steady clock,
round robin over the targets, as Prometheus scraping them would. A blackbox probe is one
/probe?module=chat request (a POST with a body check). The floor is one aiohttp ClientSession
sending the same POSTs at the same rate, in a process of its own on the same core; beside it,
the same POSTs written by hand on an asyncio connection (no HTTP library), and asyncio waking
at that rate with nothing to send: what any asyncio prober pays before its work. Beside
them, once a repeat, the DESIGN.md anchor: blackbox_exporter with 8 probes in flight back to
back (its best case).

    .venv/bin/python -m bench.probe_cost [--rate 100] [--seconds 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import results
from bench.figures import caption
from tests.peers import free_port, stop_process

CANNED = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "model": "canned",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
}
QUESTION = {"model": "canned", "messages": [{"role": "user", "content": "Capital of France?"}]}
WARMUP_S = 10.0  # the daemon's imports, first runs and first baselines
HISTORY_S = 600  # a running daemon's database holds its endpoints' past runs (see `history`)


@dataclass(frozen=True)
class Shape:
    """Endpoints, each asked `prompts` prompts a run, every second."""

    endpoints: int
    prompts: int

    @property
    def name(self) -> str:
        prompts = "1 prompt" if self.prompts == 1 else f"{self.prompts} prompts"
        return f"{prompts} a run, {self.endpoints} endpoints"

    @classmethod
    def at(cls, rate: float, prompts: int) -> Shape:
        return cls(max(1, round(rate / prompts)), prompts)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pinned(core: int, args: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *args] if shutil.which("taskset") else args


ROOT = Path(__file__).resolve().parents[1]
PROPS = {"build_info": "b6000-canned", "model_path": "/models/canned.gguf"}


def start_nginx(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx serving what a llama-server serves: a canned chat completion, its health, models,
    props and engine metrics routes."""
    port = free_port()
    body = json.dumps(CANNED).replace("'", "\\'")
    shutil.copy(ROOT / "tests" / "fixtures" / "server_metrics" / "llamacpp.txt", folder / "metrics")
    (folder / "props").write_text(json.dumps(PROPS))
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {folder};
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{ default_type application/json; return 200 '{body}'; }}
    location = /v1/models {{ default_type application/json; return 200 '{{"data":[{{"id":"canned"}}]}}'; }}
    location = /health {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
    location = /props {{ default_type application/json; alias {folder}/props; }}
    location = /metrics {{ default_type text/plain; alias {folder}/metrics; }}
    location / {{ return 404; }}
  }}
}}
"""
    )
    nginx = subprocess.Popen(
        pinned(0, ["nginx", "-p", str(folder), "-c", str(conf)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health")
    return nginx, url


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def targets(target: str, endpoints: int) -> list[str]:
    """One completion URL per endpoint: the same nginx route, told apart by a query string."""
    return [f"{target}/v1/chat/completions?endpoint=e{i}" for i in range(endpoints)]


def blackbox(folder: Path, urls: list[str], probes: int, rate: float | None = None) -> float:
    """blackbox_exporter's CPU seconds per probe: 8 probes in flight back to back, or, with
    `rate`, probes started at that many a second, round robin over `urls`, as Prometheus
    scraping one target per URL would start them."""
    port = free_port()
    config = folder / "blackbox.yml"
    module = {
        "prober": "http",
        "timeout": "5s",
        "http": {
            "method": "POST",
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps(QUESTION),
            "valid_status_codes": [200],
            "fail_if_body_not_matches_regexp": ["Paris"],
        },
    }
    config.write_text(json.dumps({"modules": {"chat": module}}))
    binary = shutil.which("prometheus-blackbox-exporter") or "blackbox_exporter"
    process = subprocess.Popen(
        pinned(1, [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/probe"
        wait_for(f"http://127.0.0.1:{port}/metrics")

        async def drive() -> float:
            async with httpx.AsyncClient(timeout=10) as client:
                gate = asyncio.Semaphore(8)

                async def one(i: int) -> None:
                    params = {"module": "chat", "target": urls[i % len(urls)]}
                    async with gate:
                        reply = await client.get(url, params=params)
                        assert "probe_success 1" in reply.text, reply.text[-500:]

                async def paced(n: int) -> None:
                    assert rate is not None
                    start, tasks = time.monotonic(), []
                    for i in range(n):
                        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                        tasks.append(asyncio.create_task(one(i)))
                    await asyncio.gather(*tasks)

                await asyncio.gather(*(one(i) for i in range(200)))  # warm-up
                before = cpu_seconds(process.pid)
                if rate is None:
                    await asyncio.gather(*(one(i) for i in range(probes)))
                else:
                    await paced(probes)
                return cpu_seconds(process.pid) - before

        return asyncio.run(drive()) / probes
    finally:
        stop_process(process)


# The floors, each reading its own CPU, at the same pace on the same core:
# - aiohttp: one ClientSession sending the same POSTs;
# - streams: the same POSTs written by hand on one keep-alive asyncio connection, read by
#   Content-Length: what a Python prober costs with no HTTP library at all;
# - wake: asyncio waking at that pace and sending nothing: what the event loop alone costs.
FLOOR = """
import asyncio, json, os, sys, time
from urllib.parse import urlsplit

def cpu():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

async def prober(kind, urls, body):
    if kind == "wake":
        async def one(i):
            pass
        return one, None
    if kind == "aiohttp":
        import aiohttp
        session = aiohttp.ClientSession()
        async def one(i):
            async with session.post(urls[i % len(urls)], data=body,
                                    headers={"Content-Type": "application/json"}) as reply:
                assert reply.status == 200 and "Paris" in await reply.text()
        return one, session.close
    url = urlsplit(urls[0])
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    gate = asyncio.Lock()  # one request at a time on the one connection
    async def one(i):
        path = urlsplit(urls[i % len(urls)])
        head = (f"POST {path.path}?{path.query} HTTP/1.1\\r\\nHost: {url.netloc}\\r\\n"
                f"Content-Type: application/json\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n")
        async with gate:
            writer.write(head.encode() + body.encode())
            headers = await reader.readuntil(b"\\r\\n\\r\\n")
            length = int(headers.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
            reply = await reader.readexactly(length)
        assert headers.startswith(b"HTTP/1.1 200") and b"Paris" in reply
    async def close():
        writer.close()
    return one, close

async def main(kind, urls, rate, probes, body):
    one, close = await prober(kind, urls, body)
    await asyncio.gather(*(one(i) for i in range(200)))
    start, before, tasks = time.monotonic(), cpu(), []
    for i in range(probes):
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    print(json.dumps((cpu() - before) / probes))
    if close:
        await close()

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                 sys.argv[5]))
"""
FLOORS = ("aiohttp", "streams", "wake")

# The watchdog's own bare path, in a process of its own on the same core: its scheduler (one
# APScheduler job per endpoint, on the daemon's ticks) and its HTTP transport sending the same
# POSTs, each run's prompts one after another, and nothing else: no look at the routes, no
# checks, no probe thread, nothing stored, no alert state, drift or metrics. What the daemon
# pays before it does any of the work it is for.
BARE = """
import asyncio, json, os, sys, time
from datetime import UTC, datetime, timedelta
from watchdog.probers import exchange
from watchdog.probers.transport import http_client
from watchdog.runtime.scheduler import Scheduler

def cpu():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

async def main(urls, prompts, seconds, warmup, body):
    sent = {"Content-Type": "application/json"}
    done = [0]
    async with http_client() as client:
        async def run(url):
            for _ in range(prompts):
                async with exchange.send(client, "POST", url, sent, 10.0, body) as reply:
                    assert reply.status_code == 200 and b"Paris" in await reply.aread()
                done[0] += 1
        scheduler, now = Scheduler(), datetime.now(UTC)
        for n, url in enumerate(urls):
            start = now + timedelta(seconds=min(1.0, len(urls) * 0.01) * n / len(urls))
            scheduler.every(f"e{n}", lambda url=url: run(url), 1.0, start=start)
        scheduler.start()
        await asyncio.sleep(warmup)
        before, n = cpu(), done[0]
        await asyncio.sleep(seconds)
        print(json.dumps((cpu() - before) / max(1, done[0] - n)))
        await scheduler.stop(5)

asyncio.run(main(json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                 float(sys.argv[4]), sys.argv[5].encode()))
"""


def paced_floor(kind: str, urls: list[str], probes: int, rate: float) -> float:
    """A floor's CPU seconds per request (per wake for "wake"), in a process of its own on the
    daemon's core."""
    args = [kind, json.dumps(urls), str(rate), str(probes), json.dumps(QUESTION)]
    out = subprocess.run(
        pinned(1, [sys.executable, "-c", FLOOR, *args]), capture_output=True, check=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def history(database: Path, seconds: int) -> None:
    """`seconds` more of the database's own runs before the first, copied back in time in steps
    of what it holds, with run ids of their own, while the daemon runs. On a fresh file the
    indexes of a hundred endpoints share their pages, and a stored run looked cheaper than it
    is in a daemon that has run for a while, where each endpoint's entries fill pages of their
    own (tests/test_store.py, test_a_stored_run_rewrites_few_pages)."""
    db = sqlite3.connect(database, timeout=30)
    try:
        with db:
            (first, last) = db.execute(
                "select min(started_ts), max(started_ts) from results"
            ).fetchone()
            if first is None:  # nothing stored yet: nothing to copy
                return
            step = max(1, math.ceil(last - first))
            for table in ("results", "readiness"):
                info = db.execute(f"PRAGMA table_info({table})").fetchall()
                columns = [c[1] for c in info if c[1] != "id"]
                moved = ", ".join(
                    "lower(hex(randomblob(8)))"
                    if c == "run_id"
                    else "started_ts - ?"
                    if c == "started_ts"
                    else c
                    for c in columns
                )
                for back in range(step, seconds + step, step):
                    db.execute(
                        f"insert into {table} ({', '.join(columns)}) select {moved} "
                        f"from {table} where started_ts >= ?",
                        [back, first],
                    )
    finally:
        db.close()


def bare_path(urls: list[str], prompts: int, seconds: float) -> float:
    """The watchdog's bare path's CPU seconds per request (see BARE), on the daemon's core."""
    args = [json.dumps(urls), str(prompts), str(seconds), str(WARMUP_S / 2), json.dumps(QUESTION)]
    out = subprocess.run(
        pinned(1, [sys.executable, "-c", BARE, *args]),
        capture_output=True,
        check=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    return float(out.stdout.strip().splitlines()[-1])


def watchdog(
    folder: Path,
    target: str,
    shape: Shape,
    seconds: float,
    lean: bool,
    pythonpath: str | None = None,
) -> dict[str, float]:
    """The daemon's CPU seconds per probe in `shape`, and its schedule lateness; `pythonpath`
    runs another copy of the package (an A/B comparison)."""
    golden = folder / f"bench{shape.prompts}.yaml"
    golden.write_text(
        "name: bench\nprompts:\n"
        + "".join(
            f"  - {{id: p{i}, prompt: 'Capital of France?', checks: [{{contains: Paris}}]}}\n"
            for i in range(shape.prompts)
        )
    )
    extra = ", health_path: null, ready_path: null, server_metrics: false" if lean else ""
    listen = f"127.0.0.1:{free_port()}"
    tag = f"{shape.endpoints}x{shape.prompts}{'-lean' if lean else ''}-{free_port()}"
    lines = [
        f"storage: {{path: {folder}/w{tag}.db, csv_dir: {folder}/reports, report_every: 1h}}",
        f'listen: "{listen}"',
        "max_concurrency: 8",
        "endpoints:",
        *(
            f'  - {{name: e{i}, api: openai-chat, base_url: "{target}", concurrency: 1{extra}}}'
            for i in range(shape.endpoints)
        ),
        "probes:",
        *(
            f'  - {{endpoint: e{i}, golden_set: "{golden}", every: 1s, stream: false}}'
            for i in range(shape.endpoints)
        ),
    ]
    config = folder / f"config{tag}.yaml"
    config.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)]
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    log = (folder / f"watchdog{tag}.log").open("wb")
    process = subprocess.Popen(
        pinned(1, [*command, "--log-level", "WARNING"]),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=pythonpath or None,
    )
    try:
        metrics = f"http://{listen}/metrics"
        try:
            wait_for(metrics, 60)
        except RuntimeError:
            log.flush()
            said = (folder / f"watchdog{tag}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon did not come up; its log ends:\n{said}") from None
        time.sleep(WARMUP_S)
        history(folder / f"w{tag}.db", HISTORY_S)
        time.sleep(WARMUP_S / 5)  # the copy's commit and checkpoint, out of the window
        before_cpu, before_n, before_late = cpu_seconds(process.pid), *probes_done(metrics)
        time.sleep(seconds)
        after_cpu, after_n, after_late = cpu_seconds(process.pid), *probes_done(metrics)
        n = after_n - before_n
        late = [b - a for a, b in zip(before_late, after_late, strict=True)]
        return {
            "cpu_per_probe_s": (after_cpu - before_cpu) / max(n, 1),
            "probes_per_s": n / seconds,
            "lateness_p50_s": quantile(late, 0.5),
            "lateness_p99_s": quantile(late, 0.99),
        }
    finally:
        stop_process(process)
        log.close()


LATENESS_BOUNDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, float("inf"))


def probes_done(metrics: str) -> tuple[int, list[float]]:
    """Probes finished, and the lateness histogram's cumulative bucket counts."""
    text = httpx.get(metrics, timeout=10).text
    total = 0
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("mlops_watchdog_probes_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("mlops_watchdog_scheduler_lateness_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    return total, [buckets.get(b, 0.0) for b in LATENESS_BOUNDS]


def quantile(cumulative: list[float], q: float) -> float:
    """histogram_quantile's linear interpolation within the bucket that holds the q-th run."""
    total = cumulative[-1]
    if not total:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(LATENESS_BOUNDS, cumulative, strict=True):
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def measure(args: argparse.Namespace, shapes: list[Shape]) -> dict[str, Any]:
    """Every measurement `repeats` times, interleaved, so that all see the same noise."""
    probes = round(args.rate * args.seconds)
    raw: dict[str, dict[str, list[float]]] = {s.name: {} for s in shapes}
    anchor: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nginx, target = start_nginx(folder)
        try:
            for repeat in range(args.repeats):
                anchor.append(blackbox(folder, targets(target, 1), args.probes))
                for shape in shapes:
                    rows = raw[shape.name]
                    urls = targets(target, shape.endpoints)
                    rows.setdefault("blackbox", []).append(
                        blackbox(folder, urls, probes, args.rate)
                    )
                    for kind in FLOORS:
                        rows.setdefault(kind, []).append(paced_floor(kind, urls, probes, args.rate))
                    bare = bare_path(urls, shape.prompts, args.seconds)
                    rows.setdefault("bare", []).append(bare)
                    for lean in (False, True):
                        got = watchdog(folder, target, shape, args.seconds, lean)
                        mode = "lean" if lean else "watchdog"
                        for key, value in got.items():
                            rows.setdefault(f"{mode} {key}", []).append(value)
                    print(f"repeat {repeat + 1}, {shape.name}: {_line(rows)}", file=sys.stderr)
        finally:
            stop_process(nginx)
    return summarise(args, shapes, raw, anchor)


def _line(rows: dict[str, list[float]]) -> str:
    keys = ("blackbox", *FLOORS, "bare", "watchdog cpu_per_probe_s", "lean cpu_per_probe_s")
    return ", ".join(f"{k.split()[0]} {rows[k][-1] * 1000:.3f} ms" for k in keys)


def summarise(
    args: argparse.Namespace,
    shapes: list[Shape],
    raw: dict[str, dict[str, list[float]]],
    anchor: list[float],
) -> dict[str, Any]:
    """Medians in milliseconds, with every repeat's values kept beside them."""

    def ms(values: list[float]) -> float:
        return round(statistics.median(values) * 1000, 4)

    out = []
    for shape in shapes:
        rows = raw[shape.name]
        out.append(
            {
                "shape": shape.name,
                "endpoints": shape.endpoints,
                "prompts": shape.prompts,
                "rate": args.rate,
                "blackbox_ms": ms(rows["blackbox"]),
                "aiohttp_ms": ms(rows["aiohttp"]),
                "streams_ms": ms(rows["streams"]),
                "wake_ms": ms(rows["wake"]),
                "bare_ms": ms(rows["bare"]),
                "watchdog_ms": ms(rows["watchdog cpu_per_probe_s"]),
                "lean_ms": ms(rows["lean cpu_per_probe_s"]),
                "probes_per_s": round(statistics.median(rows["watchdog probes_per_s"]), 1),
                "lateness_p50_ms": ms(rows["watchdog lateness_p50_s"]),
                "lateness_p99_ms": ms(rows["watchdog lateness_p99_s"]),
                "raw_ms": {
                    key.removesuffix("_s"): [round(v * 1000, 4) for v in values]
                    for key, values in rows.items()
                    if not key.endswith("probes_per_s")
                },
                "raw_probes_per_s": [round(v, 1) for v in rows["watchdog probes_per_s"]],
            }
        )
    return {
        "repeats": args.repeats,
        "seconds": args.seconds,
        "rate": args.rate,
        "anchor_ms": ms(anchor),  # blackbox_exporter, 8 in flight back to back
        "raw_anchor_ms": [round(v * 1000, 4) for v in anchor],
        "shapes": out,
    }


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def table(result: dict[str, Any]) -> str:
    """bench/README.md's table: per shape, ms of CPU per probe, and ratios to blackbox_exporter
    at the same rate and to the bare aiohttp floor."""
    figures = result["figures"]
    lines = [
        caption(result),
        "",
        f"| medians of {figures['repeats']}, {figures['seconds']:g} s each | ms CPU per probe "
        "| ratio to blackbox_exporter | ratio to bare aiohttp |",
        "| --- | --- | --- | --- |",
    ]
    for s in figures["shapes"]:
        box, floor = s["blackbox_ms"], s["aiohttp_ms"]
        lines += [
            f"| **{s['shape']}, {s['rate']:g} probes/s** | | | |",
            f"| blackbox_exporter, one target per endpoint | {box:.3f} | 1 | {_ratio(box, floor)} |",
            f"| bare aiohttp (the floor) | {floor:.3f} | {_ratio(floor, box)} | 1 |",
            f"| *hand-written HTTP/1.1 on asyncio streams, no library* | *{s['streams_ms']:.3f}* "
            f"| *{_ratio(s['streams_ms'], box)}* | *{_ratio(s['streams_ms'], floor)}* |",
            f"| *asyncio waking at the same pace, no request* | *{s['wake_ms']:.3f}* "
            f"| *{_ratio(s['wake_ms'], box)}* | *{_ratio(s['wake_ms'], floor)}* |",
            f"| *the watchdog's scheduler and HTTP transport alone: nothing checked or stored* "
            f"| *{s['bare_ms']:.3f}* | *{_ratio(s['bare_ms'], box)}* "
            f"| *{_ratio(s['bare_ms'], floor)}* |",
            f"| **watchdog, defaults** | **{s['watchdog_ms']:.3f}** "
            f"| **{_ratio(s['watchdog_ms'], box)}** | {_ratio(s['watchdog_ms'], floor)} |",
            f"| watchdog, lean | {s['lean_ms']:.3f} | {_ratio(s['lean_ms'], box)} "
            f"| {_ratio(s['lean_ms'], floor)} |",
        ]
    if figures.get("anchor_ms"):
        lines.append(
            f"| blackbox_exporter, 8 in flight back to back (DESIGN.md's anchor) "
            f"| {figures['anchor_ms']:.3f} | | |"
        )
    return "\n".join(lines) + "\n"


def readme(result: dict[str, Any]) -> str:
    """One paragraph for the README's comparison with blackbox_exporter."""
    figures = result["figures"]
    parts = [
        f"{s['shape']}: {s['watchdog_ms']:.2f} ms of CPU per probe against blackbox_exporter's "
        f"{s['blackbox_ms']:.2f} ms (**{_ratio(s['watchdog_ms'], s['blackbox_ms'])}×**; "
        f"{_ratio(s['watchdog_ms'], s['aiohttp_ms'])}× a bare aiohttp request; its scheduler "
        f"and HTTP transport alone, nothing checked or stored, {s['bare_ms']:.2f} ms, "
        f"{_ratio(s['bare_ms'], s['blackbox_ms'])}×), holding {s['probes_per_s']:g} probes/s "
        f"with schedule lateness p50 {s['lateness_p50_ms']:.0f} ms"
        f", p99 {s['lateness_p99_ms']:.0f} ms"
        for s in figures["shapes"]
    ]
    return (
        f"One core, {figures['rate']:g} probes a second, storage (into a database holding ten "
        f"minutes of the endpoints' runs), checks, alert state and metrics included, measured "
        f"side by side with blackbox_exporter probing one target per endpoint at the same rate: "
        f"{'; '.join(parts)}. {caption(result)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="probes per second")
    parser.add_argument("--seconds", type=float, default=30, help="measured window")
    parser.add_argument("--probes", type=int, default=3000, help="back-to-back anchor probes")
    parser.add_argument("--repeats", type=int, default=5, help="measurements; medians shown")
    parser.add_argument(
        "--shape",
        choices=("both", "5", "1"),
        default="both",
        help="prompts a run: 5 on rate/5 endpoints, 1 on rate endpoints, or both",
    )
    args = parser.parse_args()
    prompts = (5, 1) if args.shape == "both" else (int(args.shape),)
    shapes = [Shape.at(args.rate, p) for p in prompts]
    result = measure(args, shapes)
    print(f"blackbox_exporter, 8 in flight back to back: {result['anchor_ms']:.3f} ms CPU a probe")
    for s in result["shapes"]:
        box, floor = s["blackbox_ms"], s["aiohttp_ms"]
        print(
            f"{s['shape']}, {s['rate']:g} probes/s (medians of {args.repeats}): blackbox_exporter "
            f"{box:.3f} ms, bare aiohttp {floor:.3f} ms; watchdog {s['watchdog_ms']:.3f} ms "
            f"(ratio {_ratio(s['watchdog_ms'], box)} to blackbox, "
            f"{_ratio(s['watchdog_ms'], floor)} to the floor), lean {s['lean_ms']:.3f} ms "
            f"({_ratio(s['lean_ms'], box)}); {s['probes_per_s']:g} probes/s, lateness p50 "
            f"{s['lateness_p50_ms']:.0f} ms, p99 {s['lateness_p99_ms']:.0f} ms"
        )
    print(json.dumps(result), file=sys.stderr)  # kept in the log, whatever happens next
    results.record("probe_cost", results.command_line(), result)


if __name__ == "__main__":
    main()

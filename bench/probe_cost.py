"""Probe cost: CPU seconds per probe of a running daemon against Prometheus' blackbox_exporter,
both probing the same nginx-served canned chat completion (Debian's nginx and
prometheus-blackbox-exporter), each pinned to one core, in one run.

A watchdog probe is one golden prompt: the request, its checks, its SQLite write, its metrics,
and its share of the run's readiness, engine metrics, identity and drift work. nginx serves the
routes a llama-server has (health, models, props, metrics); "lean" turns the first three off. A
blackbox probe is one /probe?module=chat request (a POST with a body check). The anchor, as in
DESIGN.md, drives it back to back with 8 in flight (its best case). Beside it, blackbox_exporter
at the daemon's rate (--rate), probes started on a steady clock as Prometheus scraping many
targets starts them: what it would cost doing the daemon's work.

    .venv/bin/python -m bench.probe_cost [--rate 100] [--seconds 60] [--probes 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

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
PROMPTS = 5  # per run, like the default golden set


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


def blackbox(folder: Path, target: str, probes: int, rate: float | None = None) -> float:
    """blackbox_exporter's CPU seconds per probe: 8 probes in flight back to back, or, with
    `rate`, probes started at that many a second, as Prometheus scraping many targets would."""
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
        params = {"module": "chat", "target": target + "/v1/chat/completions"}

        async def drive() -> float:
            async with httpx.AsyncClient(timeout=10) as client:
                gate = asyncio.Semaphore(8)

                async def one() -> None:
                    async with gate:
                        reply = await client.get(url, params=params)
                        assert "probe_success 1" in reply.text, reply.text[-500:]

                async def paced(n: int) -> None:
                    assert rate is not None
                    start, tasks = time.monotonic(), []
                    for i in range(n):
                        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                        tasks.append(asyncio.create_task(one()))
                    await asyncio.gather(*tasks)

                await asyncio.gather(*(one() for _ in range(200)))  # warm-up
                before = cpu_seconds(process.pid)
                if rate is None:
                    await asyncio.gather(*(one() for _ in range(probes)))
                else:
                    await paced(probes)
                return cpu_seconds(process.pid) - before

        return asyncio.run(drive()) / probes
    finally:
        stop_process(process)


def watchdog(
    folder: Path, target: str, rate: float, seconds: float, lean: bool
) -> dict[str, float]:
    """The daemon's CPU seconds per probe at `rate` probes/s, and its schedule lateness."""
    endpoints = max(1, round(rate / PROMPTS))  # each runs PROMPTS prompts every second
    golden = folder / "bench.yaml"
    golden.write_text(
        "name: bench\nprompts:\n"
        + "".join(
            f"  - {{id: p{i}, prompt: 'Capital of France?', checks: [{{contains: Paris}}]}}\n"
            for i in range(PROMPTS)
        )
    )
    extra = ", health_path: null, ready_path: null, server_metrics: false" if lean else ""
    listen = f"127.0.0.1:{free_port()}"
    lines = [
        f"storage: {{path: {folder}/w{int(lean)}.db, csv_dir: {folder}/reports, report_every: 1h}}",
        f'listen: "{listen}"',
        "max_concurrency: 8",
        "endpoints:",
        *(
            f'  - {{name: e{i}, api: openai-chat, base_url: "{target}", concurrency: 1{extra}}}'
            for i in range(endpoints)
        ),
        "probes:",
        *(
            f'  - {{endpoint: e{i}, golden_set: "{golden}", every: 1s, stream: false}}'
            for i in range(endpoints)
        ),
    ]
    config = folder / f"config{int(lean)}.yaml"
    config.write_text("\n".join(lines) + "\n")
    command = [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)]
    log = (folder / f"watchdog{int(lean)}.log").open("wb")
    process = subprocess.Popen(
        pinned(1, [*command, "--log-level", "WARNING"]), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        metrics = f"http://{listen}/metrics"
        wait_for(metrics, 60)
        time.sleep(10)  # warm-up: imports, first runs, first baselines
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="watchdog probes per second")
    parser.add_argument("--seconds", type=float, default=60, help="measured window")
    parser.add_argument("--probes", type=int, default=3000, help="blackbox probes")
    parser.add_argument("--repeats", type=int, default=3, help="measurements; medians shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nginx, target = start_nginx(folder)
        try:
            rows: dict[str, list[float]] = {}
            for _ in range(args.repeats):  # side by side, interleaved, so both see the same noise
                rows.setdefault("blackbox", []).append(blackbox(folder, target, args.probes))
                paced = blackbox(folder, target, args.probes, args.rate)
                rows.setdefault("blackbox paced", []).append(paced)
                for lean in (False, True):
                    got = watchdog(folder, target, args.rate, args.seconds, lean)
                    for key, value in got.items():
                        rows.setdefault(f"{'lean' if lean else 'default'} {key}", []).append(value)
        finally:
            stop_process(nginx)
    anchor = statistics.median(rows["blackbox"])
    paced = statistics.median(rows["blackbox paced"])
    print(
        f"blackbox_exporter, 8 in flight back to back (the anchor): {anchor * 1000:.3f} ms CPU "
        f"per probe; at {args.rate:g} probes/s: {paced * 1000:.3f} ms (medians of {args.repeats})"
    )
    for mode in ("default", "lean"):
        cpu = statistics.median(rows[f"{mode} cpu_per_probe_s"])
        rate = statistics.median(rows[f"{mode} probes_per_s"])
        p50 = statistics.median(rows[f"{mode} lateness_p50_s"])
        p99 = statistics.median(rows[f"{mode} lateness_p99_s"])
        print(
            f"watchdog ({mode}): {cpu * 1000:.3f} ms CPU per probe, ratio {cpu / anchor:.2f} "
            f"(to blackbox at the same rate: {cpu / paced:.2f}); {rate:.1f} probes/s of "
            f"{args.rate:g} asked; lateness p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()

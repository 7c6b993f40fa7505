"""Scale: one daemon watching 1,000 endpoints (all served by one nginx canned completion),
pinned to one core. Reports RSS, CPU per probe and schedule lateness as probes accumulate, and
RSS growth from the first sample after warm-up to the last (goal: at most 5% over 200k probes).

    .venv/bin/python -m bench.scale [--endpoints 1000] [--every 10] [--probes 200000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.probe_cost import cpu_seconds, pinned, probes_done, quantile, start_nginx, wait_for
from tests.peers import free_port, stop_process


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--every", type=float, default=10, help="seconds between runs per endpoint")
    parser.add_argument("--probes", type=int, default=200_000, help="stop after this many")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the first sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        nginx, target = start_nginx(folder)
        golden = folder / "one.yaml"
        golden.write_text(
            "name: one\nprompts:\n  - {id: p, prompt: 'Capital of France?', checks: [{contains: Paris}]}\n"
        )
        listen = f"127.0.0.1:{free_port()}"
        lines = [
            f"storage: {{path: {folder}/w.db, csv_dir: {folder}/reports, report_every: 1h}}",
            f'listen: "{listen}"',
            "max_concurrency: 16",
            "endpoints:",
            *(
                f'  - {{name: e{i}, api: openai-chat, base_url: "{target}", server_metrics: false}}'
                for i in range(args.endpoints)
            ),
            "probes:",
            *(
                f'  - {{endpoint: e{i}, golden_set: "{golden}", every: {args.every}s, '
                f"jitter: {args.every / 2}s, stream: false}}"
                for i in range(args.endpoints)
            ),
        ]
        config = folder / "config.yaml"
        config.write_text("\n".join(lines) + "\n")
        command = [sys.executable, "-m", "watchdog.cli", "run", "--config", str(config)]
        log = (folder / "watchdog.log").open("wb")
        daemon = subprocess.Popen(
            pinned(1, [*command, "--log-level", "WARNING"]), stdout=log, stderr=subprocess.STDOUT
        )
        metrics = f"http://{listen}/metrics"
        try:
            wait_for(metrics, 120)
            time.sleep(args.warmup)
            first_n, first_late = probes_done(metrics)
            first_cpu, first_rss = cpu_seconds(daemon.pid), rss_bytes(daemon.pid)
            started = time.monotonic()
            print(f"{'probes':>9} {'RSS MiB':>8} {'ms CPU/probe':>13} {'probes/s':>9}")
            n, late = first_n, first_late
            while n - first_n < args.probes:
                time.sleep(30)
                n, late = probes_done(metrics)
                cpu = cpu_seconds(daemon.pid) - first_cpu
                rate = (n - first_n) / (time.monotonic() - started)
                per = cpu / max(n - first_n, 1) * 1000
                print(
                    f"{n - first_n:>9} {rss_bytes(daemon.pid) / 2**20:>8.1f} {per:>13.3f} {rate:>9.1f}"
                )
            last_rss = rss_bytes(daemon.pid)
        finally:
            stop_process(daemon)
            stop_process(nginx)
            log.close()
    window = [b - a for a, b in zip(first_late, late, strict=True)]
    growth = (last_rss - first_rss) / first_rss
    print(
        f"{args.endpoints} endpoints every {args.every:g}s: RSS {first_rss / 2**20:.1f} → "
        f"{last_rss / 2**20:.1f} MiB ({growth:+.1%} over {n - first_n} probes; goal ≤ +5%), "
        f"lateness p50 {quantile(window, 0.5) * 1000:.0f} ms, p99 {quantile(window, 0.99) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()

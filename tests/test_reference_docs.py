"""docs/cli.md, docs/metrics.md and docs/golden-sets.md are what the code says, or this fails.

Regenerate all three with `python -m tests.test_reference_docs`. The metrics page is rendered
from a daemon that exercises every family: probes with readiness and engine metrics, the
replayed H100 trace (a VRAM leak, an XID), drift, and pushes to Alertmanager."""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import FakeClock
from tests.fakenvml import UUID, FakeGpu, FakeNvml, samples
from tests.test_dashboards import HISTOGRAMS, KNOWN_METRICS
from watchdog import cli
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.golden.checks import REGISTRY
from watchdog.gpu.nvml import Nvml
from watchdog.reports import refdocs
from watchdog.store import Store
from watchdog.web.gpu_metrics import GAUGES
from watchdog.web.metrics import NodeLabelled

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# Labels of families the fake H100 leaves empty (NOT_SUPPORTED fields, signals not yet scored).
LABELS = {**KNOWN_METRICS, **{f"mlops_watchdog_gpu_{g[0]}": {"gpu"} for g in GAUGES}}
REGENERATE = "stale: regenerate with `python -m tests.test_reference_docs` and commit docs/"
ENGINE = (ROOT / "tests" / "fixtures" / "server_metrics" / "vllm.txt").read_text()


async def full_exposition(folder: Path) -> str:
    """/metrics of a daemon that has done everything once, as the listener serves it."""
    (folder / "one.yaml").write_text(
        "name: one\nprompts:\n  - {id: capital, prompt: 'Capital of France?', "
        "checks: [{contains: Paris}]}\n"
    )
    (folder / "config.yaml").write_text(
        """
storage: {path: w.db, csv_dir: reports}
alerting:
  route: alertmanager
  alertmanager: {urls: ["http://am.test:9093"]}
gpu: {interval: 0.5s, leak: {window: 4s, min_growth: 1GiB}, throttle: {after: 4s}, price_per_kwh: 0.3}
endpoints:
  - {name: vllm-a, api: openai-chat, base_url: "http://llm.test", model: m, gpus: [0],
     slo: {ttft_s: 1s, e2e_s: 5s}}
probes:
  - {endpoint: vllm-a, golden_set: one.yaml, stream: true}
"""
    )
    config = load_config(folder / "config.yaml", env={})
    clock = FakeClock()
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load", "matmul_load_with_vram_leak"))])
    fake.gpus[0].process_names[396] = "python3"
    fake.pending_xids = [(0, 79)]
    nvml = Nvml(
        slow_every=1,
        pcie_every=1,
        lib=fake,
        wall=lambda: clock.now().timestamp(),
        monotonic=clock.monotonic,
    )

    scrapes = iter(range(1, 100))

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.url.host == "am.test":
            return httpx.Response(200)
        if path == "/metrics":
            # the engine generates between scrapes: its tokens-per-second gauge has a rate
            grown = ENGINE.replace(" 20417.0", f" {20417 + 900 * next(scrapes)}.0")
            body, kind = grown.encode(), "text/plain; version=0.0.4"
        elif path == "/v1/models":
            body, kind = b'{"data": [{"id": "m"}]}', "application/json"
        elif path == "/health":
            body, kind = b'{"status": "ok"}', "application/json"
        else:
            fake.step()
            chunks = [{"choices": [{"delta": {"content": word}}]} for word in ("Pa", "ris", ".")]
            chunks.append(
                {
                    "choices": [{"delta": {}, "finish_reason": "stop"}],
                    "usage": {"completion_tokens": 3},
                }
            )
            events = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks)
            body = events + b"data: [DONE]\n\n"
            kind = "text/event-stream"
        return httpx.Response(200, headers={"content-type": kind}, stream=httpx.ByteStream(body))

    store = Store.open(folder / "w.db")
    registry = CollectorRegistry()
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        daemon = Daemon(config, client, store, clock, None, registry, nvml=nvml)
        daemon.gpu.start(clock.now().timestamp())
        nvml.start_xid_watch()
        for _ in range(20):
            await daemon.gpu_once()
            clock.advance(0.5)
            fake.step()
        nvml.stop_xid_watch()
        for _ in range(3):
            await daemon.probe_once(config.probes[0])
            clock.advance(60)
        await asyncio.gather(*daemon.pushing)
        assert daemon.pusher is not None
        await daemon.pusher.push()
        text = generate_latest(NodeLabelled(registry, "docs-node")).decode()
        daemon.gpu.close()
    store.close()
    return text


def rendered() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        exposition = asyncio.run(full_exposition(Path(tmp)))
    return {
        "cli.md": refdocs.cli_markdown(cli.parser()),
        "metrics.md": refdocs.metrics_markdown(refdocs.families(exposition, LABELS)),
        "golden-sets.md": refdocs.checks_markdown(),
    }


def documented_metrics() -> set[str]:
    """Every metric name docs/metrics.md lists."""
    return set(
        re.findall(r"^\| `(mlops_watchdog_\w+)` \|", (DOCS / "metrics.md").read_text(), re.M)
    )


def exposed_base(name: str) -> str:
    """A sample's family name as the docs list it (histogram series under their base name)."""
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def test_committed_reference_docs_are_current() -> None:
    for name, text in rendered().items():
        assert (DOCS / name).read_text() == text, f"docs/{name}: {REGENERATE}"


def test_every_metric_the_dashboards_and_rules_know_is_documented() -> None:
    missing = {exposed_base(n) for n in KNOWN_METRICS} - documented_metrics()
    assert not missing, f"exported but not in docs/metrics.md: {sorted(missing)}"


def test_every_check_has_an_example_that_passes_and_one_that_fails() -> None:
    assert set(refdocs.EXAMPLES) == set(REGISTRY)
    for name, example in refdocs.EXAMPLES.items():
        assert refdocs._run(name, example.spec, example.passes).startswith("ok"), name
        assert refdocs._run(name, example.spec, example.fails).startswith("FAIL"), name


def test_every_command_is_in_the_cli_page() -> None:
    page = (DOCS / "cli.md").read_text()
    for path, _ in refdocs._commands(cli.parser(), ["mlops-watchdog"]):
        assert f"## `{' '.join(path)}`" in page


if __name__ == "__main__":
    for name, text in rendered().items():
        (DOCS / name).write_text(text)
        print(f"wrote docs/{name}")

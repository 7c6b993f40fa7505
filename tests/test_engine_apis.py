"""`api: nim` and `api: sglang`: OpenAI chat with each engine's own routes. NIM and SGLang need
GPUs that CI has not, so they are fakes here (MockTransport) that answer as the engines' code and
docs say; their metrics are the fixtures of tests/fixtures/server_metrics. The real vLLM (CPU
build) shows its inter-token latency histogram read between two runs."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import FakeClock
from tests.engines.vllm import VllmServer
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.probers import APIS
from watchdog.probers.transport import http_client
from watchdog.result import Run
from watchdog.runner import Runner
from watchdog.runtime.clock import SystemClock
from watchdog.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "server_metrics"
GOLDEN = """
name: one
defaults: {max_tokens: 8, temperature: 0}
prompts:
  - id: capital
    messages: [{role: user, content: "What is the capital of France? Answer with one word."}]
    checks: [{contains: Paris}]
"""


def reply(status: int, obj: object = None, text: str | None = None) -> httpx.Response:
    if text is not None:
        body, kind = text.encode(), "text/plain; version=0.0.4; charset=utf-8"
    elif obj is not None:
        body, kind = json.dumps(obj).encode(), "application/json"
    else:
        body, kind = b"", "text/plain"  # SGLang's health routes answer with no body
    return httpx.Response(status, headers={"content-type": kind}, stream=httpx.ByteStream(body))


class Engine:
    """A fake engine: path -> canned answer; it keeps the paths it was asked."""

    def __init__(self, routes: dict[str, httpx.Response]):
        self.routes = routes
        self.asked: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        if request.url.path == "/v1/chat/completions":
            message = {"role": "assistant", "content": "Paris"}
            return reply(200, {"choices": [{"message": message, "finish_reason": "stop"}]})
        canned = self.routes.get(request.url.path)
        return canned if canned is not None else reply(404, {"detail": "Not Found"})


def nim(ready: int = 200) -> Engine:
    """NIM for LLMs 1.15: its health, version and metrics routes under /v1."""
    return Engine(
        {
            "/v1/health/live": reply(200, {"object": "health.response", "message": "live"}),
            "/v1/health/ready": reply(ready, {"object": "health.response", "message": "ready"}),
            "/v1/models": reply(200, {"data": [{"id": "meta/llama-3.1-8b-instruct"}]}),
            "/v1/version": reply(200, {"release": "1.15.5", "api": "1.0.0"}),
            "/v1/metrics": reply(200, text=(FIXTURES / "nim.txt").read_text()),
        }
    )


def sglang(ready: int = 200) -> Engine:
    """SGLang 0.5.23: /health_generate answers 503 while it starts or when no token comes."""
    return Engine(
        {
            "/health": reply(200),
            "/health_generate": reply(ready),
            "/v1/models": reply(200, {"data": [{"id": "llama", "owned_by": "sglang"}]}),
            "/metrics": reply(200, text=(FIXTURES / "sglang.txt").read_text()),
        }
    )


async def run(tmp_path: Path, api: str, engine: Engine) -> Run:
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
endpoints:
  - {{name: e, api: {api}, base_url: "http://llm.test", timeout_s: 5}}
probes:
  - {{endpoint: e, golden_set: one.yaml, stream: false}}
"""
    )
    cfg = load_config(tmp_path / "config.yaml")
    async with httpx.AsyncClient(transport=httpx.MockTransport(engine.handle)) as client:
        return await Runner(cfg, client, FakeClock()).run(cfg.probes[0])


def test_each_api_has_its_routes_and_metrics_url(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "endpoints:\n"
        "  - {name: n, api: nim, base_url: 'http://nim:8000'}\n"
        "  - {name: s, api: sglang, base_url: 'http://sgl:30000'}\n"
    )
    endpoints = load_config(tmp_path / "config.yaml").endpoints
    n, s = endpoints["n"], endpoints["s"]
    assert (APIS["nim"].liveness_path(n), APIS["nim"].readiness_path(n)) == (
        "/v1/health/live",
        "/v1/health/ready",
    )
    assert APIS["nim"].metrics_url(n) == "http://nim:8000/v1/metrics"
    assert (APIS["sglang"].liveness_path(s), APIS["sglang"].readiness_path(s)) == (
        "/health",
        "/health_generate",
    )
    assert APIS["sglang"].metrics_url(s) == "http://sgl:30000/metrics"


async def test_a_nim_endpoint_is_read_at_its_own_routes(tmp_path: Path) -> None:
    engine = nim()
    got = await run(tmp_path, "nim", engine)
    assert [(t.tier, t.ok, t.path) for t in got.tiers] == [
        ("liveness", True, "/v1/health/live"),
        ("readiness", True, "/v1/health/ready"),
        ("completion", True, None),
    ]
    assert got.results[0].ok
    assert got.identity == {
        "api": "nim",
        "model_ids": ["meta/llama-3.1-8b-instruct"],
        "build_info": "nim 1.15.5",
    }
    assert got.load is not None and got.load_error is None
    assert got.load.values == {
        "requests_waiting": 1.0,
        "requests_running": 3.0,
        "kv_cache_usage_ratio": 0.064,
    }
    assert "/metrics" not in engine.asked and "/health" not in engine.asked


async def test_a_nim_still_loading_fails_readiness(tmp_path: Path) -> None:
    got = await run(tmp_path, "nim", nim(ready=503))
    readiness = got.tier("readiness")
    assert readiness is not None and not readiness.ok
    assert readiness.detail.startswith("GET /v1/health/ready: http_status: HTTP 503")
    liveness = got.tier("liveness")
    assert liveness is not None and liveness.ok


async def test_an_sglang_endpoint_is_ready_when_it_generates(tmp_path: Path) -> None:
    engine = sglang()
    got = await run(tmp_path, "sglang", engine)
    assert [(t.tier, t.ok, t.path) for t in got.tiers] == [
        ("liveness", True, "/health"),
        ("readiness", True, "/health_generate"),
        ("completion", True, None),
    ]
    assert got.identity["model_ids"] == ["llama"]
    assert got.load is not None
    assert got.load.values["requests_waiting"] == 26.0
    assert got.load.sources["ttft_seconds"] == "sglang:time_to_first_token_seconds"


async def test_an_sglang_that_generates_no_token_fails_readiness(tmp_path: Path) -> None:
    got = await run(tmp_path, "sglang", sglang(ready=503))
    assert [(t.tier, t.ok) for t in got.tiers] == [
        ("liveness", True),
        ("readiness", False),
        ("completion", True),
    ]


@pytest.mark.real
def test_real_vllm_inter_token_latency_is_read_between_runs(
    tmp_path: Path, vllm_server: VllmServer
) -> None:
    """vLLM 0.32.0 serves `vllm:inter_token_latency_seconds`: two runs apart, its mean."""
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
endpoints:
  - {{name: vllm, api: openai-chat, base_url: "{vllm_server.url}", timeout_s: 60,
     headers: {{Authorization: "Bearer ${{VLLM_API_KEY}}"}}}}
probes:
  - {{endpoint: vllm, golden_set: one.yaml, stream: true}}
"""
    )
    env = {**os.environ, "VLLM_API_KEY": vllm_server.api_key}
    cfg = load_config(tmp_path / "config.yaml", env=env)

    async def twice() -> list[Run]:
        async with http_client() as client:
            store = Store.open(tmp_path / "w.db")
            daemon = Daemon(cfg, client, store, SystemClock(), None, CollectorRegistry())
            try:
                return [await daemon.probe_once(cfg.probes[0]) for _ in range(2)]
            finally:
                store.close()

    first, second = asyncio.run(twice())
    assert first.load is not None and second.load is not None
    assert any(k.startswith("vllm:inter_token_latency_seconds_count{") for k in first.load.totals)
    mean = second.load.values.get("mean_inter_token_latency_seconds")
    assert mean is not None and 0 < mean < 5, second.load.values
    assert second.load.sources["mean_inter_token_latency_seconds"].startswith(
        "vllm:inter_token_latency_seconds_sum per"
    )

"""Every endpoint misbehaviour, over real sockets, maps to exactly one error class and never raises."""

from __future__ import annotations

import gc
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from tests.faultserver import FaultServer, free_port, gzip_bomb
from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers import openai_chat
from watchdog.probers.transport import http_client
from watchdog.result import ERROR_CLASSES, Answer
from watchdog.runtime.clock import SystemClock

PROMPT = Prompt(
    id="p", messages=[{"role": "user", "content": "hi"}], sampling={"max_tokens": 8}, checks=[]
)
CAP = 100_000
MEMORY_LIMIT = 50 * 1024 * 1024


def peak_rss() -> int:
    """The process's high-water RSS in bytes; sees C allocations (zlib, ssl) that tracemalloc misses."""
    kib_or_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib_or_bytes if sys.platform == "darwin" else kib_or_bytes * 1024


@dataclass(frozen=True)
class Case:
    fault: str
    error_class: str
    detail: str
    stream: bool = True
    status: int | None = None
    timeout_s: float = 2
    url: str = "{server}/fault/{fault}"  # also {port}: the fault server's, {free}: nothing listens

    def base_url(self, server: FaultServer) -> str:
        return self.url.format(
            server=server.url, fault=self.fault, port=server.port, free=free_port()
        )


OK = Case("ok", "", "")
CASES = [
    Case("refused", "connect", "failed before a response", url="http://127.0.0.1:{free}"),
    # Resolving can take seconds where a resolver is slow to say no.
    Case("dns", "dns", "does not resolve", timeout_s=10, url="http://watchdog-test.invalid:{port}"),
    Case("tls-to-plain", "tls", "TLS failed", url="https://127.0.0.1:{port}/fault/ok"),
    Case("hang", "timeout", "deadline exceeded", timeout_s=1),
    Case("headers-then-hang", "timeout", "deadline exceeded", timeout_s=1),
    Case("slow-drip", "timeout", "total deadline exceeded", timeout_s=1),
    Case("429", "rate_limited", "HTTP 429 Too Many Requests: ", status=429),
    Case("500", "http_status", "HTTP 500 Internal Server Error: ", status=500),
    Case("503", "http_status", "HTTP 503 Service Unavailable: upstream overloaded", status=503),
    Case("html", "bad_response", "expected JSON, got text/html", stream=False, status=200),
    Case("truncated-json", "bad_response", "the body is not JSON", stream=False, status=200),
    Case("wrong-shape", "bad_response", "the body has no `choices` list", stream=False),
    Case("null-content", "empty_output", "no content (finish_reason=stop)", stream=False),
    Case("stream-cut", "stream_truncated", "connection broke mid-stream"),
    Case("no-done", "stream_truncated", "stream ended without [DONE]"),
    Case("error-event", "http_status", "server sent an error in the stream: boom (code 500)"),
    Case("error-event-no-code", "bad_response", "server sent an error in the stream: boom"),
    Case("error-event-429", "rate_limited", "server sent an error in the stream: slow down"),
    Case("sse-not-json", "bad_response", "a stream event is not JSON"),
    Case("oversized", "too_large", f"200010 bytes is over the {CAP}-byte cap", stream=False),
    Case("oversized-stream", "too_large", f"body is over the {CAP}-byte cap"),
    Case("gzip-bomb", "too_large", "(after gzip decompression)", stream=False),
    Case("gzip-bomb-stream", "too_large", "(after gzip decompression)"),
    Case("corrupt-gzip", "bad_response", "corrupt gzip body: ", stream=False),
    Case("truncated-gzip", "bad_response", "gzip body ended before its end", stream=False),
    Case("bad-utf8", "bad_response", "the event stream is not valid UTF-8"),
    Case("reset-early", "connect", "Connection reset by peer"),
    Case("reset-mid-stream", "stream_truncated", "Connection reset by peer"),
    Case("not-http", "connect", "not an HTTP response: Bad status line"),
]


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    gzip_bomb()  # built once, before any memory is measured
    with FaultServer() as fs:
        yield fs


async def probe(server: FaultServer, case: Case, timeout_s: float | None = None) -> Answer:
    ep = Endpoint(
        name="fault",
        api="openai-chat",
        base_url=case.base_url(server),
        timeout_s=timeout_s or case.timeout_s,
        max_body_bytes=CAP,
    )
    async with http_client() as client:
        return await openai_chat.probe(client, ep, None, PROMPT, case.stream, SystemClock())


@pytest.mark.parametrize("case", CASES, ids=[c.fault for c in CASES])
async def test_fault_maps_to_one_error_class(server: FaultServer, case: Case) -> None:
    started = time.perf_counter()
    answer = await probe(server, case)
    elapsed = time.perf_counter() - started

    assert answer.error_class == case.error_class, answer.error_detail
    assert answer.error_class in ERROR_CLASSES
    assert case.detail in (answer.error_detail or "")
    # Every class with its reason: "cannot connect to 127.0.0.1:36679: " once had none.
    assert answer.error_detail and not answer.error_detail.rstrip().endswith(":"), answer
    if case.status is not None:
        assert answer.status_code == case.status
    assert elapsed < case.timeout_s + 1
    assert answer.e2e_s is not None


async def test_happy_stream(server: FaultServer) -> None:
    answer = await probe(server, OK)

    assert answer.error_class is None and answer.error_detail is None
    assert answer.status_code == 200
    assert answer.text == "Hello, world" and answer.finish_reason == "stop"
    assert answer.ttfb_s is not None and answer.ttft_s is not None and answer.e2e_s is not None
    assert answer.ttfb_s <= answer.ttft_s < answer.e2e_s
    assert len(answer.itl_s) == 2
    assert (answer.output_tokens, answer.token_source) == (3, "usage")
    assert answer.model == "fault"


async def test_happy_json(server: FaultServer) -> None:
    answer = await probe(server, replace(OK, stream=False))

    assert answer.error_class is None
    assert answer.text == "Hello, world" and answer.finish_reason == "stop"
    assert (answer.output_tokens, answer.token_source) == (3, "usage")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_gzip_bomb_is_capped_in_bounded_memory(server: FaultServer, stream: bool) -> None:
    assert len(gzip_bomb()) < 2_000_000  # a ~1 MB body that inflates to 1 GiB
    case = Case("gzip-bomb-stream" if stream else "gzip-bomb", "too_large", "", stream=stream)
    rss_before = peak_rss()
    tracemalloc.start()
    try:
        answer = await probe(server, case)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert answer.error_class == "too_large"
    assert peak < MEMORY_LIMIT, f"peak {peak / 1e6:.1f} MB while reading a gzip bomb"
    assert peak_rss() - rss_before < MEMORY_LIMIT


async def test_whole_matrix_runs_in_bounded_memory(server: FaultServer) -> None:
    # The timeout cases cost their deadline each time, so they run under a shorter one.
    # DNS is left out: a slow resolver would make this test slow, not more thorough.
    cases = [c for c in CASES if c.fault != "dns"]
    gc.collect()
    rss_before = peak_rss()
    tracemalloc.start()
    try:
        await probe(server, OK)  # warm-up: first-use imports and caches
        gc.collect()
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(3):
            for case in cases:
                answer = await probe(server, case, 0.5 if case.error_class == "timeout" else None)
                assert answer.error_class == case.error_class, (case.fault, answer.error_detail)
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < MEMORY_LIMIT, f"peak {peak / 1e6:.1f} MB over the matrix"
    assert peak_rss() - rss_before < MEMORY_LIMIT
    assert current - baseline < 5_000_000, (
        f"{(current - baseline) / 1e6:.1f} MB still held after the matrix"
    )

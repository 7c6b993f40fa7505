"""Real test peers (llama-server with SmolLM2) and a fake clock. In CI a missing peer fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.engines import triton
from tests.engines.vllm import VllmServer, start_vllm, stop_vllm
from tests.otlp_receiver import Receiver, receiving
from tests.peers import LlamaServer, PeerMissing, start_llama_server, stop

IN_CI = os.environ.get("CI") == "true"
# tests/gpu needs a real NVIDIA GPU: `make gpu-test` runs it on one (CI has none).
collect_ignore = ["gpu"]


def need(message: str) -> None:
    """A real part is missing: fail in CI (it must be installed there), skip on a laptop."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    try:
        server = start_llama_server(tmp_path_factory.mktemp("llama") / "llama-server.log")
    except PeerMissing as exc:
        need(str(exc))
        raise
    yield server
    stop(server)


@pytest.fixture(scope="session")
def engine_traces() -> Iterator[Receiver]:
    """Where the session's vLLM sends the spans of the requests it serves (OTLP/HTTP)."""
    with receiving("/v1/traces") as receiver:
        yield receiver


@pytest.fixture(scope="session")
def vllm_server(
    tmp_path_factory: pytest.TempPathFactory, engine_traces: Receiver
) -> Iterator[VllmServer]:
    """One real vLLM (CPU build, SmolLM2) for the session: it takes about 40 s to start."""
    try:
        server = start_vllm(tmp_path_factory.mktemp("vllm"), traces=engine_traces.url)
    except PeerMissing as exc:
        need(str(exc))
        raise
    yield server
    stop_vllm(server)


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[triton.Triton]:
    """One real Triton (PyTriton, SmolLM2 on the CPU) for the session: about 10 s to start."""
    try:
        server = triton.start(tmp_path_factory.mktemp("triton"))
    except PeerMissing as exc:
        need(str(exc))
        raise
    yield server
    triton.stop(server)


class FakeClock:
    """Wall and monotonic time that move only when a test says so."""

    def __init__(self, start: datetime | None = None):
        self._now = start or datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()

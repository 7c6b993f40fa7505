"""The triton prober against a real local socket replaying Triton's wire format (fixtures/triton)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.faultserver import free_port
from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers import triton
from watchdog.probers.transport import http_client
from watchdog.result import Answer
from watchdog.runtime.clock import SystemClock

FIXTURES = Path(__file__).parent / "fixtures" / "triton"
PROMPT = Prompt(
    id="p",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    sampling={"max_tokens": 8, "temperature": 0.0, "seed": 42, "top_p": 0.9},
    checks=[],
)
REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests"}
GENERATE = "/v2/models/ensemble/generate"


@dataclass(frozen=True)
class Reply:
    """A fixture served as JSON (one write) or SSE (one write per event, spaced out).

    `cut` sends the body chunked and closes before the last chunk: a connection that broke.
    """

    fixture: str
    status: int = 200
    cut: bool = False

    def chunks(self) -> list[bytes]:
        raw = (FIXTURES / self.fixture).read_bytes()
        if not self.fixture.endswith(".sse"):
            return [raw]
        return [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]

    @property
    def content_type(self) -> str:
        return "text/event-stream" if self.fixture.endswith(".sse") else "application/json"


@dataclass
class TritonServer:
    """Serves `routes` (path → Reply) on 127.0.0.1 and keeps what each request carried."""

    routes: dict[str, Reply]
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    url: str = ""
    handlers: list[asyncio.Task[None]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            await self._reply(reader, writer)
        except ConnectionError:
            pass  # the prober stopped reading (an error event, say): that is its right
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _reply(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        length = 0
        for line in head.decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        self.received.append((method, path, body))
        reply = self.routes.get(path, Reply("missing", 404))
        chunks = reply.chunks() if reply.status != 404 else [b"not found"]
        # No Content-Length: the body ends when the connection closes, as Triton's stream does.
        framing = "Transfer-Encoding: chunked\r\n" if reply.cut else ""
        status_line = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Not Found')}\r\n"
        writer.write(
            (
                status_line + f"Content-Type: {reply.content_type}\r\n{framing}"
                "Connection: close\r\n\r\n"
            ).encode()
        )
        for chunk in chunks:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if reply.cut else chunk)
            await writer.drain()
            await asyncio.sleep(0.02)  # spaced out so that TTFT and each ITL differ


@pytest.fixture
async def server() -> AsyncIterator[TritonServer]:
    triton_server = TritonServer(routes={})
    listener = await asyncio.start_server(triton_server.handle, "127.0.0.1", 0)
    triton_server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield triton_server
    # Let every reply finish, so that no socket outlives the test's event loop.
    await asyncio.gather(*triton_server.handlers)


def endpoint(base_url: str) -> Endpoint:
    return Endpoint(name="e", api="triton", base_url=base_url, model="ensemble", timeout_s=5.0)


async def ask(server: TritonServer, reply: Reply, stream: bool = True) -> Answer:
    server.routes[GENERATE + ("_stream" if stream else "")] = reply
    async with http_client() as client:
        return await triton.probe(client, endpoint(server.url), None, PROMPT, stream, SystemClock())


async def test_stream_times_each_delta(server: TritonServer) -> None:
    answer = await ask(server, Reply("generate_stream.sse"))
    assert answer.error_class is None, answer.error_detail
    assert answer.text == " Paris is the capital."
    assert answer.finish_reason is None and answer.model == "ensemble"
    # Three events, not tokens: Triton sends no count, and no per-token figure rests on them.
    assert (answer.output_tokens, answer.token_source) == (3, "events")
    assert answer.tokens is None and answer.tpot_s is None and answer.tokens_per_s is None
    assert answer.status_code == 200 and answer.ttfb_s is not None
    assert answer.ttft_s is not None and answer.e2e_s is not None
    assert len(answer.itl_s) == 2 and all(gap > 0 for gap in answer.itl_s)
    assert 0 < answer.ttft_s < answer.e2e_s
    ((method, path, body),) = server.received
    assert (method, path) == ("POST", "/v2/models/ensemble/generate_stream")
    assert json.loads(body) == {
        "text_input": "What is the capital of France?",
        "parameters": {"max_tokens": 8, "temperature": 0.0, "seed": 42, "stream": True},
    }


async def test_non_streaming_generate(server: TritonServer) -> None:
    answer = await ask(server, Reply("generate.json"), stream=False)
    assert answer.error_class is None, answer.error_detail
    assert answer.text == " Paris is the capital of France."
    assert (answer.output_tokens, answer.token_source) == (8, "estimate")  # 32 characters
    assert answer.ttft_s is None and answer.e2e_s is not None
    ((_, path, body),) = server.received
    assert path == GENERATE and json.loads(body)["parameters"]["stream"] is False


def test_request_body_leaves_out_unset_sampling() -> None:
    prompt = Prompt(
        id="p",
        messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        sampling={"max_tokens": 4, "temperature": None, "top_p": 0.5},
        checks=[],
    )
    assert triton.request_body(prompt, False) == {
        "text_input": "a\n\nb",
        "parameters": {"max_tokens": 4, "stream": False},
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_error_body_is_http_status_with_message(server: TritonServer, stream: bool) -> None:
    answer = await ask(server, Reply("error_400.json", 400), stream)
    assert answer.error_class == "http_status" and answer.status_code == 400
    assert answer.error_detail == (
        "HTTP 400 Bad Request: [request id: <id_unknown>] input text_input is missing"
    )


async def test_429_is_rate_limited(server: TritonServer) -> None:
    answer = await ask(server, Reply("error_429.json", 429))
    assert answer.error_class == "rate_limited" and answer.status_code == 429
    assert answer.error_detail == "HTTP 429 Too Many Requests: Exceeds maximum queue size"


async def test_error_event_mid_stream(server: TritonServer) -> None:
    answer = await ask(server, Reply("generate_stream_error.sse"))
    assert answer.error_class == "http_status" and answer.status_code == 200
    assert answer.error_detail is not None
    assert answer.error_detail.startswith("server sent an error in the stream: in ensemble")
    assert "CUDA out of memory" in answer.error_detail


@pytest.mark.parametrize(
    ("reply", "stream"),
    [(Reply("generate_stream_empty.sse"), True), (Reply("generate_empty.json"), False)],
)
async def test_empty_output(server: TritonServer, reply: Reply, stream: bool) -> None:
    answer = await ask(server, reply, stream)
    assert answer.error_class == "empty_output"
    assert answer.error_detail == "no content (finish_reason=None)"


async def test_connection_break_mid_stream_is_truncated(server: TritonServer) -> None:
    answer = await ask(server, Reply("generate_stream.sse", cut=True))
    assert answer.error_class == "stream_truncated", answer.error_detail
    assert str(answer.error_detail).startswith("connection broke mid-stream: ")


async def test_body_without_text_output_is_bad_response(server: TritonServer) -> None:
    answer = await ask(server, Reply("model_metadata.json"), stream=False)
    assert answer.error_class == "bad_response"
    assert answer.error_detail == "the body has no `text_output` string"


async def test_connection_refused_is_connect() -> None:
    async with http_client() as client:
        ep = endpoint(f"http://127.0.0.1:{free_port()}")
        answer = await triton.probe(client, ep, None, PROMPT, True, SystemClock())
    assert answer.error_class == "connect"


async def test_identify_reads_model_and_server_metadata(server: TritonServer) -> None:
    server.routes["/v2/models/ensemble"] = Reply("model_metadata.json")
    server.routes["/v2"] = Reply("server_metadata.json")
    async with http_client() as client:
        identity = await triton.identify(client, endpoint(server.url))
    assert identity == {
        "api": "triton",
        "model_ids": ["ensemble"],
        "model_versions": ["1"],
        "build_info": "triton 2.48.0",
    }
    assert server.received == [("GET", "/v2/models/ensemble", b""), ("GET", "/v2", b"")]


async def test_identify_is_best_effort(server: TritonServer) -> None:
    async with http_client() as client:
        assert await triton.identify(client, endpoint(server.url)) == {"api": "triton"}  # 404s
        unreachable = endpoint(f"http://127.0.0.1:{free_port()}")
        assert await triton.identify(client, unreachable) == {"api": "triton"}


def test_a_model_name_is_escaped_in_the_ready_route() -> None:
    ep = Endpoint(name="e", api="triton", base_url="http://t", model="team/llm 1", timeout_s=5)
    assert triton.API.readiness_path(ep) == "/v2/models/team%2Fllm%201/ready"
    own = ep.model_copy(update={"ready_path": "/v2/health/ready"})
    assert triton.API.readiness_path(own) == "/v2/health/ready"  # an endpoint's own route stays


def test_one_piece_of_several_tokens_has_no_tpot() -> None:
    # A tokenizer counted 2 tokens in Triton's only event: no time between them was seen.
    answer = Answer(text="Hello.", ttft_s=0.3, e2e_s=0.3, output_tokens=2, token_source="tokenizer")
    assert answer.tpot_s is None and answer.tokens_per_s == 2 / 0.3

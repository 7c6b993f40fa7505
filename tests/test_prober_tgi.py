"""The tgi prober against a real local socket replaying TGI's wire format (tests/fixtures/tgi)."""

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
from watchdog.probers import tgi
from watchdog.probers.transport import http_client
from watchdog.result import Answer
from watchdog.runtime.clock import SystemClock

FIXTURES = Path(__file__).parent / "fixtures" / "tgi"
PROMPT = Prompt(
    id="p",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    sampling={"max_tokens": 8, "temperature": 0.0, "seed": 42, "top_p": 0.9},
    checks=[],
)
REASONS = {
    200: "OK",
    422: "Unprocessable Entity",
    424: "Failed Dependency",
    429: "Too Many Requests",
}


@dataclass(frozen=True)
class Reply:
    """A fixture file served as JSON (one write) or as SSE (one write per event, spaced out)."""

    fixture: str
    status: int = 200

    def chunks(self) -> list[bytes]:
        raw = (FIXTURES / self.fixture).read_bytes()
        if not self.fixture.endswith(".sse"):
            return [raw]
        return [event + b"\n\n" for event in raw.split(b"\n\n") if event.strip()]

    @property
    def content_type(self) -> str:
        return "text/event-stream" if self.fixture.endswith(".sse") else "application/json"


@dataclass
class TgiServer:
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
        # No Content-Length: the body ends when the connection closes, as a cut stream would.
        status_line = f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Not Found')}\r\n"
        writer.write(
            (
                status_line + f"Content-Type: {reply.content_type}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.02)  # spaced out so that TTFT and each ITL differ


@pytest.fixture
async def server() -> AsyncIterator[TgiServer]:
    tgi_server = TgiServer(routes={})
    listener = await asyncio.start_server(tgi_server.handle, "127.0.0.1", 0)
    tgi_server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield tgi_server
    # Let every reply finish, so that no socket outlives the test's event loop.
    await asyncio.gather(*tgi_server.handlers)


def endpoint(base_url: str) -> Endpoint:
    # model_construct: the lead registers "tgi" among the config's APIs separately.
    return Endpoint.model_construct(name="e", api="tgi", base_url=base_url, timeout_s=5.0)


async def ask(server: TgiServer, reply: Reply, stream: bool = True) -> Answer:
    server.routes["/generate_stream" if stream else "/generate"] = reply
    async with http_client() as client:
        return await tgi.probe(client, endpoint(server.url), "m", PROMPT, stream, SystemClock())


async def test_stream_times_content_tokens_and_reads_details(server: TgiServer) -> None:
    answer = await ask(server, Reply("generate_stream.sse"))
    assert answer.error_class is None, answer.error_detail
    assert answer.text == " Paris. It"
    assert answer.finish_reason == "length"
    assert (answer.output_tokens, answer.token_source) == (3, "usage")
    assert answer.status_code == 200 and answer.ttfb_s is not None
    assert answer.ttft_s is not None and answer.e2e_s is not None
    assert len(answer.itl_s) == 2 and all(gap > 0 for gap in answer.itl_s)
    assert 0 < answer.ttft_s < answer.e2e_s
    ((method, path, _),) = server.received
    assert (method, path) == ("POST", "/generate_stream")


async def test_non_streaming_generate(server: TgiServer) -> None:
    answer = await ask(server, Reply("generate.json"), stream=False)
    assert answer.error_class is None, answer.error_detail
    assert answer.text == " Paris." and answer.finish_reason == "stop"
    assert (answer.output_tokens, answer.token_source) == (3, "usage")
    assert answer.ttft_s is None and answer.e2e_s is not None
    assert server.received[0][1] == "/generate"


async def test_special_tokens_are_not_content(server: TgiServer) -> None:
    answer = await ask(server, Reply("generate_stream_special.sse"))
    assert answer.error_class is None, answer.error_detail
    assert answer.text == " Paris" and answer.finish_reason == "stop"  # eos_token
    assert answer.itl_s == []  # <s> before and </s> after the one content token are not timed
    assert answer.output_tokens == 3


async def test_temperature_zero_is_greedy_without_temperature(server: TgiServer) -> None:
    await ask(server, Reply("generate_stream.sse"))
    body = json.loads(server.received[0][2])
    assert body == {
        "inputs": "What is the capital of France?",
        "parameters": {"details": True, "max_new_tokens": 8, "seed": 42, "do_sample": False},
    }


def test_sampling_request_body() -> None:
    prompt = Prompt(
        id="p",
        messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        sampling={"max_tokens": 4, "temperature": 0.7, "seed": None, "top_p": 1.0, "stop": ["\n"]},
        checks=[],
    )
    assert tgi.request_body(prompt) == {
        "inputs": "a\n\nb",
        "parameters": {
            "details": True,
            "max_new_tokens": 4,
            "stop": ["\n"],
            "do_sample": True,
            "temperature": 0.7,
        },
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_validation_error_is_http_status_with_message(
    server: TgiServer, stream: bool
) -> None:
    answer = await ask(server, Reply("error_422_validation.json", 422), stream)
    assert answer.error_class == "http_status" and answer.status_code == 422
    assert answer.error_detail == (
        "HTTP 422 Unprocessable Entity: validation error: "
        "Input validation error: `temperature` must be strictly positive"
    )


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply("error_429_overloaded.json", 429), 429),
        (Reply("error_429_overloaded.json", 424), 424),  # overloaded under another status
        (Reply("generate_stream_overloaded.sse"), 200),
    ],
)
async def test_overloaded_is_rate_limited(server: TgiServer, reply: Reply, status: int) -> None:
    answer = await ask(server, reply)
    assert answer.error_class == "rate_limited", answer.error_detail
    assert answer.status_code == status and "Model is overloaded" in str(answer.error_detail)


async def test_error_event_mid_stream(server: TgiServer) -> None:
    answer = await ask(server, Reply("generate_stream_error.sse"))
    assert answer.error_class == "http_status" and answer.status_code == 200
    assert answer.error_detail is not None
    assert answer.error_detail.startswith("server sent an error mid-stream: generation error: ")
    assert "CUDA out of memory" in answer.error_detail


async def test_stream_without_final_details_is_truncated(server: TgiServer) -> None:
    answer = await ask(server, Reply("generate_stream_truncated.sse"))
    assert answer.error_class == "stream_truncated"
    assert answer.error_detail == "stream ended without the final details event"


async def test_non_json_event_is_bad_response(server: TgiServer) -> None:
    answer = await ask(server, Reply("generate_stream_not_json.sse"))
    assert answer.error_class == "bad_response"
    assert str(answer.error_detail).startswith("a stream event is not JSON")


async def test_connection_refused_is_connect() -> None:
    async with http_client() as client:
        ep = endpoint(f"http://127.0.0.1:{free_port()}")
        answer = await tgi.probe(client, ep, None, PROMPT, True, SystemClock())
    assert answer.error_class == "connect"


async def test_identify_reads_info(server: TgiServer) -> None:
    server.routes["/info"] = Reply("info.json")
    async with http_client() as client:
        identity = await tgi.identify(client, endpoint(server.url))
    assert identity == {
        "api": "tgi",
        "model_ids": ["HuggingFaceTB/SmolLM2-135M-Instruct"],
        "model_sha": "a91318be21aeaf0879874faa161dcb40c68847e9",
        "build_info": "3.0.1",
    }
    assert server.received == [("GET", "/info", b"")]


async def test_identify_is_best_effort(server: TgiServer) -> None:
    async with http_client() as client:
        assert await tgi.identify(client, endpoint(server.url)) == {"api": "tgi"}  # 404
        unreachable = endpoint(f"http://127.0.0.1:{free_port()}")
        assert await tgi.identify(client, unreachable) == {"api": "tgi"}

"""The `ollama` prober against a real local socket replaying Ollama's recorded wire format."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers import ollama
from watchdog.probers.transport import http_client
from watchdog.result import Answer
from watchdog.runtime.clock import SystemClock

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"
PROMPT = Prompt(
    id="p",
    messages=[{"role": "user", "content": "Capital of France?"}],
    sampling={"max_tokens": 32, "temperature": 0.0, "seed": 42, "top_p": 0.9, "logprobs": True},
    checks=[],
)
PAUSE = 0.02  # between lines, so that TTFT, ITL and e2e differ
NDJSON = "application/x-ndjson"
REASONS = {200: "OK", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def lines(name: str) -> list[bytes]:
    return [line + b"\n" for line in fixture(name).splitlines()]


@dataclass
class Reply:
    """What one path answers: `pieces` go out as separate HTTP chunks, `PAUSE` apart."""

    pieces: list[bytes]
    status: int = 200
    content_type: str = NDJSON
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@asynccontextmanager
async def serve(routes: dict[str, Reply]) -> AsyncIterator[tuple[str, list[Seen]]]:
    """An HTTP/1.1 server on 127.0.0.1 that replays `routes` with chunked encoding."""
    seen: list[Seen] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = head.strip().split("\r\n")
            heads = {
                k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)
            }
            body = await reader.readexactly(int(heads.get("content-length", "0")))
            path = request_line.split(" ")[1]
            seen.append(Seen(path, heads, body))
            reply = routes.get(path, Reply([b"404 page not found"], 404, "text/plain"))
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            writer.write(
                f"HTTP/1.1 {reply.status} {REASONS[reply.status]}\r\n"
                f"Content-Type: {reply.content_type}\r\nTransfer-Encoding: chunked\r\n"
                f"{extra}Connection: close\r\n\r\n".encode("latin-1")
            )
            for piece in reply.pieces:
                await asyncio.sleep(PAUSE)
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def endpoint(url: str, model: str | None = "llama3.2") -> Endpoint:
    return Endpoint(name="o", api="openai-chat", base_url=url, model=model, timeout_s=5)


async def ask(reply: Reply, stream: bool = True) -> tuple[Answer, Seen]:
    async with serve({"/api/chat": reply}) as (url, seen), http_client() as client:
        answer = await ollama.probe(
            client, endpoint(url), "llama3.2", PROMPT, stream, SystemClock()
        )
    return answer, seen[0]


async def test_stream_timings_tokens_and_request() -> None:
    answer, request = await ask(Reply(lines("chat_stream.ndjson")))
    payload = json.loads(request.body)
    assert request.path == "/api/chat" and request.headers["accept"] == NDJSON
    assert payload == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "stream": True,
        "options": {"num_predict": 32, "temperature": 0.0, "seed": 42, "top_p": 0.9},
    }
    assert answer.error_class is None, answer.error_detail
    assert answer.text == "The capital is Paris." and answer.finish_reason == "stop"
    assert answer.model == "llama3.2" and answer.status_code == 200
    assert (answer.output_tokens, answer.token_source) == (4, "usage")
    assert answer.server_timings == {
        "prompt_ms": 130.25,
        "predicted_ms": 80.0,
        "load_ms": 20.5,
        "total_ms": 812.345678,
        "prompt_n": 26.0,
        "predicted_n": 4.0,
    }
    # Four content lines: TTFT at the first, three gaps, e2e at the done line.
    assert answer.ttft_s is not None and answer.e2e_s is not None and answer.ttfb_s is not None
    assert answer.ttfb_s <= answer.ttft_s < answer.e2e_s
    assert answer.ttft_s >= PAUSE and answer.e2e_s >= 5 * PAUSE
    assert len(answer.itl_s) == 3 and all(gap >= 0 for gap in answer.itl_s)
    assert answer.ttft_reasoning_s is None and answer.reasoning == ""


async def test_non_streaming_and_gzip() -> None:
    body = gzip.compress(fixture("chat.json"))
    reply = Reply([body[:40], body[40:]], content_type="application/json; charset=utf-8")
    reply.headers["Content-Encoding"] = "gzip"
    answer, request = await ask(reply, stream=False)
    assert json.loads(request.body)["stream"] is False
    assert request.headers["accept"] == "application/json"
    assert answer.error_class is None, answer.error_detail
    assert answer.text == "The capital of France is Paris." and answer.finish_reason == "stop"
    assert (answer.output_tokens, answer.token_source) == (8, "usage")
    assert answer.server_timings is not None and answer.server_timings["predicted_ms"] == 160.0
    assert answer.ttft_s is None and answer.e2e_s is not None and answer.e2e_s >= 2 * PAUSE


async def test_thinking_only_is_reasoning_not_empty_output() -> None:
    answer, _ = await ask(Reply(lines("chat_stream_thinking.ndjson")))
    assert answer.error_class is None, answer.error_detail
    assert answer.reasoning == "The user wants a capital." and answer.text == ""
    assert answer.ttft_reasoning_s is not None and answer.ttft_s is None
    assert answer.finish_reason == "length" and answer.output_tokens == 8


@pytest.mark.parametrize(
    ("status", "error_class"), [(404, "http_status"), (429, "rate_limited"), (500, "http_status")]
)
async def test_error_status_carries_the_servers_message(status: int, error_class: str) -> None:
    reply = Reply([fixture("error_404.json")], status, "application/json; charset=utf-8")
    answer, _ = await ask(reply)
    assert (answer.error_class, answer.status_code) == (error_class, status)
    assert answer.error_detail == (
        f'HTTP {status} {REASONS[status]}: model "nope" not found, try pulling it first'
    )


async def test_error_line_mid_stream() -> None:
    answer, _ = await ask(Reply(lines("chat_stream_error.ndjson")))
    assert answer.error_class == "bad_response" and answer.status_code == 200
    assert answer.error_detail == (
        "server sent an error in the stream: "
        "an error was encountered while running the model: unexpected EOF"
    )
    assert answer.text == "The"


async def test_stream_without_done_line_is_truncated() -> None:
    answer, _ = await ask(Reply(lines("chat_stream.ndjson")[:-1]))
    assert answer.error_class == "stream_truncated"
    assert answer.error_detail == "stream ended without a `done: true` line"
    assert answer.text == "The capital is Paris."


@pytest.mark.parametrize(
    ("piece", "detail"),
    [
        (b"<html>502 Bad Gateway</html>\n", "a stream line is not JSON"),
        (b'data: {"choices": []}\n', "a stream line is not JSON"),
        (b'{"choices": []}\n', "the stream has no boolean `done`"),
        (b'{"done": false, "message": "hi"}\n', "the stream has a `message` that is not an"),
    ],
)
async def test_lines_not_in_the_api_shape_are_bad_response(piece: bytes, detail: str) -> None:
    answer, _ = await ask(Reply([lines("chat_stream.ndjson")[0], piece]))
    assert answer.error_class == "bad_response" and answer.error_detail is not None
    assert answer.error_detail.startswith(detail)


async def test_nothing_at_all_is_empty_output() -> None:
    done = b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true}\n'
    answer, _ = await ask(Reply([done]))
    assert answer.error_class == "empty_output"


async def test_identify_from_tags() -> None:
    routes = {"/api/tags": Reply([fixture("tags.json")], content_type="application/json")}
    async with serve(routes) as (url, seen), http_client() as client:
        latest = await ollama.identify(client, endpoint(url, "llama3.2"))
        tagged = await ollama.identify(client, endpoint(url, "qwen3:8b"))
        missing = await ollama.identify(client, endpoint(url, "mistral"))
        unset = await ollama.identify(client, endpoint(url, None))
    assert {s.path for s in seen} == {"/api/tags"}
    assert latest == {
        "api": "openai-chat",
        "model_ids": ["llama3.2:latest"],
        "model_digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
    }
    assert tagged["model_digest"].startswith("500a1f06") and tagged["model_ids"] == ["qwen3:8b"]
    assert missing == {"api": "openai-chat"}
    assert unset == {"api": "openai-chat", "model_ids": ["llama3.2:latest", "qwen3:8b"]}


async def test_identify_never_raises_on_transport_errors() -> None:
    async with serve({}) as (url, _), http_client() as client:
        assert await ollama.identify(client, endpoint(url)) == {"api": "openai-chat"}  # 404
    async with http_client() as client:  # the server is gone: connection refused
        assert await ollama.identify(client, endpoint(url)) == {"api": "openai-chat"}

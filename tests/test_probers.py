"""The OpenAI probers' parsing, on canned bodies through httpx.MockTransport (sockets: test_faults)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import FakeClock
from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers import APIS
from watchdog.result import Answer

PROMPT = Prompt(
    id="p", messages=[{"role": "user", "content": "hi"}], sampling={"max_tokens": 8}, checks=[]
)


def sse(*events: object) -> bytes:
    return b"".join(
        f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events
    )


def chunk(
    content: str | None = None, finish: str | None = None, **delta: object
) -> dict[str, object]:
    d = dict(delta)
    if content is not None:
        d["content"] = content
    return {"model": "m", "choices": [{"index": 0, "delta": d, "finish_reason": finish}]}


async def ask(
    handler: Callable[[httpx.Request], httpx.Response],
    api: str = "openai-chat",
    stream: bool = True,
    **endpoint: object,
) -> tuple[Answer, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    ep = Endpoint(name="e", api=api, base_url="http://llm.test", **endpoint)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        answer = await APIS[api].probe(client, ep, "m", PROMPT, stream, FakeClock())
    return answer, seen


def reply(status: int, body: bytes, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    """A response whose body is still unread, as from a socket (the prober reads it raw)."""
    return lambda _: httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def sse_response(body: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return reply(200, body, **{"content-type": "text/event-stream"})


async def test_chat_stream_payload_and_usage() -> None:
    body = sse(
        chunk(role="assistant"),
        chunk("Par"),
        chunk("is"),
        chunk(finish="stop"),
        {
            "choices": [],
            "usage": {"completion_tokens": 2, "prompt_tokens": 5},
            "system_fingerprint": "fp1",
        },
        "[DONE]",
    )
    answer, (request,) = await ask(sse_response(body))
    payload = json.loads(request.content)
    assert request.url.path == "/v1/chat/completions"
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}
    assert payload["model"] == "m" and payload["max_tokens"] == 8
    assert request.headers["user-agent"].startswith("mlops-watchdog/")
    assert answer.error_class is None
    assert answer.text == "Paris" and answer.finish_reason == "stop"
    assert (answer.output_tokens, answer.token_source) == (2, "usage")
    assert answer.system_fingerprint == "fp1" and answer.model == "m"
    assert answer.ttft_s is not None and len(answer.itl_s) == 1


async def test_reasoning_is_timed_apart_from_content() -> None:
    body = sse(chunk(reasoning_content="think"), chunk("42", finish="stop"), "[DONE]")
    answer, _ = await ask(sse_response(body))
    assert answer.reasoning == "think" and answer.text == "42"
    assert answer.ttft_reasoning_s is not None and answer.ttft_s is not None


async def test_tool_calls_alone_are_an_answer() -> None:
    call = [
        {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ]
    body = sse(chunk(tool_calls=call), chunk(finish="tool_calls"), "[DONE]")
    answer, _ = await ask(sse_response(body))
    assert answer.error_class is None and answer.tool_calls == 1


async def test_tokens_fall_back_to_server_timings_then_estimate() -> None:
    timed = sse(
        chunk("a"),
        {**chunk("b", finish="stop"), "timings": {"predicted_n": 7, "predicted_ms": 30.5}},
        "[DONE]",
    )
    answer, _ = await ask(sse_response(timed))
    assert (answer.output_tokens, answer.token_source) == (7, "server_timings")
    assert answer.server_timings == {"predicted_n": 7.0, "predicted_ms": 30.5}

    bare = sse(chunk("a"), chunk("b"), chunk("c", finish="stop"), "[DONE]")
    answer, _ = await ask(sse_response(bare))
    assert (answer.output_tokens, answer.token_source) == (3, "estimate")


async def test_non_streaming_chat_and_gzip() -> None:
    body = {
        "model": "m",
        "choices": [{"message": {"content": "Paris"}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 1},
    }
    raw = gzip.compress(json.dumps(body).encode())
    answer, (request,) = await ask(
        reply(200, raw, **{"content-type": "application/json", "content-encoding": "gzip"}),
        stream=False,
    )
    assert "stream_options" not in json.loads(request.content)
    assert answer.error_class is None and answer.text == "Paris" and answer.ttft_s is None
    assert answer.e2e_s == 0.0  # the fake clock stood still


async def test_completions_api() -> None:
    body = sse(
        {"choices": [{"text": "4", "finish_reason": None}]},
        {"choices": [{"text": "", "finish_reason": "stop"}]},
        "[DONE]",
    )
    answer, (request,) = await ask(sse_response(body), api="openai-completions")
    assert request.url.path == "/v1/completions" and json.loads(request.content)["prompt"] == "hi"
    assert answer.text == "4" and answer.error_class is None


async def test_endpoint_headers_are_sent_and_secrets_not_in_detail() -> None:
    answer, (request,) = await ask(reply(401, b"bad key"), headers={"Authorization": "Bearer k"})
    assert request.headers["authorization"] == "Bearer k"
    assert answer.error_class == "http_status" and answer.status_code == 401
    assert answer.error_detail == "HTTP 401 Unauthorized: bad key"


async def test_the_body_is_json_and_an_endpoint_content_type_wins() -> None:
    _, (request,) = await ask(reply(200, b"{}"), stream=False)
    assert request.headers.get_list("content-type") == ["application/json"]
    assert (
        request.content == json.dumps(json.loads(request.content), separators=(",", ":")).encode()
    )
    assert request.headers["content-length"] == str(len(request.content))
    own = {"content-type": "application/json; charset=utf-8"}
    _, (request,) = await ask(reply(200, b"{}"), stream=False, headers=own)
    assert request.headers.get_list("content-type") == ["application/json; charset=utf-8"]


@pytest.mark.parametrize(
    ("body", "error_class"),
    [
        (sse(chunk("a"), "[DONE]"), "stream_truncated"),  # no finish_reason
        (sse(chunk("a", finish="stop")), "stream_truncated"),  # no [DONE]
        (sse("{not json"), "bad_response"),
        (sse({"choices": "nope"}), "bad_response"),
        (sse({"choices": [{"delta": None, "finish_reason": "stop"}]}, "[DONE]"), "empty_output"),
        (sse({"error": {"message": "overloaded", "code": 429}}), "rate_limited"),
        (sse({"error": "bad"}), "bad_response"),
    ],
)
async def test_stream_shapes(body: bytes, error_class: str) -> None:
    answer, _ = await ask(sse_response(body))
    assert answer.error_class == error_class, answer.error_detail


def test_every_api_the_config_accepts_has_a_prober_and_an_example() -> None:
    from pathlib import Path

    from watchdog.config.load import KNOWN_APIS

    assert KNOWN_APIS["apis"] is APIS  # one registry: what the config accepts is what probes
    examples = (Path(__file__).resolve().parent.parent / "probes").glob("*.yaml")
    shown = {
        line.split("api:")[1].split()[0]
        for p in examples
        for line in p.read_text().splitlines()
        if "api:" in line
    }
    assert {"openai-chat", "ollama", "tgi"} <= shown

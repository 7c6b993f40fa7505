"""The OpenAI wire format shared by chat and completions: SSE or JSON in, a timed Answer out."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from watchdog import __version__
from watchdog.endpoint import Endpoint
from watchdog.probers.exchange import (
    ACCEPT_ENCODING,
    Failure,
    arrival,
    ask,
    parse_json,
    sse_events,
    whole_json,
)
from watchdog.result import Answer
from watchdog.runtime.clock import Clock


@dataclass(frozen=True)
class Piece:
    """What one choice (or delta) carried."""

    content: str = ""
    reasoning: str = ""
    tool_calls: int = 0
    finish_reason: str | None = None


def headers(endpoint: Endpoint, stream: bool) -> dict[str, str]:
    out = {
        "User-Agent": f"mlops-watchdog/{__version__}",
        "Accept-Encoding": ACCEPT_ENCODING,
        "Accept": "text/event-stream" if stream else "application/json",
    }
    out.update(endpoint.headers)
    return out


def request_body(
    body: dict[str, Any], sampling: dict[str, Any], model: str | None, stream: bool
) -> dict[str, Any]:
    """The OpenAI request: the API's own fields, sampling, model, and usage in the stream."""
    payload = {**body, **sampling, "stream": stream}
    if model:
        payload["model"] = model
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


async def exchange(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    path: str,
    payload: dict[str, Any],
    stream: bool,
    clock: Clock,
    piece_of: Callable[[dict[str, Any], bool], Piece],
) -> Answer:
    """POST `payload` and time the answer; never raises for what the endpoint does."""

    async def read_stream(response: httpx.Response, answer: Answer, t0: float) -> None:
        await _read_stream(response, endpoint, answer, t0, clock, piece_of)

    async def read_whole(response: httpx.Response, answer: Answer, t0: float) -> None:
        obj = await whole_json(response, endpoint.max_body_bytes, answer, t0, clock)
        _read_json(obj, response.status_code, answer, piece_of)

    answer = await ask(
        client,
        clock,
        endpoint,
        endpoint.base_url + path,
        headers(endpoint, stream),
        stream,
        read_stream,
        read_whole,
        json_body=payload,
    )
    if answer.error_class in (None, "empty_output"):
        _count_tokens(answer, len(answer.itl_s) + 1 if answer.ttft_s is not None else 0)
    return answer


def _absorb(obj: Any, answer: Answer, status: int | None, where: str) -> list[dict[str, Any]]:
    """Record model, usage and timings from a response object; return its choices."""
    if not isinstance(obj, dict):
        raise Failure("bad_response", f"{where} is not a JSON object", status)
    if obj.get("error") is not None:
        raise _error_object(obj["error"], status, where)
    answer.model = obj.get("model") if isinstance(obj.get("model"), str) else answer.model
    fp = obj.get("system_fingerprint")
    answer.system_fingerprint = fp if isinstance(fp, str) else answer.system_fingerprint
    usage = obj.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        answer.output_tokens, answer.token_source = usage["completion_tokens"], "usage"
    timings = obj.get("timings")
    if isinstance(timings, dict):
        answer.server_timings = {
            k: float(v) for k, v in timings.items() if isinstance(v, int | float)
        }
    choices = obj.get("choices")
    if choices is None and (usage or timings):
        return []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise Failure("bad_response", f"{where} has no `choices` list", status)
    return choices


def _error_object(error: Any, status: int | None, where: str) -> Failure:
    message = error.get("message") if isinstance(error, dict) else error
    code = error.get("code") if isinstance(error, dict) else None
    detail = f"server sent an error in {where}: {str(message)[:200]}"
    if code == 429:
        return Failure("rate_limited", detail, status)
    if isinstance(code, int) and code >= 400:
        return Failure("http_status", detail + f" (code {code})", status)
    return Failure("bad_response", detail, status)


def _piece(
    piece_of: Callable[[dict[str, Any], bool], Piece],
    choice: dict[str, Any],
    delta: bool,
    status: int | None,
) -> Piece:
    try:
        return piece_of(choice, delta)
    except (KeyError, TypeError, AttributeError) as exc:
        raise Failure(
            "bad_response", f"a choice is not in the API's shape ({exc!r})", status
        ) from None


async def _read_stream(
    response: httpx.Response,
    endpoint: Endpoint,
    answer: Answer,
    t0: float,
    clock: Clock,
    piece_of: Callable[[dict[str, Any], bool], Piece],
) -> None:
    status = response.status_code
    done = False
    async for event in sse_events(response, endpoint.max_body_bytes, arrival(response, clock, t0)):
        if event.data.strip() == "[DONE]":
            answer.e2e_s = event.at - t0
            done = True
            break
        obj = parse_json(event.data, "a stream event", status)
        for choice in _absorb(obj, answer, status, "the stream")[:1]:
            piece = _piece(piece_of, choice, True, status)
            answer.finish_reason = piece.finish_reason or answer.finish_reason
            answer.tool_calls += piece.tool_calls
            if piece.reasoning:
                answer.add_reasoning(piece.reasoning, event.at - t0)
            if piece.content:
                answer.add_content(piece.content, event.at - t0)
    if not done or answer.finish_reason is None:
        missing = "[DONE]" if not done else "a finish_reason"
        raise Failure("stream_truncated", f"stream ended without {missing}", status)


def _read_json(
    obj: Any, status: int, answer: Answer, piece_of: Callable[[dict[str, Any], bool], Piece]
) -> None:
    choices = _absorb(obj, answer, status, "the body")
    if not choices:
        raise Failure("bad_response", "the body has no choices", status)
    piece = _piece(piece_of, choices[0], False, status)
    answer.text, answer.reasoning = piece.content, piece.reasoning
    answer.tool_calls, answer.finish_reason = piece.tool_calls, piece.finish_reason


def _count_tokens(answer: Answer, streamed_chunks: int) -> None:
    if answer.token_source is not None:
        return
    timings = answer.server_timings or {}
    if timings.get("predicted_n"):
        answer.output_tokens, answer.token_source = int(timings["predicted_n"]), "server_timings"
    elif answer.text:
        # One streamed chunk is usually one token; otherwise about four characters a token.
        estimate = streamed_chunks or math.ceil(len(answer.text) / 4)
        answer.output_tokens, answer.token_source = estimate, "estimate"

"""`tgi`: Hugging Face text-generation-inference's /generate_stream (SSE) and /generate."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers.api import Api
from watchdog.probers.exchange import (
    TRANSPORT_ERRORS,
    Failure,
    arrival,
    ask,
    error_message,
    parse_json,
    sse_events,
    status_failure,
    whole_json,
)
from watchdog.probers.identity import endpoint_json
from watchdog.probers.openai_common import headers
from watchdog.result import Answer
from watchdog.runtime.clock import Clock

# TGI's finish reasons in the OpenAI vocabulary that checks and reports use.
FINISH_REASONS = {"eos_token": "stop", "stop_sequence": "stop", "length": "length"}


def request_body(prompt: Prompt) -> dict[str, Any]:
    """TGI's request: `inputs` and `parameters`, with greedy decoding spelled TGI's way."""
    sampling = prompt.sampling
    parameters: dict[str, Any] = {"details": True}
    if sampling.get("max_tokens") is not None:
        parameters["max_new_tokens"] = sampling["max_tokens"]
    if sampling.get("seed") is not None:
        parameters["seed"] = sampling["seed"]
    if sampling.get("stop"):
        parameters["stop"] = sampling["stop"]
    temperature = sampling.get("temperature")
    if temperature:
        parameters["do_sample"] = True
        parameters["temperature"] = temperature
        # TGI wants 0 < top_p < 1; 1 means no nucleus filtering, which is the default anyway.
        top_p = sampling.get("top_p")
        if top_p is not None and top_p < 1:
            parameters["top_p"] = top_p
    else:
        # TGI rejects temperature 0, and any top_p would switch sampling back on.
        parameters["do_sample"] = False
    return {"inputs": prompt.as_text, "parameters": parameters}


async def probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    model: str | None,
    prompt: Prompt,
    stream: bool,
    clock: Clock,
) -> Answer:
    """POST the prompt and time the answer; never raises for what the endpoint does.

    TGI serves one model and has no `model` field, so `model` is not sent.
    """
    path = "/generate_stream" if stream else "/generate"

    async def read_stream(response: httpx.Response, answer: Answer, t0: float) -> None:
        await _read_stream(response, endpoint, answer, t0, clock)

    async def read_whole(response: httpx.Response, answer: Answer, t0: float) -> None:
        obj = await whole_json(response, endpoint.max_body_bytes, answer, t0, clock)
        _read_json(obj, response.status_code, answer)

    return await ask(
        client,
        clock,
        endpoint,
        endpoint.base_url + path,
        headers(endpoint, stream),
        stream,
        read_stream,
        read_whole,
        json_body=request_body(prompt),
        refusal=_status_failure,
    )


def _status_failure(response: httpx.Response, body: bytes) -> Failure:
    """TGI's error body `{"error", "error_type"}` in the detail; overloaded is rate limiting."""
    obj = error_message(body)
    if obj is None:
        return status_failure(response, body)
    code = response.status_code
    detail = f"HTTP {code} {response.reason_phrase}: " + _error_text(obj)
    if code == 429 or obj.get("error_type") == "overloaded":
        retry = response.headers.get("retry-after")
        return Failure("rate_limited", detail + (f" (Retry-After {retry})" if retry else ""), code)
    return Failure("http_status", detail, code)


def _error_text(obj: dict[str, Any]) -> str:
    error_type = obj.get("error_type")
    message = str(obj.get("error"))[:200]
    return f"{error_type} error: {message}" if isinstance(error_type, str) else message


def _error_event(obj: dict[str, Any], status: int | None, where: str) -> Failure:
    """An error sent after a 200 (mid-stream, usually): the status line could not say it."""
    detail = f"server sent an error {where}: " + _error_text(obj)
    if obj.get("error_type") == "overloaded":
        return Failure("rate_limited", detail, status)
    return Failure("http_status", detail, status)


def _details(obj: dict[str, Any], answer: Answer, status: int | None, where: str) -> bool:
    """Record finish reason and token count from `details`; False when there is none."""
    details = obj.get("details")
    if details is None:
        return False
    if not isinstance(details, dict):
        raise Failure("bad_response", f"`details` in {where} is not a JSON object", status)
    reason = details.get("finish_reason")
    if isinstance(reason, str):
        answer.finish_reason = FINISH_REASONS.get(reason, reason)
    tokens = details.get("generated_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        answer.output_tokens, answer.token_source = tokens, "usage"
    return answer.finish_reason is not None


async def _read_stream(
    response: httpx.Response, endpoint: Endpoint, answer: Answer, t0: float, clock: Clock
) -> None:
    status = response.status_code
    tokens = 0
    finished = False
    async for event in sse_events(response, endpoint.max_body_bytes, arrival(response, clock, t0)):
        obj = parse_json(event.data, "a stream event", status)
        if not isinstance(obj, dict):
            raise Failure("bad_response", "a stream event is not a JSON object", status)
        if obj.get("error") is not None:
            raise _error_event(obj, status, "mid-stream")
        token = obj.get("token")
        if not isinstance(token, dict):
            raise Failure("bad_response", "a stream event has no `token` object", status)
        tokens += 1
        text = token.get("text")
        if not isinstance(text, str):
            raise Failure("bad_response", "a stream token has no `text` string", status)
        if text and not token.get("special"):
            answer.add_content(text, event.at - t0)
        if obj.get("generated_text") is not None:
            # The last event carries the whole text, detokenised once: trust it over the pieces.
            if isinstance(obj["generated_text"], str):
                answer.text = obj["generated_text"]
            finished = _details(obj, answer, status, "the last stream event")
            answer.e2e_s = event.at - t0
            break
    if not finished:
        raise Failure("stream_truncated", "stream ended without the final details event", status)
    if answer.token_source is None:
        answer.output_tokens, answer.token_source = tokens, "estimate"


def _read_json(obj: Any, status: int, answer: Answer) -> None:
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]  # TGI's `/` route, and proxies in front of it, answer with a list of one
    if not isinstance(obj, dict):
        raise Failure("bad_response", "the body is not a JSON object", status)
    if obj.get("error") is not None:
        raise _error_event(obj, status, "in the body")
    if not isinstance(obj.get("generated_text"), str):
        raise Failure("bad_response", "the body has no `generated_text` string", status)
    answer.text = obj["generated_text"]
    _details(obj, answer, status, "the body")
    if answer.token_source is None and answer.text:
        # About four characters a token, when the server left out `details`.
        answer.output_tokens, answer.token_source = math.ceil(len(answer.text) / 4), "estimate"


async def identify(
    client: httpx.AsyncClient, endpoint: Endpoint, seen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What is answering, from /info; best effort, so a server without it still gets probed."""
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        info = await endpoint_json(client, endpoint, "/info", seen or {})
    except TRANSPORT_ERRORS:
        return identity  # the probe itself records why the endpoint cannot be reached
    if not isinstance(info, dict):
        return identity
    if isinstance(info.get("model_id"), str):
        identity["model_ids"] = [info["model_id"]]
    if isinstance(info.get("model_sha"), str):
        identity["model_sha"] = info["model_sha"]
    build = info.get("version") if isinstance(info.get("version"), str) else info.get("sha")
    if isinstance(build, str):
        identity["build_info"] = build
    return identity


API = Api(
    "tgi",
    probe,
    identify,
    health_path="/health",
    ready_path="/info",
    serves_metrics=True,
)

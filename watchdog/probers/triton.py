"""`triton`: Triton's generate extension, /v2/models/{model}/generate[_stream] (SSE or JSON)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers.exchange import (
    TRANSPORT_ERRORS,
    Failure,
    body_chunks,
    content_type,
    decode,
    parse_json,
    sse_events,
    status_failure,
    timed,
)
from watchdog.probers.identity import endpoint_json
from watchdog.probers.openai_common import headers
from watchdog.result import Answer
from watchdog.runtime.clock import Clock


def request_body(prompt: Prompt, stream: bool) -> dict[str, Any]:
    """`text_input` and `parameters` in the names TensorRT-LLM backends read."""
    sampling = prompt.sampling
    parameters: dict[str, Any] = {}
    for name in ("max_tokens", "temperature", "seed"):
        if sampling.get(name) is not None:
            parameters[name] = sampling[name]
    parameters["stream"] = stream
    return {"text_input": prompt.as_text, "parameters": parameters}


def model_path(endpoint: Endpoint, model: str | None) -> str:
    name = endpoint.model or model or ""
    return "/v2/models/" + quote(name, safe="")


async def probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    model: str | None,
    prompt: Prompt,
    stream: bool,
    clock: Clock,
) -> Answer:
    """POST the prompt and time the answer; never raises for what the endpoint does.

    The model is in the path (config requires `model` for triton), not in the body.
    """
    path = model_path(endpoint, model) + ("/generate_stream" if stream else "/generate")

    async def read(response: httpx.Response, answer: Answer, t0: float) -> None:
        kind = content_type(response)
        if stream and kind == "text/event-stream":
            await _read_stream(response, endpoint, answer, t0, clock)
        else:
            await _read_json(response, endpoint, answer, t0, clock, kind)

    answer = await timed(
        client,
        clock,
        "POST",
        endpoint.base_url + path,
        endpoint.timeout_s,
        headers(endpoint, stream),
        read,
        streaming=stream,
        json_body=request_body(prompt, stream),
        refusal=_status_failure,
    )
    if answer.error_class is not None:
        return answer
    if not answer.text.strip():
        answer.error_class = "empty_output"
        answer.error_detail = f"no content (finish_reason={answer.finish_reason})"
    return answer


def _status_failure(response: httpx.Response, body: bytes) -> Failure:
    """Triton's error body `{"error": "..."}`: its message, not the JSON, goes in the detail."""
    try:
        obj = parse_json(body.decode("utf-8", "replace"), "the error body", None)
    except Failure:
        obj = None
    if not isinstance(obj, dict) or obj.get("error") is None:
        return status_failure(response, body)
    code = response.status_code
    detail = f"HTTP {code} {response.reason_phrase}: {str(obj['error'])[:200]}"
    if code == 429:
        retry = response.headers.get("retry-after")
        return Failure("rate_limited", detail + (f" (Retry-After {retry})" if retry else ""), code)
    return Failure("http_status", detail, code)


def _absorb(obj: Any, answer: Answer, status: int | None, where: str) -> str:
    """Record model and finish reason from one response object; return its `text_output`."""
    if not isinstance(obj, dict):
        raise Failure("bad_response", f"{where} is not a JSON object", status)
    if obj.get("error") is not None:
        # Sent after a 200, so the status line could not say it.
        raise Failure(
            "http_status", f"server sent an error in {where}: {str(obj['error'])[:200]}", status
        )
    if isinstance(obj.get("model_name"), str):
        answer.model = obj["model_name"]
    if isinstance(obj.get("finish_reason"), str):
        answer.finish_reason = obj["finish_reason"]
    text = obj.get("text_output")
    if not isinstance(text, str):
        raise Failure("bad_response", f"{where} has no `text_output` string", status)
    return text


async def _read_stream(
    response: httpx.Response, endpoint: Endpoint, answer: Answer, t0: float, clock: Clock
) -> None:
    status = response.status_code
    last_content: float | None = None
    chunks = 0
    async for event in sse_events(response, endpoint.max_body_bytes, clock.monotonic):
        obj = parse_json(event.data, "a stream event", status)
        # TensorRT-LLM streams one delta per event, not the text so far.
        text = _absorb(obj, answer, status, "the stream")
        answer.e2e_s = event.at - t0
        if text:
            chunks += 1
            answer.text += text
            if last_content is None:
                answer.ttft_s = event.at - t0
            else:
                answer.itl_s.append(event.at - last_content)
            last_content = event.at
    # No end marker: the stream simply ends, and a broken connection raises before here.
    if answer.e2e_s is None:
        answer.e2e_s = clock.monotonic() - t0
    if answer.text:
        # Triton reports no token counts; one streamed delta is usually one token.
        answer.output_tokens, answer.token_source = chunks, "estimate"


async def _read_json(
    response: httpx.Response,
    endpoint: Endpoint,
    answer: Answer,
    t0: float,
    clock: Clock,
    kind: str,
) -> None:
    status = response.status_code
    body = b"".join([c async for c in body_chunks(response, endpoint.max_body_bytes)])
    answer.e2e_s = clock.monotonic() - t0
    text = decode(body, "the body", status)
    if kind and "json" not in kind:
        raise Failure("bad_response", f"expected JSON, got {kind}: {text[:80]!r}", status)
    answer.text = _absorb(parse_json(text, "the body", status), answer, status, "the body")
    if answer.text:
        # About four characters a token: Triton reports no token counts.
        answer.output_tokens, answer.token_source = math.ceil(len(answer.text) / 4), "estimate"


async def identify(
    client: httpx.AsyncClient, endpoint: Endpoint, seen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Model name and versions from /v2/models/{model}, server build from /v2; best effort."""
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        model = await endpoint_json(client, endpoint, model_path(endpoint, None), seen or {})
        server = await endpoint_json(client, endpoint, "/v2", seen or {})
    except TRANSPORT_ERRORS:
        return identity  # the probe itself records why the endpoint cannot be reached
    if isinstance(model, dict):
        if isinstance(model.get("name"), str):
            identity["model_ids"] = [model["name"]]
        versions = model.get("versions")
        if isinstance(versions, list) and all(isinstance(v, str) for v in versions):
            identity["model_versions"] = versions
    if isinstance(server, dict):
        parts = [server.get("name"), server.get("version")]
        if all(isinstance(p, str) for p in parts):
            identity["build_info"] = " ".join(str(p) for p in parts)
    return identity

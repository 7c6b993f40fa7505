"""`triton`: Triton's generate extension, /v2/models/{model}/generate[_stream] (SSE or JSON)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers.api import Api
from watchdog.probers.exchange import (
    TRANSPORT_ERRORS,
    Failure,
    arrival,
    ask,
    message_failure,
    parse_json,
    sse_events,
    whole_json,
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

    async def read_stream(response: httpx.Response, answer: Answer, t0: float) -> None:
        await _read_stream(response, endpoint, answer, t0, clock)

    async def read_whole(response: httpx.Response, answer: Answer, t0: float) -> None:
        obj = await whole_json(response, endpoint.max_body_bytes, answer, t0, clock)
        answer.text = _absorb(obj, answer, response.status_code, "the body")
        if answer.text:
            # About four characters a token: Triton reports no token counts.
            answer.output_tokens, answer.token_source = math.ceil(len(answer.text) / 4), "estimate"

    return await ask(
        client,
        clock,
        endpoint,
        endpoint.base_url + path,
        headers(endpoint, stream),
        stream,
        read_stream,
        read_whole,
        json_body=request_body(prompt, stream),
        refusal=message_failure,
    )


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
    chunks = 0
    async for event in sse_events(response, endpoint.max_body_bytes, arrival(response, clock, t0)):
        obj = parse_json(event.data, "a stream event", status)
        # TensorRT-LLM streams one delta per event, not the text so far.
        text = _absorb(obj, answer, status, "the stream")
        answer.e2e_s = event.at - t0
        if text:
            chunks += 1
            answer.add_content(text, event.at - t0)
    # No end marker: the stream simply ends, and a broken connection raises before here.
    if answer.e2e_s is None:
        answer.e2e_s = arrival(response, clock, t0)() - t0
    if answer.text:
        # Triton sends no token counts, and one response is a piece of text of any length (a
        # word, for many backends): a count of events, never presented as tokens. With the
        # endpoint's `tokenizer`, the runner counts the text's tokens instead.
        answer.output_tokens, answer.token_source = chunks, "events"


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


def _needs_model(endpoint: Endpoint) -> str | None:
    if endpoint.model:
        return None
    return "api: triton needs `model` (the name in /v2/models/NAME/generate)"


API = Api(
    "triton",
    probe,
    identify,
    health_path="/v2/health/live",
    # Not /v2/health/ready: it says 200 while the model is still loading, and for a model that
    # is not there at all.
    ready_path="/v2/models/{model}/ready",
    needs=_needs_model,
)

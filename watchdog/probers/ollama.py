"""`ollama`: POST /api/chat (NDJSON stream or one JSON object); the model digest from /api/tags."""

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
    json_lines,
    message_failure,
    parse_json,
    whole_json,
)
from watchdog.probers.identity import endpoint_json
from watchdog.probers.openai_common import headers
from watchdog.result import Answer
from watchdog.runtime.clock import Clock

# Golden sampling → Ollama's `options`; what Ollama has no option for is left out.
OPTIONS = {
    "max_tokens": "num_predict",
    "temperature": "temperature",
    "seed": "seed",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "stop": "stop",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "repeat_penalty": "repeat_penalty",
}
# The final line's durations (nanoseconds) and counts, named as llama.cpp's `timings` are.
DURATIONS = {
    "prompt_eval_duration": "prompt_ms",
    "eval_duration": "predicted_ms",
    "load_duration": "load_ms",
    "total_duration": "total_ms",
}
COUNTS = {"prompt_eval_count": "prompt_n", "eval_count": "predicted_n"}
NS_PER_MS = 1_000_000


def request_body(
    messages: list[dict[str, str]], sampling: dict[str, Any], model: str | None, stream: bool
) -> dict[str, Any]:
    payload: dict[str, Any] = {"messages": messages, "stream": stream}
    if model:
        payload["model"] = model
    options = {OPTIONS[k]: v for k, v in sampling.items() if k in OPTIONS}
    if options:
        payload["options"] = options
    return payload


async def probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    model: str | None,
    prompt: Prompt,
    stream: bool,
    clock: Clock,
) -> Answer:
    """POST /api/chat and time the answer; never raises for what the endpoint does."""
    payload = request_body(prompt.messages, prompt.sampling, model, stream)
    sent = headers(endpoint, False)
    if stream and "Accept" not in endpoint.headers:
        sent["Accept"] = "application/x-ndjson"

    async def read_stream(response: httpx.Response, answer: Answer, t0: float) -> None:
        await _read_stream(response, endpoint, answer, t0, clock)

    async def read_whole(response: httpx.Response, answer: Answer, t0: float) -> None:
        obj = await whole_json(response, endpoint.max_body_bytes, answer, t0, clock)
        status = response.status_code
        if (
            isinstance(obj, dict)
            and not isinstance(obj.get("message"), dict)
            and "error" not in obj
        ):
            raise Failure("bad_response", "the body has no `message` object", status)
        answer.text, answer.reasoning, _ = _absorb(obj, answer, status, "the body")

    answer = await ask(
        client,
        clock,
        endpoint,
        endpoint.base_url + "/api/chat",
        sent,
        stream,
        read_stream,
        read_whole,
        json_body=payload,
        refusal=message_failure,
        sse=False,
        empty="no content (done_reason={finish_reason})",
    )
    if answer.error_class is None and answer.token_source is None and answer.text:
        # One streamed chunk is usually one token; otherwise about four characters a token.
        chunks = len(answer.itl_s) + 1 if answer.ttft_s is not None else 0
        answer.output_tokens = chunks or math.ceil(len(answer.text) / 4)
        answer.token_source = "estimate"
    return answer


def _absorb(obj: Any, answer: Answer, status: int | None, where: str) -> tuple[str, str, bool]:
    """Record model, tool calls, reason and timings from one object; return content, thinking, done."""
    if not isinstance(obj, dict):
        raise Failure("bad_response", f"{where} is not a JSON object", status)
    if obj.get("error") is not None:
        # Sent with 200 (mid-stream), so no status says what kind of failure it was.
        text = str(obj["error"])[:200]
        raise Failure("bad_response", f"server sent an error in {where}: {text}", status)
    if not isinstance(obj.get("done"), bool):
        raise Failure("bad_response", f"{where} has no boolean `done`", status)
    answer.model = obj["model"] if isinstance(obj.get("model"), str) else answer.model
    message = obj.get("message") or {}
    if not isinstance(message, dict):
        raise Failure("bad_response", f"{where} has a `message` that is not an object", status)
    content, thinking = message.get("content") or "", message.get("thinking") or ""
    tools = message.get("tool_calls") or []
    if not isinstance(content, str) or not isinstance(thinking, str) or not isinstance(tools, list):
        raise Failure("bad_response", f"{where} has a `message` not in the API's shape", status)
    answer.tool_calls += len(tools)
    if obj["done"]:
        reason = obj.get("done_reason")
        answer.finish_reason = reason if isinstance(reason, str) else answer.finish_reason
        timings = {
            name: obj[key] / NS_PER_MS
            for key, name in DURATIONS.items()
            if isinstance(obj.get(key), int | float)
        }
        timings.update(
            {name: float(obj[key]) for key, name in COUNTS.items() if isinstance(obj.get(key), int)}
        )
        answer.server_timings = timings or None
        if isinstance(obj.get("eval_count"), int):
            answer.output_tokens, answer.token_source = obj["eval_count"], "usage"
    return content, thinking, obj["done"]


async def _read_stream(
    response: httpx.Response, endpoint: Endpoint, answer: Answer, t0: float, clock: Clock
) -> None:
    status = response.status_code
    async for line, at in json_lines(
        response, endpoint.max_body_bytes, arrival(response, clock, t0)
    ):
        obj = parse_json(line, "a stream line", status)
        content, thinking, done = _absorb(obj, answer, status, "the stream")
        if thinking:
            answer.add_reasoning(thinking, at - t0)
        if content:
            answer.add_content(content, at - t0)
        if done:
            answer.e2e_s = at - t0
            return
    raise Failure("stream_truncated", "stream ended without a `done: true` line", status)


def _named(entry: dict[str, Any], model: str) -> bool:
    """Ollama fills in the `latest` tag: `llama3.2` is `llama3.2:latest`."""
    wanted = {model} if ":" in model.rsplit("/", 1)[-1] else {model, model + ":latest"}
    return entry.get("name") in wanted or entry.get("model") in wanted


async def identify(
    client: httpx.AsyncClient, endpoint: Endpoint, seen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Best effort: the configured model's name and digest from /api/tags (all names if none)."""
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        tags = await endpoint_json(client, endpoint, "/api/tags", seen or {})
    except TRANSPORT_ERRORS:
        return identity  # the probe itself records why the endpoint cannot be reached
    models = tags.get("models") if isinstance(tags, dict) else None
    if not isinstance(models, list):
        return identity
    entries = [m for m in models if isinstance(m, dict) and isinstance(m.get("name"), str)]
    if endpoint.model is None:
        identity["model_ids"] = sorted(m["name"] for m in entries)
        return identity
    for entry in entries:
        if _named(entry, endpoint.model):
            identity["model_ids"] = [entry["name"]]
            if isinstance(entry.get("digest"), str):
                identity["model_digest"] = entry["digest"]
            break
    return identity


API = Api(
    "ollama",
    probe,
    identify,
    health_path="/api/version",
    ready_path="/api/tags",
)

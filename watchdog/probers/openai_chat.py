"""`openai-chat`: POST /v1/chat/completions (vLLM, llama.cpp, SGLang, LM Studio, OpenAI)."""

from __future__ import annotations

from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers.api import Api
from watchdog.probers.identity import identify
from watchdog.probers.openai_common import Piece, exchange, request_body
from watchdog.result import Answer
from watchdog.runtime.clock import Clock


def piece_of(choice: dict[str, Any], delta: bool) -> Piece:
    message = choice["delta" if delta else "message"] or {}
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
    tools = message.get("tool_calls") or []
    return Piece(str(content), str(reasoning), len(tools), choice.get("finish_reason"))


async def probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    model: str | None,
    prompt: Prompt,
    stream: bool,
    clock: Clock,
) -> Answer:
    payload = request_body({"messages": prompt.messages}, prompt.sampling, model, stream)
    return await exchange(
        client, endpoint, "/v1/chat/completions", payload, stream, clock, piece_of
    )


API = Api(
    "openai-chat",
    probe,
    identify,
    health_path="/health",
    ready_path="/v1/models",
    serves_metrics=True,
)

"""`openai-completions`: POST /v1/completions, the legacy text-in, text-out API."""

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
    return Piece(str(choice.get("text") or ""), "", 0, choice.get("finish_reason"))


async def probe(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    model: str | None,
    prompt: Prompt,
    stream: bool,
    clock: Clock,
) -> Answer:
    payload = request_body({"prompt": prompt.as_text}, prompt.sampling, model, stream)
    return await exchange(client, endpoint, "/v1/completions", payload, stream, clock, piece_of)


API = Api(
    "openai-completions",
    probe,
    identify,
    health_path="/health",
    ready_path="/v1/models",
    serves_metrics=True,
)

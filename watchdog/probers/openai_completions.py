"""`openai-completions`: POST /v1/completions, the legacy text-in, text-out API."""

from __future__ import annotations

from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.config import Endpoint
from watchdog.golden import Prompt
from watchdog.probers.openai_common import Piece, exchange
from watchdog.result import Answer


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
    payload: dict[str, Any] = {"prompt": prompt.as_text, **prompt.sampling, "stream": stream}
    if model:
        payload["model"] = model
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return await exchange(client, endpoint, "/v1/completions", payload, stream, clock, piece_of)

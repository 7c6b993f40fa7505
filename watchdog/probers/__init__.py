"""One module per endpoint API, all with the same async signature, registered here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers import http, ollama, openai_chat, openai_completions, tgi, triton
from watchdog.result import Answer
from watchdog.runtime.clock import Clock

ProbeFn = Callable[
    [httpx.AsyncClient, Endpoint, str | None, Prompt, bool, Clock], Awaitable[Answer]
]

PROBERS: dict[str, ProbeFn] = {
    "openai-chat": openai_chat.probe,
    "openai-completions": openai_completions.probe,
    "ollama": ollama.probe,
    "tgi": tgi.probe,
    "triton": triton.probe,
    "http": http.probe,
}

"""One module per serving API, each ending in `API = Api(...)` (probers/api.py), registered here
with one line: how to ask it, how it says what it serves, its routes and what it needs."""

from __future__ import annotations

from watchdog.probers import (
    http,
    nim,
    ollama,
    openai_chat,
    openai_completions,
    sglang,
    tgi,
    triton,
)
from watchdog.probers.api import Api

APIS: dict[str, Api] = {
    api.name: api
    for api in (
        openai_chat.API,
        openai_completions.API,
        sglang.API,
        nim.API,
        ollama.API,
        tgi.API,
        triton.API,
        http.API,
    )
}

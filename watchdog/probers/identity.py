"""What is answering: model ids from /v1/models and llama.cpp's /props build, for fingerprints."""

from __future__ import annotations

import asyncio
import importlib
import os
from typing import Any

import httpx

from watchdog.config import Endpoint
from watchdog.probers.openai_common import TRANSPORT_ERRORS, headers

IDENTIFY_TIMEOUT_S = 10.0
# APIs whose servers say what they serve in their own way (imported late: they use _get_json).
OWN_IDENTITY = {
    "ollama": "watchdog.probers.ollama",
    "tgi": "watchdog.probers.tgi",
    "triton": "watchdog.probers.triton",
}


async def _get_json(client: httpx.AsyncClient, endpoint: Endpoint, path: str) -> Any:
    limit = min(endpoint.timeout_s, IDENTIFY_TIMEOUT_S)
    async with asyncio.timeout(limit):
        response = await client.get(
            endpoint.base_url + path, headers=headers(endpoint, False), timeout=limit
        )
    if response.status_code != 200 or len(response.content) > endpoint.max_body_bytes:
        return None
    try:
        return response.json()
    except ValueError:
        return None


async def identify(client: httpx.AsyncClient, endpoint: Endpoint) -> dict[str, Any]:
    """Best effort: a server without these routes still gets probed, with less in its identity."""
    if endpoint.api in OWN_IDENTITY:
        module = importlib.import_module(OWN_IDENTITY[endpoint.api])
        own: dict[str, Any] = await module.identify(client, endpoint)
        return own
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        models = await _get_json(client, endpoint, "/v1/models")
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            identity["model_ids"] = sorted(
                str(m.get("id")) for m in models["data"] if isinstance(m, dict)
            )
        props = await _get_json(client, endpoint, "/props")
        if isinstance(props, dict):
            if isinstance(props.get("build_info"), str):
                identity["build_info"] = props["build_info"]
            if isinstance(props.get("model_path"), str):
                identity["model_file"] = os.path.basename(props["model_path"])
    except TRANSPORT_ERRORS:
        pass  # the probe itself records why the endpoint cannot be reached
    return identity

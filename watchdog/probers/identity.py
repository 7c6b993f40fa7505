"""What is answering, for fingerprints: the JSON routes an API names, read once per look."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.probers.exchange import TRANSPORT_ERRORS, get_json
from watchdog.probers.openai_common import headers

IDENTIFY_TIMEOUT_S = 10.0


async def endpoint_json(
    client: httpx.AsyncClient, endpoint: Endpoint, path: str, seen: Mapping[str, Any]
) -> Any:
    """A JSON route that says what the endpoint serves: None unless a capped, parseable 200.
    `seen` holds what this run already read (the readiness route), by path."""
    if path in seen:
        return seen[path]
    return await get_json(
        client,
        endpoint.base_url + path,
        headers(endpoint, False),
        min(endpoint.timeout_s, IDENTIFY_TIMEOUT_S),
        endpoint.max_body_bytes,
    )


async def identify(
    client: httpx.AsyncClient, endpoint: Endpoint, seen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What an OpenAI-compatible server (and an `http` service) says it serves: model ids from
    /v1/models, llama.cpp's build and model file from /props. Best effort: a server without
    these routes still gets probed, with less in its identity."""
    seen = seen or {}
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        models = await endpoint_json(client, endpoint, "/v1/models", seen)
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            identity["model_ids"] = sorted(
                str(m.get("id")) for m in models["data"] if isinstance(m, dict)
            )
        props = await endpoint_json(client, endpoint, "/props", seen)
        if isinstance(props, dict):
            if isinstance(props.get("build_info"), str):
                identity["build_info"] = props["build_info"]
            if isinstance(props.get("model_path"), str):
                identity["model_file"] = os.path.basename(props["model_path"])
    except TRANSPORT_ERRORS:
        pass  # the probe itself records why the endpoint cannot be reached
    return identity

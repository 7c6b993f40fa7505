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


class Seen(dict[str, Any]):
    """The JSON bodies one look already read (the readiness route), by path; and `missing`, the
    routes this endpoint answered 404 at this look or an earlier one. The caller keeps `missing`
    across looks, so that a route a server does not have is asked once, not at every look."""

    def __init__(self, bodies: Mapping[str, Any], missing: set[str]):
        super().__init__(bodies)
        self.missing = missing


async def endpoint_json(
    client: httpx.AsyncClient, endpoint: Endpoint, path: str, seen: Mapping[str, Any]
) -> Any:
    """A JSON route that says what the endpoint serves: None unless a capped, parseable 200.
    `seen` holds what this run already read, by path; a `Seen` also what 404'd before."""
    if path in seen:
        return seen[path]
    missing = seen.missing if isinstance(seen, Seen) else None
    if missing is not None and path in missing:
        return None
    status, body = await get_json(
        client,
        endpoint.base_url + path,
        headers(endpoint, False),
        min(endpoint.timeout_s, IDENTIFY_TIMEOUT_S),
        endpoint.max_body_bytes,
    )
    if status == 404 and missing is not None:
        missing.add(path)
    return body


async def identify(
    client: httpx.AsyncClient, endpoint: Endpoint, seen: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What an OpenAI-compatible server (and an `http` service) says it serves: model ids from
    /v1/models; the build from vLLM's /version, or llama.cpp's build and model file from /props.
    Each server is asked only its own route when its models say who it is (`owned_by`), else
    /version, then /props unless /version answered. Best effort: a server without these routes
    still gets probed, with less in its identity."""
    seen = seen if seen is not None else {}
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        models = await endpoint_json(client, endpoint, "/v1/models", seen)
        owners: set[object] = set()
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            entries = [m for m in models["data"] if isinstance(m, dict)]
            identity["model_ids"] = sorted(str(m.get("id")) for m in entries)
            owners = {m.get("owned_by") for m in entries}
        if "llamacpp" not in owners:
            version = await endpoint_json(client, endpoint, "/version", seen)
            if isinstance(version, dict) and isinstance(version.get("version"), str):
                engine = "vllm " if "vllm" in owners else ""
                identity["build_info"] = engine + version["version"]
                return identity
        if "vllm" in owners:
            return identity
        props = await endpoint_json(client, endpoint, "/props", seen)
        if isinstance(props, dict):
            if isinstance(props.get("build_info"), str):
                identity["build_info"] = props["build_info"]
            if isinstance(props.get("model_path"), str):
                identity["model_file"] = os.path.basename(props["model_path"])
    except TRANSPORT_ERRORS:
        pass  # the probe itself records why the endpoint cannot be reached
    return identity

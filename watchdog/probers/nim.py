"""`nim`: NVIDIA NIM for LLMs, an OpenAI chat API with routes of its own: /v1/health/live,
/v1/health/ready, /v1/version, and vLLM's metric family without the `vllm:` prefix at
/v1/metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.probers.api import Api
from watchdog.probers.exchange import TRANSPORT_ERRORS
from watchdog.probers.identity import endpoint_json
from watchdog.probers.openai_chat import probe


async def identify(
    client: httpx.AsyncClient, endpoint: Endpoint, seen: Mapping[str, Any]
) -> dict[str, Any]:
    """The model ids of /v1/models and the NIM release of /v1/version: an upgrade is a change."""
    identity: dict[str, Any] = {"api": endpoint.api}
    try:
        models = await endpoint_json(client, endpoint, "/v1/models", seen)
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            entries = [m for m in models["data"] if isinstance(m, dict)]
            identity["model_ids"] = sorted(str(m.get("id")) for m in entries)
        version = await endpoint_json(client, endpoint, "/v1/version", seen)
        if isinstance(version, dict) and isinstance(version.get("release"), str):
            identity["build_info"] = "nim " + version["release"]
    except TRANSPORT_ERRORS:
        pass  # the probe itself records why the endpoint cannot be reached
    return identity


API = Api(
    "nim",
    probe,
    identify,
    health_path="/v1/health/live",
    ready_path="/v1/health/ready",  # 503 until the model is loaded
    serves_metrics=True,
    metrics_path="/v1/metrics",
)

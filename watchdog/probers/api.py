"""What one serving API is to the watchdog: how to ask it a golden prompt, how it says what it
serves, its own health and ready routes, whether it serves Prometheus metrics, and what an
endpoint speaking it must set. Each API module ends with one `API = Api(...)`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.result import Answer
from watchdog.runtime.clock import Clock

# (client, endpoint, model, prompt, stream, clock): the timed answer; never raises for what the
# endpoint does.
ProbeFn = Callable[
    [httpx.AsyncClient, Endpoint, str | None, Prompt, bool, Clock], Awaitable[Answer]
]
# (client, endpoint, what this run already read by path): what answers, for the fingerprint.
IdentifyFn = Callable[[httpx.AsyncClient, Endpoint, Mapping[str, Any]], Awaitable[dict[str, Any]]]


def _needs_nothing(endpoint: Endpoint) -> str | None:
    return None


@dataclass(frozen=True)
class Api:
    name: str  # the value of an endpoint's `api:`
    probe: ProbeFn
    identify: IdentifyFn
    health_path: str | None = None  # the liveness route, unless the endpoint names its own
    # The readiness route, likewise. `{model}` stands for the endpoint's model, for an engine
    # that says whether that very model is ready (a server can be up with it still loading).
    ready_path: str | None = None
    serves_metrics: bool = False  # Prometheus text at base_url + metrics_path
    metrics_path: str = "/metrics"
    # What an endpoint of this API must set, as a config problem; None when it has all.
    needs: Callable[[Endpoint], str | None] = _needs_nothing

    def liveness_path(self, endpoint: Endpoint) -> str | None:
        return self._route(endpoint, "health_path", self.health_path)

    def readiness_path(self, endpoint: Endpoint) -> str | None:
        return self._route(endpoint, "ready_path", self.ready_path)

    def metrics_url(self, endpoint: Endpoint) -> str | None:
        """Where the engine's metrics are read, or None when they are not."""
        wanted = endpoint.server_metrics
        if wanted is None:
            wanted = endpoint.metrics_url is not None or self.serves_metrics
        if not wanted:
            return None
        return endpoint.metrics_url or endpoint.base_url + self.metrics_path

    @staticmethod
    def _route(endpoint: Endpoint, key: str, default: str | None) -> str | None:
        if key in endpoint.model_fields_set:  # given, or turned off with null
            value: str | None = getattr(endpoint, key)
            return value or None
        if default and "{model}" in default:
            return default.replace("{model}", quote(endpoint.model or "", safe=""))
        return default

"""The `otlp:` config section: where the OpenTelemetry metrics go, with which headers, how often."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from watchdog.parsing.fields import Seconds, http_url
from watchdog.parsing.validate import Strict


class Otlp(Strict):
    """Push each probe result to an OpenTelemetry collector as the GenAI client metrics
    (`gen_ai.client.operation.duration`, time to first chunk, time per output chunk, token
    usage), over OTLP/HTTP with protobuf. Off unless set; the `mlops_watchdog_*` metrics on
    `/metrics` stay as they are. Needs `pip install 'mlops-watchdog[otlp]'`."""

    endpoint: str
    """The collector's OTLP/HTTP metrics URL, path included, e.g.
    `http://otel-collector:4318/v1/metrics`. Credentials go in `headers`, not in the URL."""
    headers: dict[str, str] = Field({}, repr=False)  # credentials: never in a repr
    """HTTP headers sent with every export, e.g. `Authorization: "Bearer ${OTLP_TOKEN}"`. Write
    their values as `${VAR}`: they are secrets, masked wherever the watchdog writes text."""
    interval: Seconds = 60.0
    """How often the metrics gathered since the last export are pushed."""
    gpu: bool = False
    """Also export each GPU's latest NVML sample as the `hw.gpu.*` hardware metrics
    (utilization, memory, power, temperature). Needs GPU telemetry (`gpu.enabled`)."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        url = str(http_url(value, "endpoint"))
        if "@" in urlsplit(url).netloc:
            raise ValueError("put credentials in `headers`, not in the endpoint URL")
        return url

"""The OpenTelemetry SDK's side: a MeterProvider whose reader pushes OTLP/HTTP protobuf every
`otlp.interval` from its own thread. The daemon hands it each run's results; the GPU gauges
read the latest NVML sample when the reader collects.

The SDK is an optional extra, imported when an exporter is built, never at import time: the
watchdog runs without it while `otlp:` is unset.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from watchdog import __version__
from watchdog.endpoint import Endpoint
from watchdog.gpu.nvml import GpuSample
from watchdog.otlp.conventions import (
    GPU,
    SCHEMA_URL,
    GenAi,
    Instrument,
    Point,
    conventions,
    gpu_points,
    points,
)
from watchdog.otlp.settings import Otlp
from watchdog.result import ProbeResult

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider

log = logging.getLogger("mlops_watchdog.otlp")
INSTALL = "pip install 'mlops-watchdog[otlp]'"
NEEDED = (
    "opentelemetry.sdk.metrics",
    "opentelemetry.sdk.metrics.export",
    "opentelemetry.sdk.resources",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
)
EXPORT_TIMEOUT_S = 10.0  # one export, its retries included (the SDK's default)
CLOSE_S = 2.0  # the last export at shutdown: DESIGN asks the daemon to exit within 10 s
SCOPE = "mlops_watchdog"

GpuSource = Callable[[], tuple[Iterable[GpuSample], str | None]]  # the samples, the driver


class OtlpUnavailable(Exception):
    """The OpenTelemetry packages are not installed; the message names the extra."""


def missing() -> str | None:
    """Why `otlp:` cannot work here (the packages it needs are not installed), or None."""
    try:
        for name in NEEDED:
            importlib.import_module(name)
    except ImportError:
        return f"needs the OpenTelemetry SDK and OTLP exporter packages: {INSTALL}"
    return None


class Exporter:
    """The GenAI client metrics of every probe result, and the GPUs' hw.gpu.* when asked for."""

    def __init__(self, provider: MeterProvider, settings: Otlp, genai: GenAi):
        self.provider = provider
        self.settings = settings
        self.genai = genai
        self.gpus: GpuSource | None = None
        meter = provider.get_meter(SCOPE, __version__, schema_url=genai.schema_url)
        self.instruments: dict[str, tuple[str, Any]] = {}  # name: (kind, the SDK's instrument)
        for i in genai.instruments:
            if i.kind == "histogram":
                made: Any = meter.create_histogram(
                    i.name, i.unit, i.description, explicit_bucket_boundaries_advisory=i.buckets
                )
            else:
                made = meter.create_counter(i.name, i.unit, i.description)
            self.instruments[i.name] = (i.kind, made)
        if settings.gpu:
            # The hardware conventions stayed in the main release: its schema in both modes.
            hardware = provider.get_meter(SCOPE + ".gpu", __version__, schema_url=SCHEMA_URL)
            for instrument, _ in GPU:
                create = {
                    "gauge": hardware.create_observable_gauge,
                    "updowncounter": hardware.create_observable_up_down_counter,
                }[instrument.kind]
                create(
                    instrument.name,
                    [self._observer(instrument)],
                    instrument.unit,
                    instrument.description,
                )

    def describe(self) -> str:
        return (
            f"OpenTelemetry metrics ({self.genai.version}) to {self.settings.endpoint} "
            f"every {self.settings.interval:g}s"
        )

    def record(self, endpoint: Endpoint, results: Iterable[ProbeResult]) -> None:
        """A run's results, as the reader will export them at its next collection."""
        for result in results:
            for p in points(endpoint, result, self.genai):
                kind, instrument = self.instruments[p.name]
                if kind == "histogram":
                    instrument.record(p.value, p.attributes)
                else:
                    instrument.add(p.value, p.attributes)

    def watch_gpus(self, source: GpuSource) -> None:
        """Where the hw.gpu.* gauges read the latest samples (read from the reader's thread)."""
        self.gpus = source

    def _observer(
        self, instrument: Instrument
    ) -> Callable[[CallbackOptions], Iterator[Observation]]:
        from opentelemetry.metrics import Observation  # the optional SDK, present once built

        def observe(options: CallbackOptions) -> Iterator[Observation]:
            for p in self._gpu_points():
                if p.name == instrument.name:
                    yield Observation(p.value, p.attributes)

        return observe

    def _gpu_points(self) -> Sequence[Point]:
        if self.gpus is None:
            return ()
        samples, driver = self.gpus()
        return gpu_points(samples, driver)

    def flush(self, timeout_s: float = EXPORT_TIMEOUT_S) -> bool:
        """Collect and export now, in this thread; False when it did not finish in time."""
        return bool(self.provider.force_flush(timeout_millis=timeout_s * 1000))

    def close(self, timeout_s: float = CLOSE_S) -> None:
        """The last export, then stop the reader's thread."""
        self.provider.shutdown(timeout_millis=timeout_s * 1000)


def build(settings: Otlp, node: str, env: Mapping[str, str]) -> Exporter:
    """An exporter pushing to `settings.endpoint`; `env` is read for
    OTEL_SEMCONV_STABILITY_OPT_IN. Raises OtlpUnavailable when the packages are missing."""
    problem = missing()
    if problem:
        raise OtlpUnavailable(f"otlp: {problem}")
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(
        endpoint=settings.endpoint, headers=dict(settings.headers), timeout=EXPORT_TIMEOUT_S
    )
    reader = PeriodicExportingMetricReader(
        exporter,
        export_interval_millis=settings.interval * 1000,
        export_timeout_millis=EXPORT_TIMEOUT_S * 1000,
    )
    resource = Resource.create(
        {"service.name": "mlops-watchdog", "service.version": __version__, "host.name": node}
    )
    provider = MeterProvider(metric_readers=[reader], resource=resource)
    return Exporter(provider, settings, conventions(env))

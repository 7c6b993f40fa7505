"""What a probe result and a GPU sample become in OpenTelemetry: metric names, units and
attributes of the pinned semantic conventions, or of the latest experimental GenAI ones when
OTEL_SEMCONV_STABILITY_OPT_IN asks for them. Pure: no SDK here, so it is tested without one.

The names are written out, not imported, because the OpenTelemetry packages are an optional
extra; tests/test_otlp.py checks each against `opentelemetry.semconv` where it defines it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from watchdog.endpoint import Endpoint
from watchdog.gpu.nvml import GpuSample
from watchdog.result import ProbeResult

# The OpenTelemetry semantic conventions implemented by default: the last release that held
# the GenAI conventions itself (1.42.0 moved them to open-telemetry/semantic-conventions-genai).
SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
# What `gen_ai_latest_experimental` switches to: that repository's release.
GENAI_LATEST_VERSION = "0.1.0"
OPT_IN_VARIABLE = "OTEL_SEMCONV_STABILITY_OPT_IN"
OPT_IN = "gen_ai_latest_experimental"

# The buckets both releases ask for (ExplicitBucketBoundaries).
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))  # 1, 4, 16, ... 67108864

# Attributes.
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
TOKEN_TYPE = "gen_ai.token.type"
TOKEN_MODALITY = "gen_ai.token.modality"  # latest only
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
HW_ID = "hw.id"
HW_TYPE = "hw.type"
HW_VENDOR = "hw.vendor"
HW_MODEL = "hw.model"
HW_DRIVER = "hw.driver_version"
HW_GPU_TASK = "hw.gpu.task"

# `gen_ai.operation.name` by the endpoint's `api:`: what the request asks for. Those that send
# a conversation (`messages`) chat; those that send one prompt text complete it.
OPERATIONS = {
    "openai-chat": "chat",
    "sglang": "chat",
    "nim": "chat",
    "ollama": "chat",
    "openai-completions": "text_completion",
    "tgi": "text_completion",
    "triton": "text_completion",
    "http": "text_completion",
}
# `gen_ai.provider.name` names the API's flavour, as the convention's note has it: every server
# that speaks the OpenAI API is `openai` (server.address and the model say which one it is);
# the others are named by their `api:` value, a custom value the convention allows.
OPENAI_WIRE = frozenset({"openai-chat", "openai-completions", "sglang", "nim"})
# Token counts that are counts: an estimate from the text's length and Triton's streamed events
# are not, and the convention says to report no usage then.
COUNTED = frozenset({"usage", "server_timings", "tokenizer"})

Kind = Literal["histogram", "counter", "gauge", "updowncounter"]
Attributes = Mapping[str, str | int]


@dataclass(frozen=True)
class Instrument:
    name: str
    kind: Kind
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Point:
    """One measurement: a value for the instrument `name`, with its attributes."""

    name: str
    value: float
    attributes: Attributes


@dataclass(frozen=True)
class GenAi:
    """The GenAI client instruments of one convention release."""

    version: str
    schema_url: str | None
    duration: Instrument
    first_chunk: Instrument
    per_chunk: Instrument
    tokens: Instrument  # a histogram per operation
    token_total: Instrument | None  # the latest release's usage counter

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        extra = (self.token_total,) if self.token_total else ()
        return (self.duration, self.first_chunk, self.per_chunk, self.tokens, *extra)


_FIRST_CHUNK = (
    "Time to receive the first chunk, measured from when the client issues the generation "
    "request to when the first chunk is received in the response stream."
)
_PER_CHUNK = (
    "Time per output chunk, recorded for each chunk received after the first one, measured as "
    "the time elapsed from the end of the previous chunk to the end of the current chunk."
)

PINNED = GenAi(
    version=f"semantic conventions {SEMCONV_VERSION}",
    schema_url=SCHEMA_URL,
    duration=Instrument(
        "gen_ai.client.operation.duration",
        "histogram",
        "s",
        "GenAI operation duration.",
        DURATION_BUCKETS,
    ),
    first_chunk=Instrument(
        "gen_ai.client.operation.time_to_first_chunk",
        "histogram",
        "s",
        _FIRST_CHUNK,
        DURATION_BUCKETS,
    ),
    per_chunk=Instrument(
        "gen_ai.client.operation.time_per_output_chunk",
        "histogram",
        "s",
        _PER_CHUNK,
        DURATION_BUCKETS,
    ),
    tokens=Instrument(
        "gen_ai.client.token.usage",
        "histogram",
        "{token}",
        "Number of input and output tokens used.",
        TOKEN_BUCKETS,
    ),
    token_total=None,
)
LATEST = GenAi(
    version=f"semantic-conventions-genai {GENAI_LATEST_VERSION}",
    schema_url=None,
    duration=Instrument(
        "gen_ai.client.inference.duration",
        "histogram",
        "s",
        "GenAI client inference operation duration.",
        DURATION_BUCKETS,
    ),
    first_chunk=Instrument(
        "gen_ai.client.inference.time_to_first_chunk",
        "histogram",
        "s",
        _FIRST_CHUNK,
        DURATION_BUCKETS,
    ),
    per_chunk=Instrument(
        "gen_ai.client.inference.time_per_output_chunk",
        "histogram",
        "s",
        _PER_CHUNK,
        DURATION_BUCKETS,
    ),
    tokens=Instrument(
        "gen_ai.client.inference.operation.output_tokens",
        "histogram",
        "{token}",
        "The number of output (completion) tokens used per inference operation.",
        TOKEN_BUCKETS,
    ),
    token_total=Instrument(
        "gen_ai.client.inference.usage.output_tokens",
        "counter",
        "{token}",
        "The number of output (completion) tokens used, including reasoning tokens.",
    ),
)

# The hardware conventions' GPU metrics (the same in both): (instrument, GpuSample field).
# Not `hw.energy`: the periodic sample leaves the energy counter out (it costs more CPU than the
# rest of a sample; watchdog/gpu/nvml.py).
GPU = (
    (
        Instrument(
            "hw.gpu.utilization", "gauge", "1", "Fraction of time spent in a specific task."
        ),
        "util_gpu",
    ),
    (Instrument("hw.gpu.memory.usage", "updowncounter", "By", "GPU memory used."), "memory_used"),
    (
        Instrument("hw.gpu.memory.limit", "updowncounter", "By", "Size of the GPU memory."),
        "memory_total",
    ),
    (Instrument("hw.gpu.memory.utilization", "gauge", "1", "Fraction of GPU memory used."), ""),
    (
        Instrument("hw.power", "gauge", "W", "Instantaneous power consumed by the component."),
        "power_w",
    ),
    (
        Instrument("hw.temperature", "gauge", "Cel", "Temperature in degrees Celsius."),
        "temperature_c",
    ),
)


def opted_in(env: Mapping[str, str]) -> bool:
    """Whether OTEL_SEMCONV_STABILITY_OPT_IN (a comma-separated list) asks for the latest
    experimental GenAI conventions."""
    return OPT_IN in {v.strip() for v in env.get(OPT_IN_VARIABLE, "").split(",")}


def conventions(env: Mapping[str, str]) -> GenAi:
    return LATEST if opted_in(env) else PINNED


def operation(endpoint: Endpoint, result: ProbeResult) -> dict[str, str | int]:
    """The attributes every GenAI metric of this answer carries."""
    url = urlsplit(endpoint.base_url)
    attributes: dict[str, str | int] = {
        OPERATION: OPERATIONS.get(endpoint.api, "chat"),
        PROVIDER: "openai" if endpoint.api in OPENAI_WIRE else endpoint.api,
    }
    # Without `model:` the watchdog asks for the first model the server lists: the one that
    # answers, as far as it says.
    requested = endpoint.model or result.answer.model
    if requested:
        attributes[REQUEST_MODEL] = requested
    if result.answer.model:
        attributes[RESPONSE_MODEL] = result.answer.model
    if url.hostname:
        attributes[SERVER_ADDRESS] = url.hostname
        attributes[SERVER_PORT] = url.port or (443 if url.scheme == "https" else 80)
    return attributes


def points(endpoint: Endpoint, result: ProbeResult, genai: GenAi) -> list[Point]:
    """The measurements of one answer. The duration is end to end, and a failure's carries
    `error.type`, the watchdog's error class (a failed format check is `check_failed`). The
    chunk metrics are for streamed answers only, one time per output chunk per gap between
    content chunks. Output tokens when the server (or the endpoint's tokenizer) counted them;
    the input's count is not kept, so it is not reported."""
    answer = result.answer
    common = operation(endpoint, result)
    failed = {ERROR_TYPE: result.error_class} if result.error_class else {}
    out: list[Point] = []
    if answer.e2e_s is not None:
        out.append(Point(genai.duration.name, answer.e2e_s, {**common, **failed}))
    if result.stream and answer.ttft_s is not None:
        out.append(Point(genai.first_chunk.name, answer.ttft_s, common))
        out.extend(Point(genai.per_chunk.name, gap, common) for gap in answer.itl_s)
    counted = answer.tokens if answer.token_source in COUNTED else None
    if genai.token_total is None:
        if counted is not None:
            out.append(Point(genai.tokens.name, counted, {**common, TOKEN_TYPE: "output"}))
        return out
    # The latest release records every operation, failed ones too: 0 when no count came, under
    # the `unknown` modality. A golden prompt asks for text, so a count is of text tokens.
    modality = "text" if counted is not None else "unknown"
    value = counted or 0
    out.append(Point(genai.tokens.name, value, {**common, **failed}))
    out.append(Point(genai.token_total.name, value, {**common, TOKEN_MODALITY: modality}))
    return out


def gpu_points(samples: Iterable[GpuSample], driver: str | None) -> list[Point]:
    """Each GPU's latest sample as the hw.gpu.* metrics; a field NVML does not support on a GPU
    has no point, as on /metrics."""
    out = []
    for g in samples:
        attributes: dict[str, str | int] = {
            HW_ID: g.uuid,
            HW_TYPE: "gpu",
            HW_VENDOR: "NVIDIA",
            HW_MODEL: g.name,
        }
        if driver:
            attributes[HW_DRIVER] = driver
        for instrument, field in GPU:
            if field:
                value = getattr(g, field)
            elif g.memory_used is not None and g.memory_total:
                value = g.memory_used / g.memory_total
            else:
                value = None
            if value is None:
                continue
            extra = {HW_GPU_TASK: "general"} if instrument.name == "hw.gpu.utilization" else {}
            out.append(Point(instrument.name, float(value), {**attributes, **extra}))
    return out

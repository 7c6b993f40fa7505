"""OpenTelemetry export against a real OTLP/HTTP receiver on a loopback socket.

The receiver (tests/otlp_receiver.py, and why no collector runs here) decodes each
`ExportMetricsServiceRequest` with the official `opentelemetry-proto` messages: the exporter
under test is the SDK's own, unmocked, and what it sends is read as a collector reads it. Probes are driven through httpx.MockTransport,
and every test forces the export with a flush instead of waiting for the interval.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from tests.conftest import FakeClock
from tests.fakenvml import UUID, FakeGpu, FakeNvml, samples
from tests.otlp_receiver import Receiver, receiving
from watchdog import __version__, cli
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.endpoint import Endpoint
from watchdog.gpu.nvml import Nvml
from watchdog.otlp import conventions, export
from watchdog.otlp.conventions import LATEST, PINNED
from watchdog.otlp.settings import Otlp
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.result import Answer, ProbeResult
from watchdog.store import Store

TOKEN = "otlp-s3cret-t0ken"
ENV = {"OTLP_TOKEN": TOKEN}
GOLDEN = """
name: two
prompts:
  - id: capital
    prompt: "Capital of France?"
    checks: [{contains: Paris}]
  - id: wrong
    prompt: "Capital of Germany?"
    checks: [{contains: Berlin}]
"""
CHUNKS = ["Pa", "ri", "s"]  # three content chunks: one first chunk, two gaps


# The receiver ---------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as found:
        yield found


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind)


def attrs(kvs: list[KeyValue]) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in kvs}


@dataclass(frozen=True)
class Seen:
    """One data point as the receiver decoded it."""

    name: str
    unit: str
    kind: str  # histogram, sum, gauge
    attributes: dict[str, Any]
    value: float  # a histogram's sum
    count: int = 0  # a histogram's count
    monotonic: bool | None = None


def seen(receiver: Receiver) -> list[Seen]:
    out = []
    for got in receiver.got:
        for rm in got.request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    data = getattr(m, kind)
                    for p in data.data_points:
                        a = attrs(p.attributes)
                        if kind == "histogram":
                            out.append(Seen(m.name, m.unit, kind, a, p.sum, p.count))
                        else:
                            v = p.as_double if p.HasField("as_double") else p.as_int
                            mono = data.is_monotonic if kind == "sum" else None
                            out.append(Seen(m.name, m.unit, kind, a, v, monotonic=mono))
    return out


def named(points: list[Seen], name: str) -> list[Seen]:
    return [p for p in points if p.name == name]


# The probed side ------------------------------------------------------------------------------


class TickingClock(FakeClock):
    """Monotonic time that moves 10 ms at every read, so that streamed chunks have gaps."""

    def monotonic(self) -> float:
        self.advance(0.01)
        return super().monotonic()


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def respond(status: int, body: bytes, kind: str = "application/json") -> httpx.Response:
    return httpx.Response(status, headers={"content-type": kind}, stream=httpx.ByteStream(body))


def llm(request: httpx.Request) -> httpx.Response:
    """llm.test answers in three streamed chunks with a usage count; broken.test answers 503."""
    if request.url.host == "broken.test" and request.method == "POST":
        return respond(503, b'{"error": {"message": "overloaded"}}')
    if request.url.path == "/v1/models":
        return respond(200, b'{"data": [{"id": "smol"}]}')
    if request.method == "GET":
        return respond(200, b'{"status": "ok"}')
    deltas = [{"choices": [{"delta": {"content": c}, "finish_reason": None}]} for c in CHUNKS]
    end = {"choices": [{"delta": {}, "finish_reason": "stop"}], "model": "smol-2"}
    usage = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
    return respond(200, sse(*deltas, end, usage), "text/event-stream")


def write(tmp_path: Path, otlp: str = "", gpu: str = "") -> Path:
    (tmp_path / "two.yaml").write_text(GOLDEN)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
listen: ""
node: node-7
{otlp}
{gpu}
endpoints:
  - {{name: chat, api: openai-chat, base_url: "http://llm.test:8000", model: smol}}
  - {{name: legacy, api: openai-completions, base_url: "https://broken.test"}}
probes:
  - {{endpoint: chat, golden_set: two.yaml, stream: true}}
  - {{endpoint: legacy, golden_set: two.yaml, stream: false}}
"""
    )
    path.chmod(0o600)
    return path


def otlp_section(receiver: Receiver, extra: str = "") -> str:
    return (
        f'otlp: {{endpoint: "{receiver.url}", interval: 1h, '
        f'headers: {{Authorization: "Bearer ${{OTLP_TOKEN}}"}}{extra}}}'
    )


@pytest.fixture
def exporters() -> Iterator[list[export.Exporter]]:
    """Every exporter a test builds, shut down after it (each has a reader thread)."""
    made: list[export.Exporter] = []
    yield made
    for e in made:
        e.close()


def build(config: Config, made: list[export.Exporter], env: dict[str, str] | None = None) -> Any:
    assert config.otlp is not None
    exporter = export.build(config.otlp, config.node, env or {})
    made.append(exporter)
    return exporter


async def probe_all(
    config: Config, tmp_path: Path, exporter: export.Exporter | None, nvml: Nvml | None = None
) -> Daemon:
    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=httpx.MockTransport(llm)) as client:
        daemon = Daemon(config, client, store, TickingClock(), nvml=nvml, otlp=exporter)
        for probe in config.probes:
            await daemon.probe_once(probe)
    store.close()
    return daemon


# The tests ------------------------------------------------------------------------------------


async def test_probe_results_arrive_as_the_pinned_genai_client_metrics(
    tmp_path: Path, receiver: Receiver, exporters: list[export.Exporter]
) -> None:
    config = load_config(write(tmp_path, otlp_section(receiver)), env=ENV)
    exporter = build(config, exporters)
    await probe_all(config, tmp_path, exporter)
    assert exporter.flush()

    assert len(receiver.got) == 1
    got = receiver.got[0]
    assert got.headers["authorization"] == f"Bearer {TOKEN}"
    assert got.headers["content-type"] == "application/x-protobuf"
    (rm,) = got.request.resource_metrics
    resource = attrs(rm.resource.attributes)
    assert resource["service.name"] == "mlops-watchdog"
    assert resource["service.version"] == __version__
    assert resource["host.name"] == "node-7"
    (scope,) = rm.scope_metrics
    assert scope.scope.name == "mlops_watchdog"
    assert scope.schema_url == "https://opentelemetry.io/schemas/1.41.0"

    points = seen(receiver)
    units = {p.name: (p.unit, p.kind) for p in points}
    assert units == {
        "gen_ai.client.operation.duration": ("s", "histogram"),
        "gen_ai.client.operation.time_to_first_chunk": ("s", "histogram"),
        "gen_ai.client.operation.time_per_output_chunk": ("s", "histogram"),
        "gen_ai.client.token.usage": ("{token}", "histogram"),
    }
    chat = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "smol",
        "gen_ai.response.model": "smol-2",
        "server.address": "llm.test",
        "server.port": 8000,
    }
    # No `model:`, and a 503 names none: the result does not say which model was asked for.
    legacy = {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "openai",
        "server.address": "broken.test",
        "server.port": 443,
    }
    durations = {
        json.dumps(p.attributes, sort_keys=True): p.count
        for p in named(points, "gen_ai.client.operation.duration")
    }
    # One prompt per endpoint and error class: the passing one, the format failure, the 503s.
    assert durations == {
        json.dumps(chat, sort_keys=True): 1,
        json.dumps({**chat, "error.type": "check_failed"}, sort_keys=True): 1,
        json.dumps({**legacy, "error.type": "http_status"}, sort_keys=True): 2,
    }
    # The chunk metrics are for the streamed answers only, without error.type.
    (first,) = named(points, "gen_ai.client.operation.time_to_first_chunk")
    assert (first.attributes, first.count) == (chat, 2)
    assert first.value > 0
    (per_chunk,) = named(points, "gen_ai.client.operation.time_per_output_chunk")
    assert (per_chunk.attributes, per_chunk.count) == (chat, 2 * (len(CHUNKS) - 1))
    # Output tokens as the server counted them; a 503 counted none and reports none.
    (tokens,) = named(points, "gen_ai.client.token.usage")
    assert tokens.attributes == {**chat, "gen_ai.token.type": "output"}
    assert (tokens.count, tokens.value) == (2, 6)


async def test_the_stability_opt_in_switches_to_the_latest_experimental_names(
    tmp_path: Path, receiver: Receiver, exporters: list[export.Exporter]
) -> None:
    config = load_config(write(tmp_path, otlp_section(receiver)), env=ENV)
    env = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http, gen_ai_latest_experimental"}
    exporter = build(config, exporters, env)
    await probe_all(config, tmp_path, exporter)
    assert exporter.flush()

    (scope,) = receiver.got[0].request.resource_metrics[0].scope_metrics
    assert scope.schema_url == ""  # the GenAI repository's releases have no schema URL yet
    points = seen(receiver)
    assert {p.name: (p.unit, p.kind) for p in points} == {
        "gen_ai.client.inference.duration": ("s", "histogram"),
        "gen_ai.client.inference.time_to_first_chunk": ("s", "histogram"),
        "gen_ai.client.inference.time_per_output_chunk": ("s", "histogram"),
        "gen_ai.client.inference.operation.output_tokens": ("{token}", "histogram"),
        "gen_ai.client.inference.usage.output_tokens": ("{token}", "sum"),
    }
    # Every operation counts, failed ones too: 0 tokens under the `unknown` modality.
    usage = {
        (p.attributes["server.address"], p.attributes["gen_ai.token.modality"]): (
            p.value,
            p.monotonic,
        )
        for p in named(points, "gen_ai.client.inference.usage.output_tokens")
    }
    assert usage == {("llm.test", "text"): (6, True), ("broken.test", "unknown"): (0, True)}
    per_operation = {
        p.attributes.get("error.type"): (p.count, p.value)
        for p in named(points, "gen_ai.client.inference.operation.output_tokens")
    }
    assert per_operation == {None: (1, 3), "check_failed": (1, 3), "http_status": (2, 0)}
    assert "gen_ai.token.type" not in str([p.attributes for p in points])


async def test_with_otlp_unset_nothing_is_exported(tmp_path: Path, receiver: Receiver) -> None:
    config = load_config(write(tmp_path), env=ENV)
    assert config.otlp is None  # so `run` builds no exporter
    daemon = await probe_all(config, tmp_path, None)
    assert daemon.otlp is None and receiver.got == []
    assert "OtelPeriodicExportingMetricReader" not in {t.name for t in threading.enumerate()}


async def test_the_header_secret_reaches_the_receiver_and_never_the_log(
    tmp_path: Path,
    receiver: Receiver,
    exporters: list[export.Exporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    receiver.status = 401  # not retried: the exporter logs the refusal once
    config = load_config(write(tmp_path, otlp_section(receiver)), env=ENV)
    assert TOKEN in config.secrets and f"Bearer {TOKEN}" in config.secrets
    exporter = build(config, exporters)
    await probe_all(config, tmp_path, exporter)
    exporter.flush()
    assert receiver.got[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "Failed to export metrics batch code: 401" in caplog.text
    assert exporter.describe() == (
        f"OpenTelemetry metrics (semantic conventions 1.41.0) to {receiver.url} every 3600s"
    )
    assert TOKEN not in caplog.text + exporter.describe() + repr(config)


async def test_gpu_samples_arrive_as_hw_gpu_metrics(
    tmp_path: Path, receiver: Receiver, exporters: list[export.Exporter]
) -> None:
    path = write(tmp_path, otlp_section(receiver, ", gpu: true"))
    config = load_config(path, env=ENV)
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load"))])
    nvml = Nvml(slow_every=1, pcie_every=1, lib=fake)
    exporter = build(config, exporters)
    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=httpx.MockTransport(llm)) as client:
        daemon = Daemon(config, client, store, FakeClock(), nvml=nvml, otlp=exporter)
        daemon.gpu.start(0.0)
        await daemon.gpu_once()
        sample = daemon.gpu.latest[UUID]
        assert exporter.flush()
        daemon.gpu.close()
    store.close()

    points = {p.name: p for p in seen(receiver) if p.name.startswith("hw.")}
    assert {n: (p.unit, p.kind, p.monotonic) for n, p in points.items()} == {
        "hw.gpu.utilization": ("1", "gauge", None),
        "hw.gpu.memory.usage": ("By", "sum", False),
        "hw.gpu.memory.limit": ("By", "sum", False),
        "hw.gpu.memory.utilization": ("1", "gauge", None),
        "hw.power": ("W", "gauge", None),
        "hw.temperature": ("Cel", "gauge", None),
    }
    gpu = {
        "hw.id": UUID,
        "hw.type": "gpu",
        "hw.vendor": "NVIDIA",
        "hw.model": sample.name,
        "hw.driver_version": daemon.gpu.driver,
    }
    assert points["hw.gpu.utilization"].attributes == {**gpu, "hw.gpu.task": "general"}
    assert all(p.attributes == gpu for n, p in points.items() if n != "hw.gpu.utilization")
    assert points["hw.gpu.utilization"].value == sample.util_gpu
    assert points["hw.gpu.memory.usage"].value == sample.memory_used
    assert points["hw.gpu.memory.limit"].value == sample.memory_total
    assert sample.memory_used is not None and sample.memory_total
    assert points["hw.gpu.memory.utilization"].value == sample.memory_used / sample.memory_total
    assert points["hw.power"].value == sample.power_w
    assert points["hw.temperature"].value == sample.temperature_c


async def test_the_last_runs_are_exported_when_the_exporter_closes(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = load_config(write(tmp_path, otlp_section(receiver)), env=ENV)
    assert config.otlp is not None
    exporter = export.build(config.otlp, config.node, {})
    await probe_all(config, tmp_path, exporter)
    assert receiver.got == []  # the interval is an hour away
    exporter.close()  # what Daemon.serve does when it stops
    assert named(seen(receiver), "gen_ai.client.operation.duration")


# Config ---------------------------------------------------------------------------------------


def problems(path: Path, env: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(InvalidFile) as caught:
        load_config(path, env=env)
    return [str(p).replace(f"{path.parent}/", "") for p in caught.value.problems]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            'otlp: {endpoint: "collector:4318/v1/metrics"}',
            "config.yaml:5: otlp.endpoint: "
            "endpoint must start with http:// or https:// and name a host",
        ),
        (
            'otlp: {endpoint: "http://user:${OTLP_TOKEN}@collector:4318/v1/metrics"}',
            "config.yaml:5: otlp.endpoint: put credentials in `headers`, not in the endpoint URL",
        ),
        (
            'otlp: {endpoint: "http://collector:4318/v1/metrics", every: 10s}',
            "config.yaml:5: otlp.every: unknown key (allowed here: endpoint, headers, interval, gpu)",
        ),
        (
            'otlp: {endpoint: "http://collector:4318/v1/metrics", interval: soon}',
            "config.yaml:5: otlp.interval: 'soon' is not a duration; write e.g. 30s, 5m, 1h30m "
            "or 2d",
        ),
        ("otlp: {headers: {}}", "config.yaml:5: otlp.endpoint: required key is missing"),
    ],
)
def test_otlp_config_errors(tmp_path: Path, section: str, expected: str) -> None:
    assert problems(write(tmp_path, section)) == [expected]


def test_otlp_gpu_needs_gpu_telemetry(tmp_path: Path) -> None:
    section = 'otlp: {endpoint: "http://collector:4318/v1/metrics", gpu: true}'
    path = write(tmp_path, section, "gpu: {enabled: false}")
    assert problems(path) == ["config.yaml:5: otlp.gpu: needs GPU telemetry: gpu.enabled is false"]


def test_check_and_run_name_the_extra_when_the_packages_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'otlp: {endpoint: "http://collector:4318/v1/metrics"}')
    assert cli.main(["check", "--config", str(path)]) == 0
    capsys.readouterr()
    # As if the extra were not installed: importing the exporter fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter", None)
    needs = (
        "config.yaml:5: otlp: needs the OpenTelemetry SDK and OTLP exporter packages: "
        "pip install 'mlops-watchdog[otlp]'"
    )
    assert problems(path) == [needs]
    for command in ("check", "run"):
        assert cli.main([command, "--config", str(path)]) == 2
        err = capsys.readouterr().err.replace(f"{tmp_path}/", "")
        assert err.splitlines()[0] == needs
    with pytest.raises(export.OtlpUnavailable, match=r"mlops-watchdog\[otlp\]"):
        export.build(Otlp(endpoint="http://collector:4318/v1/metrics"), "n", {})


# The names ------------------------------------------------------------------------------------


class Recording:
    """A meter that says how an instrument was asked for: semconv's create_* functions call it."""

    def __getattr__(self, kind: str) -> Any:
        return lambda **asked: {"kind": kind, **asked}


def test_the_pinned_names_are_the_semconv_packages() -> None:
    """Every name written out in watchdog/otlp/conventions.py, against the constants of the
    opentelemetry-semantic-conventions release the SDK pins (the GenAI ones there are marked
    as moved to the GenAI repository, with their 1.41 names and units unchanged)."""
    from opentelemetry.semconv._incubating.attributes import (
        error_attributes,
        gen_ai_attributes,
        hw_attributes,
        server_attributes,
    )
    from opentelemetry.semconv._incubating.metrics import gen_ai_metrics, hw_metrics
    from opentelemetry.semconv.schemas import Schemas

    assert Schemas.V1_41_0.value == conventions.SCHEMA_URL
    meter: Any = Recording()
    made = {
        gen_ai_metrics.create_gen_ai_client_operation_duration(meter)["name"]: (
            gen_ai_metrics.create_gen_ai_client_operation_duration(meter)
        ),
        **{
            asked["name"]: asked
            for asked in (
                gen_ai_metrics.create_gen_ai_client_operation_time_to_first_chunk(meter),
                gen_ai_metrics.create_gen_ai_client_operation_time_per_output_chunk(meter),
                gen_ai_metrics.create_gen_ai_client_token_usage(meter),
            )
        },
    }
    for ours in PINNED.instruments:
        theirs = made[ours.name]
        assert (ours.unit, ours.description) == (theirs["unit"], theirs["description"])
        assert theirs["kind"] == "create_histogram"
    hardware = {
        hw_metrics.HW_GPU_UTILIZATION: hw_metrics.create_hw_gpu_utilization(meter, None),
        hw_metrics.HW_GPU_MEMORY_USAGE: hw_metrics.create_hw_gpu_memory_usage(meter),
        hw_metrics.HW_GPU_MEMORY_LIMIT: hw_metrics.create_hw_gpu_memory_limit(meter),
        hw_metrics.HW_GPU_MEMORY_UTILIZATION: hw_metrics.create_hw_gpu_memory_utilization(
            meter, None
        ),
        hw_metrics.HW_POWER: hw_metrics.create_hw_power(meter, None),
        hw_metrics.HW_TEMPERATURE: hw_metrics.create_hw_temperature(meter, None),
    }
    kinds = {
        "gauge": "create_observable_gauge",
        "updowncounter": "create_up_down_counter",
        "counter": "create_counter",
    }
    for ours, _ in conventions.GPU:
        theirs = hardware[ours.name]
        assert (ours.unit, ours.description) == (theirs["unit"], theirs["description"])
        assert kinds[ours.kind] == theirs["kind"]  # observed from samples: observable ones
    g = gen_ai_attributes
    assert (conventions.OPERATION, conventions.PROVIDER) == (
        g.GEN_AI_OPERATION_NAME,
        g.GEN_AI_PROVIDER_NAME,
    )
    assert (conventions.REQUEST_MODEL, conventions.RESPONSE_MODEL, conventions.TOKEN_TYPE) == (
        g.GEN_AI_REQUEST_MODEL,
        g.GEN_AI_RESPONSE_MODEL,
        g.GEN_AI_TOKEN_TYPE,
    )
    assert (conventions.SERVER_ADDRESS, conventions.SERVER_PORT, conventions.ERROR_TYPE) == (
        server_attributes.SERVER_ADDRESS,
        server_attributes.SERVER_PORT,
        error_attributes.ERROR_TYPE,
    )
    h = hw_attributes
    assert (
        conventions.HW_ID,
        conventions.HW_TYPE,
        conventions.HW_VENDOR,
        conventions.HW_MODEL,
        conventions.HW_DRIVER,
        conventions.HW_GPU_TASK,
    ) == (h.HW_ID, h.HW_TYPE, h.HW_VENDOR, h.HW_MODEL, h.HW_DRIVER_VERSION, h.HW_GPU_TASK)
    assert h.HwTypeValues.GPU.value == "gpu" and h.HwGpuTaskValues.GENERAL.value == "general"
    operations = {v.value for v in g.GenAiOperationNameValues}
    assert set(conventions.OPERATIONS.values()) <= operations
    assert g.GenAiProviderNameValues.OPENAI.value == "openai"
    assert {"input", "output"} == {v.value for v in g.GenAiTokenTypeValues}
    # The latest release's names are not in the package: they differ from the pinned ones.
    assert not {i.name for i in LATEST.instruments} & {i.name for i in PINNED.instruments}


def test_every_api_has_an_operation_name() -> None:
    from watchdog.probers import APIS

    assert set(conventions.OPERATIONS) == set(APIS)


def test_an_estimated_token_count_is_no_usage() -> None:
    endpoint = Endpoint(name="t", api="tgi", base_url="http://tgi:3000")
    answer = Answer(text="Paris", e2e_s=0.5, output_tokens=2, token_source="estimate")
    result = ProbeResult("t", "p", "g", "h", datetime.now(UTC), False, answer, [], "f")
    assert [p.name for p in conventions.points(endpoint, result, PINNED)] == [
        "gen_ai.client.operation.duration"
    ]
    (duration,) = conventions.points(endpoint, result, PINNED)
    assert duration.attributes == {
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "tgi",
        "server.address": "tgi",
        "server.port": 3000,
    }

"""Engines' own /metrics: recorded and source-faithful fixtures, restarts, and the capped GET."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from tests.peers import LlamaServer
from watchdog.probers import server_metrics
from watchdog.probers.engine_names import ENGINES
from watchdog.probers.exchange import Failure
from watchdog.probers.server_metrics import parse, scrape
from watchdog.result import ServerLoad

FIXTURES = Path(__file__).parent / "fixtures" / "server_metrics"
VLLM_MODEL = 'model_name="Qwen/Qwen2.5-7B-Instruct"'
SGLANG_MODEL = 'model_name="meta-llama/Llama-3.1-8B-Instruct"'
NIM_MODEL = 'model_name="meta/llama-3.1-8b-instruct"'


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def grown(load: ServerLoad, by: dict[str, tuple[float, float]]) -> ServerLoad:
    """`load` read again after each histogram named in `by` took (count, sum) more, spread
    evenly over its series."""
    totals = dict(load.totals)
    for histogram, (count, total) in by.items():
        for part, more in (("_count", count), ("_sum", total)):
            keys = [k for k in totals if k.startswith(histogram + part + "{")]
            assert keys, f"{histogram}{part} is not in the read"
            for key in keys:
                totals[key] += more / len(keys)
    return replace(load, totals=totals)


def test_vllm_sums_engines_and_takes_the_fullest_cache() -> None:
    load = parse(fixture("vllm.txt"))
    # Two data-parallel engines: 2 + 3 waiting, 3 + 4 running, caches at 0.42 and 0.57.
    assert load.values == {
        "requests_waiting": 5.0,
        "requests_running": 7.0,
        "kv_cache_usage_ratio": 0.57,
    }
    assert load.sources["kv_cache_usage_ratio"] == "vllm:kv_cache_usage_perc"
    assert load.started_at == 1764213587.62
    assert load.totals[f'vllm:generation_tokens_total{{engine="1",{VLLM_MODEL}}}'] == 19380.0
    assert load.totals[f'vllm:prompt_tokens_total{{engine="0",{VLLM_MODEL}}}'] == 51234.0
    assert not any(key.startswith("python_gc") for key in load.totals)


def test_vllm_ttft_histogram_is_summed_bucket_by_bucket() -> None:
    ttft = parse(fixture("vllm.txt")).ttft
    assert ttft is not None
    buckets = dict(ttft.buckets)
    assert (buckets[0.04], buckets[0.1], buckets[0.5], buckets[math.inf]) == (2.0, 6.0, 10.0, 11.0)
    assert [le for le, _ in ttft.buckets] == sorted(buckets) and len(buckets) == 23
    assert ttft.count == 11.0
    assert ttft.sum == pytest.approx(2.418 + 0.67)


def test_vllm_inter_token_latency_is_a_mean_between_reads() -> None:
    """`vllm:inter_token_latency_seconds` (since 0.11): the mean of what both engines observed
    between two reads. Its cumulative mean since the start would hide today's slowness."""
    first = parse(fixture("vllm.txt"))
    key = f'vllm:inter_token_latency_seconds_count{{engine="1",{VLLM_MODEL}}}'
    assert first.totals[key] == 19376.0
    assert first.totals[key.replace("_count", "_sum")] == 469.08
    assert "mean_inter_token_latency_seconds" not in first.values  # one read is no mean
    second = grown(first, {"vllm:inter_token_latency_seconds": (200, 5.0)})
    load = server_metrics.with_rates(second, first, 15.0)
    assert load.values["mean_inter_token_latency_seconds"] == 0.025
    assert load.sources["mean_inter_token_latency_seconds"] == (
        "vllm:inter_token_latency_seconds_sum per vllm:inter_token_latency_seconds_count"
    )
    # No token generated between the reads: no mean, rather than 0.
    idle = server_metrics.with_rates(first, first, 15.0)
    assert "mean_inter_token_latency_seconds" not in idle.values
    # A restart sends the count down: no mean either.
    restarted = server_metrics.with_rates(first, second, 15.0)
    assert "mean_inter_token_latency_seconds" not in restarted.values


def test_former_vllm_cache_name_still_maps() -> None:
    load = parse(fixture("vllm-old.txt"))
    assert load.values["kv_cache_usage_ratio"] == 0.113
    assert load.sources["kv_cache_usage_ratio"] == "vllm:gpu_cache_usage_perc"
    assert (load.values["requests_running"], load.values["requests_waiting"]) == (1.0, 0.0)


def test_former_vllm_time_per_output_token_name_still_maps() -> None:
    first = parse(fixture("vllm-old.txt"))
    assert first.totals[f"vllm:time_per_output_token_seconds_count{{{VLLM_MODEL}}}"] == 4299.0
    second = grown(first, {"vllm:time_per_output_token_seconds": (50, 1.0)})
    load = server_metrics.with_rates(second, first, 5.0)
    assert load.values["mean_inter_token_latency_seconds"] == 0.02
    assert load.sources["mean_inter_token_latency_seconds"].startswith(
        "vllm:time_per_output_token_seconds_sum per"
    )


def test_current_inter_token_name_wins_while_both_are_served() -> None:
    # vLLM 0.11 serves both; 0.12 the old one behind --show-hidden-metrics-for-version=0.11.
    histograms = "".join(
        f"# TYPE vllm:{name} histogram\n"
        f'vllm:{name}_bucket{{le="+Inf",model_name="m"}} 10\n'
        f'vllm:{name}_count{{model_name="m"}} 10\n'
        f'vllm:{name}_sum{{model_name="m"}} 0.5\n'
        for name in ("time_per_output_token_seconds", "inter_token_latency_seconds")
    )
    first = parse(histograms)
    second = grown(
        first,
        {
            "vllm:inter_token_latency_seconds": (10, 0.2),
            "vllm:time_per_output_token_seconds": (10, 9.0),
        },
    )
    load = server_metrics.with_rates(second, first, 1.0)
    assert load.values == {"mean_inter_token_latency_seconds": pytest.approx(0.02)}


def test_current_name_wins_while_both_are_served() -> None:
    # vLLM 0.9 and 0.10 serve the deprecated gauge next to its replacement.
    text = (
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model_name="m"} 0.9\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{model_name="m"} 0.25\n'
    )
    load = parse(text)
    assert load.values == {"kv_cache_usage_ratio": 0.25}
    assert load.sources == {"kv_cache_usage_ratio": "vllm:kv_cache_usage_perc"}


def test_sglang() -> None:
    load = parse(fixture("sglang.txt"))
    assert load.values == {
        "requests_waiting": 26.0,
        "requests_running": 162.0,
        "kv_cache_usage_ratio": 0.28,
        "generation_tokens_per_second": 86.50814177726902,
    }
    # Streamed and whole answers are series of their own (`is_streaming`), summed.
    assert load.ttft is not None and (load.ttft.count, load.ttft.sum) == (1102.0, 871.25)
    assert dict(load.ttft.buckets)[0.4] == 411.0
    assert load.sources["ttft_seconds"] == "sglang:time_to_first_token_seconds"
    assert load.started_at is None  # multiprocess mode has no process collector
    streamed = f'engine_type="unified",is_streaming="true",{SGLANG_MODEL}'
    assert load.totals[f"sglang:generation_tokens_total{{{streamed}}}"] == 690000.0
    assert (
        load.totals[
            f'sglang:inter_token_latency_seconds_count{{engine_type="unified",{SGLANG_MODEL}}}'
        ]
        == 754655.0
    )


def test_sglang_inter_token_latency_is_a_mean_between_reads() -> None:
    # SGLang observes each token of a step at the step's time divided among them.
    first = parse(fixture("sglang.txt"))
    second = grown(first, {"sglang:inter_token_latency_seconds": (400, 12.0)})
    load = server_metrics.with_rates(second, first, 10.0)
    assert load.values["mean_inter_token_latency_seconds"] == 0.03
    assert load.sources["mean_inter_token_latency_seconds"] == (
        "sglang:inter_token_latency_seconds_sum per sglang:inter_token_latency_seconds_count"
    )


def test_nim_reads_vllms_family_without_its_prefix() -> None:
    load = parse(fixture("nim.txt"))
    assert load.values == {
        "requests_waiting": 1.0,
        "requests_running": 3.0,
        "kv_cache_usage_ratio": 0.064,
    }
    assert load.sources == {
        "requests_waiting": "num_requests_waiting",
        "requests_running": "num_requests_running",
        "kv_cache_usage_ratio": "gpu_cache_usage_perc",  # the name NIM's docs give
        "ttft_seconds": "time_to_first_token_seconds",
    }
    assert load.ttft is not None and (load.ttft.count, load.ttft.sum) == (80.0, 3.2)
    assert load.started_at == 1765201142.17
    model = f"{{{NIM_MODEL}}}"
    assert load.totals == {
        f"generation_tokens_total{model}": 9812.0,
        f"time_per_output_token_seconds_sum{model}": 129.4,
        f"time_per_output_token_seconds_count{model}": 9732.0,
        f"request_success_total{model}": 79.0,
        f"request_failure_total{model}": 1.0,
        f"prompt_tokens_total{model}": 18450.0,
    }


def test_nim_counters_become_speed_requests_and_inter_token_latency() -> None:
    first = parse(fixture("nim.txt"))
    model = f"{{{NIM_MODEL}}}"
    totals = dict(first.totals)
    totals[f"generation_tokens_total{model}"] += 1000
    totals[f"request_success_total{model}"] += 8
    totals[f"request_failure_total{model}"] += 2
    second = grown(replace(first, totals=totals), {"time_per_output_token_seconds": (992, 19.84)})
    load = server_metrics.with_rates(second, first, 10.0)
    assert load.values == {
        **first.values,
        "generation_tokens_per_second": 100.0,
        "request_successes_per_second": 0.8,
        "request_failures_per_second": 0.2,
        "mean_inter_token_latency_seconds": pytest.approx(0.02),
    }
    assert load.sources["generation_tokens_per_second"] == "rate of generation_tokens_total"


def test_a_body_is_read_through_one_engines_names() -> None:
    """Unprefixed names are NIM's only in a body of no prefixed family: another exporter's
    `num_requests_running` beside llama-server's, or NIM-like counters beside vLLM's, are not
    mixed in."""
    stray = (
        "# TYPE num_requests_running gauge\nnum_requests_running 99\n"
        "# TYPE generation_tokens counter\ngeneration_tokens_total 5\n"
    )
    assert parse(fixture("llamacpp.txt") + stray) == parse(fixture("llamacpp.txt"))
    assert parse(fixture("vllm.txt") + stray) == parse(fixture("vllm.txt"))
    alone = parse(stray)  # only NIM's names: NIM's
    assert alone.values == {"requests_running": 99.0}
    assert alone.totals == {"generation_tokens_total": 5.0}
    # A body of no engine: its start time, nothing else.
    assert parse("process_start_time_seconds 1.7e9\nhttp_requests_total 3\n") == ServerLoad(
        values={}, started_at=1.7e9
    )


def test_tgi_counters_without_total_suffix() -> None:
    load = parse(fixture("tgi.txt"))
    assert load.values == {"requests_waiting": 4.0, "requests_running": 6.0}
    assert load.ttft is None  # TGI has no TTFT histogram
    assert load.totals == {"tgi_request_count": 1452.0}


def test_triton_pending_requests_are_summed_over_models() -> None:
    load = parse(fixture("triton.txt"))
    assert load.values == {"requests_waiting": 6.0}
    assert load.totals['nv_inference_request_success{model="tensorrt_llm",version="1"}'] == 310.0
    assert len(load.totals) == 12  # success, failure and queue time of 4 models


def test_llamacpp_recorded_output() -> None:
    # Recorded after one chat completion (42 prompt tokens, 8 generated): current builds no
    # longer serve llamacpp:kv_cache_usage_ratio, nor a TTFT histogram or a start time.
    load = parse(fixture("llamacpp.txt"))
    assert load.values == {
        "requests_waiting": 0.0,
        "requests_running": 0.0,
        "generation_tokens_per_second": 0.626815,
    }
    assert load.sources == {
        "requests_waiting": "llamacpp:requests_deferred",
        "requests_running": "llamacpp:requests_processing",
        "generation_tokens_per_second": "llamacpp:predicted_tokens_seconds",
    }
    assert load.totals == {
        "llamacpp:prompt_tokens_total": 42.0,
        "llamacpp:tokens_predicted_total": 8.0,
        "llamacpp:n_decode_total": 8.0,
    }
    assert load.ttft is None and load.started_at is None


def test_created_samples_nan_and_other_types_are_ignored() -> None:
    text = (
        "# TYPE vllm:generation_tokens counter\n"
        'vllm:generation_tokens_total{model_name="m"} 10.0\n'
        'vllm:generation_tokens_created{model_name="m"} 1.7e+09\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0"} NaN\n'
        'vllm:num_requests_waiting{engine="1"} 2.0\n'
        "# TYPE tgi_queue_size summary\n"
        "tgi_queue_size_count 9\n"
    )
    load = parse(text)
    assert load.values == {"requests_waiting": 2.0}
    assert load.totals == {'vllm:generation_tokens_total{model_name="m"}': 10.0}


def test_untyped_exposition_still_maps() -> None:
    load = parse("llamacpp:requests_deferred 3\nllamacpp:tokens_predicted_total 7\n")
    assert load.values == {"requests_waiting": 3.0}
    assert load.totals == {"llamacpp:tokens_predicted_total": 7.0}


def test_empty_text_is_an_empty_load() -> None:
    assert parse("") == ServerLoad(values={})


@pytest.mark.parametrize(
    "text",
    [
        "<!doctype html>\n<html><body>Not here</body></html>\n",
        '{"detail":"Not Found"}',
        "Not Found\n",
        "# TYPE sglang:time_to_first_token_seconds histogram\n"
        'sglang:time_to_first_token_seconds_bucket{le="soon"} 1\n',
    ],
)
def test_text_that_is_not_prometheus_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"^not Prometheus text format: .+"):
        parse(text)


def test_histogram_bucket_without_le_is_a_value_error() -> None:
    text = "# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket 1\n"
    with pytest.raises(ValueError, match="vllm:time_to_first_token_seconds bucket without"):
        parse(text)


# Restarts.


def test_process_start_time_change_is_a_restart() -> None:
    before = parse(fixture("vllm.txt"))
    after = parse(fixture("vllm.txt").replace("1.76421358762e+09", "1.76421400001e+09"))
    assert after.restarted_since(before) == (
        "process start time changed from 2025-11-27T03:19:47+00:00 to 2025-11-27T03:26:40+00:00"
    )


def test_start_marker_change_is_a_restart() -> None:
    # llama-server's Process-Start-Time-Unix header: counters alone miss a restart that was
    # followed by more traffic than before it.
    before = replace(parse(fixture("llamacpp.txt")), start_marker="2043393524")
    after = replace(parse(fixture("llamacpp.txt")), start_marker="2051170118")
    assert after.restarted_since(before) == (
        "Process-Start-Time-Unix header changed from 2043393524 to 2051170118"
    )
    assert replace(after, start_marker=None).restarted_since(before) is None


def test_counter_going_down_is_a_restart() -> None:
    before = parse(
        "# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 1234567\n"
    )
    after = parse(
        "# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 17\n"
    )
    assert after.restarted_since(before) == (
        "counter llamacpp:tokens_predicted_total went down from 1234567 to 17"
    )


def test_labelled_counter_going_down_names_its_series() -> None:
    before = parse(fixture("vllm.txt"))
    after = parse(fixture("vllm.txt").replace("} 48807.0", "} 120.0"))
    assert after.restarted_since(before) == (
        f'counter vllm:prompt_tokens_total{{engine="1",{VLLM_MODEL}}} went down from 48807 to 120'
    )


def test_growing_counters_and_same_start_are_no_restart() -> None:
    before = parse(fixture("vllm.txt"))
    waiting = f'vllm:num_requests_waiting{{engine="0",{VLLM_MODEL}}}'
    grown = fixture("vllm.txt").replace("} 20417.0", "} 20517.0")
    after = parse(grown.replace(f"{waiting} 2.0", f"{waiting} 9.0"))
    assert after.values["requests_waiting"] == 12.0
    assert after.totals != before.totals
    assert after.restarted_since(before) is None
    assert before.restarted_since(before) is None


def test_a_series_that_vanishes_is_no_restart() -> None:
    # Triton unloading a model drops its series; the others still grow.
    before = parse(fixture("triton.txt"))
    unloaded = "\n".join(
        line for line in fixture("triton.txt").splitlines() if 'model="postprocessing"' not in line
    )
    after = parse(unloaded.replace("} 310", "} 311"))
    assert after.restarted_since(before) is None


def test_start_time_only_on_one_side_falls_back_to_counters() -> None:
    before = parse(fixture("vllm.txt"))
    without_start = re.sub(r"^process_start_time_seconds .*\n", "", fixture("vllm.txt"), flags=re.M)
    after = parse(without_start.replace("} 51234.0", "} 3.0"))
    assert after.started_at is None
    reason = after.restarted_since(before)
    assert reason is not None and reason.startswith("counter vllm:prompt_tokens_total{engine=")


def test_to_json_is_compact_and_json_able() -> None:
    record = parse(fixture("vllm.txt")).to_json()
    assert record == {
        "values": {"requests_waiting": 5.0, "requests_running": 7.0, "kv_cache_usage_ratio": 0.57},
        "ttft": {"sum": pytest.approx(3.088), "count": 11.0},
        "started_at": 1764213587.62,
    }
    json.dumps(record, allow_nan=False)
    assert parse("").to_json() == {"values": {}, "ttft": None, "started_at": None}


def test_exported_names_cover_what_parse_yields() -> None:
    names = [name for name, _, _ in server_metrics.EXPORTED]
    assert {n for engine in ENGINES.values() for n in engine.names} <= set(names)
    assert {"ttft_seconds", "start_time_seconds"} <= set(names)
    assert len(names) == len(set(names))
    for name, kind, help_text in server_metrics.EXPORTED:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name) and kind in ("gauge", "histogram")
        assert help_text.endswith(".")


# The capped GET, in process (MockTransport) and over a real socket.


def mock_client(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


def unread(status: int, body: bytes, **headers: str) -> httpx.Response:
    """A response whose body is still unread, as from a socket (scrape reads it raw)."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


async def test_scrape_sends_auth_and_asks_for_text_format() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return unread(200, fixture("sglang.txt").encode())

    async with mock_client(httpx.MockTransport(answer)) as client:
        # The caller's Accept and Accept-Encoding give way, whatever their case: the body must
        # be the text format in an encoding the cap can inflate.
        sent = {"Authorization": "Bearer k", "accept": "application/json", "ACCEPT-ENCODING": "br"}
        load = await scrape(client, "http://e/metrics", sent, 5.0, 1 << 20)
    assert load.values["requests_running"] == 162.0
    (request,) = seen
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers.get_list("accept-encoding") == ["gzip, deflate"]
    (accept,) = request.headers.get_list("accept")
    assert accept.startswith("text/plain;version=0.0.4")


async def test_scrape_reads_a_gzipped_body() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return unread(
            200, gzip.compress(fixture("vllm.txt").encode()), **{"content-encoding": "gzip"}
        )

    async with mock_client(httpx.MockTransport(answer)) as client:
        load = await scrape(client, "http://e/metrics", {}, 5.0, 1 << 20)
    assert load.values["requests_running"] == 7.0


@pytest.mark.parametrize(
    ("response", "error_class", "detail"),
    [
        (
            unread(501, b'{"error": {"code": 501, "message": "Start it with `--metrics`"}}'),
            "http_status",
            "http://e/metrics: HTTP 501 Not Implemented: ",
        ),
        (
            unread(200, b"<html><body>dashboard</body></html>"),
            "bad_response",
            "http://e/metrics: not Prometheus text format: ",
        ),
        (unread(200, b"x 1\n\xff\n"), "bad_response", "http://e/metrics: the body"),
    ],
)
async def test_scrape_failures_name_the_url(
    response: httpx.Response, error_class: str, detail: str
) -> None:
    async with mock_client(httpx.MockTransport(lambda _: response)) as client:
        with pytest.raises(Failure) as raised:
            await scrape(client, "http://e/metrics", {}, 5.0, 1 << 20)
    assert raised.value.error_class == error_class
    assert raised.value.detail.startswith(detail)


async def test_scrape_lets_transport_errors_through() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with mock_client(httpx.MockTransport(refuse)) as client:
        with pytest.raises(httpx.ConnectError):
            await scrape(client, "http://e/metrics", {}, 5.0, 1 << 20)


@dataclass
class MetricsServer:
    """Serves path -> (status, body) on 127.0.0.1; a body of None never answers."""

    routes: dict[str, tuple[int, bytes | None]]
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    handlers: list[asyncio.Task[None]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            status, body = self.routes.get(path, (404, b"Not Found"))
            if body is None:
                await self.release.wait()  # hold the request until the test is done
                return
            reason = {200: "OK", 404: "Not Found"}[status]
            # No Content-Length: the cap must hold while the body streams in. The start header
            # is what llama-server sends with /metrics.
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nProcess-Start-Time-Unix: 2043393524\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass  # the client stopped reading at the cap: that is its right
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@pytest.fixture
async def metrics_server() -> AsyncIterator[MetricsServer]:
    server = MetricsServer(
        routes={
            "/metrics": (200, fixture("llamacpp.txt").encode()),
            "/huge": (200, b"# HELP padding\n" * 10_000),
            "/hang": (200, None),
        }
    )
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    async with listener:
        yield server
        server.release.set()
        await asyncio.gather(*server.handlers)


async def test_scrape_over_a_socket(metrics_server: MetricsServer) -> None:
    async with httpx.AsyncClient() as client:
        load = await scrape(client, metrics_server.url + "/metrics", {}, 5.0, 1 << 20)
    assert load == replace(parse(fixture("llamacpp.txt")), start_marker="2043393524")


async def test_scrape_404_over_a_socket(metrics_server: MetricsServer) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(Failure) as raised:
            await scrape(client, metrics_server.url + "/nope", {}, 5.0, 1 << 20)
    assert (raised.value.error_class, raised.value.status_code) == ("http_status", 404)
    assert raised.value.detail == f"{metrics_server.url}/nope: HTTP 404 Not Found: Not Found"


async def test_scrape_over_the_cap(metrics_server: MetricsServer) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(Failure) as raised:
            await scrape(client, metrics_server.url + "/huge", {}, 5.0, 64_000)
    assert raised.value.error_class == "too_large"
    assert raised.value.detail == f"{metrics_server.url}/huge: body is over the 64000-byte cap"


async def test_scrape_deadline(metrics_server: MetricsServer) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises((TimeoutError, httpx.TimeoutException)):
            await scrape(client, metrics_server.url + "/hang", {}, 0.2, 1 << 20)


@pytest.mark.real
async def test_real_llama_server(llama_server: LlamaServer) -> None:
    async with httpx.AsyncClient() as client:
        chat = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
        reply = await client.post(llama_server.url + "/v1/chat/completions", json=chat, timeout=60)
        assert reply.status_code == 200
        first = await scrape(client, llama_server.url + "/metrics", {}, 10.0, 1 << 20)
        second = await scrape(client, llama_server.url + "/metrics", {}, 10.0, 1 << 20)
    assert set(first.values) >= {"requests_running", "requests_waiting"}
    assert first.totals["llamacpp:tokens_predicted_total"] > 0
    assert first.start_marker is not None and first.start_marker == second.start_marker
    assert second.restarted_since(first) is None


def test_vllm_v1_generation_speed_is_the_rate_of_its_counter() -> None:
    """vLLM V1 dropped V0's `vllm:avg_generation_throughput_toks_per_s`: the speed is the growth
    of `vllm:generation_tokens_total` (both engines) between two reads, per second."""
    first = parse(fixture("vllm.txt"))
    assert "generation_tokens_per_second" not in first.values
    grown = {
        key: value + (30 if key.startswith("vllm:generation_tokens_total{") else 0)
        for key, value in first.totals.items()
    }
    second = replace(first, totals=grown)
    load = server_metrics.with_rates(second, first, 4.0)
    assert load.values["generation_tokens_per_second"] == (30 + 30) / 4.0
    assert load.sources["generation_tokens_per_second"] == "rate of vllm:generation_tokens_total"
    assert load.values.items() > second.values.items()  # the gauges stay as read
    assert server_metrics.with_rates(first, None, 4.0) == first  # one read is no rate
    assert "generation_tokens_per_second" not in server_metrics.with_rates(first, second, 4).values
    assert server_metrics.with_rates(second, first, 0.0) == second  # no time, no rate


def test_an_engine_that_reports_its_speed_keeps_it() -> None:
    old = parse(fixture("llamacpp.txt"))
    later = replace(old, totals={k: v + 100 for k, v in old.totals.items()})
    assert server_metrics.with_rates(later, old, 1.0).values == later.values


def test_triton_counters_become_rates_and_means_of_the_endpoints_model() -> None:
    # Triton's only gauge, its pending count, stayed 0 while a model hung: the counters between
    # two reads say how many requests it finished and how long they took.
    first = parse(fixture("triton.txt"))
    ensemble, post = '{model="ensemble",version="1"}', '{model="postprocessing",version="1"}'
    later = dict(first.totals)
    later["nv_inference_request_success" + ensemble] += 5
    later["nv_inference_request_failure" + ensemble] += 1
    later["nv_inference_queue_duration_us" + ensemble] += 2_500_000
    later["nv_inference_request_success" + post] += 1000  # a step of the ensemble, per token
    second = replace(first, totals=later)
    load = server_metrics.with_rates(second, first, 10.0, "ensemble")
    assert load.values["request_successes_per_second"] == 0.5
    assert load.values["request_failures_per_second"] == 0.1
    assert load.values["mean_queue_seconds"] == 0.5  # 2.5 s over 5 requests that succeeded
    assert load.sources["mean_queue_seconds"] == (
        "nv_inference_queue_duration_us per nv_inference_request_success"
    )
    # No such counters in the fixture, and no request finished: no mean rather than 0.
    assert "mean_compute_infer_seconds" not in load.values
    idle = server_metrics.with_rates(first, first, 10.0, "ensemble")
    assert idle.values["request_successes_per_second"] == 0.0
    assert "mean_queue_seconds" not in idle.values
    # A restart (the counters went down) gives neither.
    restarted = server_metrics.with_rates(first, second, 10.0, "ensemble")
    assert restarted.values == first.values


def test_recorded_triton_counters() -> None:
    # Recorded from tritonserver 2.51 (PyTriton 0.7) serving a decoupled model, two reads apart.
    before, after = parse(fixture("triton-pytriton.txt")), parse(fixture("triton-pytriton-2.txt"))
    load = server_metrics.with_rates(after, before, 2.0, "smollm2")
    assert load.values["request_successes_per_second"] == 0.5
    assert load.values["request_failures_per_second"] == 0.0
    assert load.values["mean_queue_seconds"] == pytest.approx(30e-6)
    assert load.values["mean_compute_input_seconds"] == pytest.approx(50e-6)
    assert load.values["mean_compute_output_seconds"] == pytest.approx(2e-6)
    # 1.4 ms for an answer streamed over 0.6 s: a decoupled model's execute() returns once it
    # has taken the request, and Triton times that, not the responses.
    assert load.values["mean_compute_infer_seconds"] == pytest.approx(1270e-6)
    assert load.values["mean_request_seconds"] == pytest.approx(1360e-6)
    assert not server_metrics.with_rates(after, before, 2.0, "other-model").values.keys() & {
        "request_successes_per_second",
        "mean_queue_seconds",
    }

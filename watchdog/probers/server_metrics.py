"""An inference engine's own Prometheus /metrics, read into the few values operators compare."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from watchdog.probers.engine_names import ENGINES, Mean, Rate, engine_of
from watchdog.probers.exchange import ACCEPT_ENCODING, Failure, get_text
from watchdog.result import START_MARKER_HEADER, ServerLoad, TtftHistogram

# Series of one gauge (per model_name, engine index, Triton model) are summed: queues and batches
# add up. A usage ratio does not: two engines at 0.5 are not one full cache, and the fullest one
# is where requests wait, so it takes the largest.
LARGEST_ACROSS_SERIES: Final = frozenset({"kv_cache_usage_ratio"})

START_TIME_NAME: Final = "process_start_time_seconds"

MetricType = Literal["gauge", "histogram"]
# What the collector re-exports as mlops_watchdog_server_<name>{endpoint}.
EXPORTED: Final[tuple[tuple[str, MetricType, str], ...]] = (
    (
        "requests_waiting",
        "gauge",
        "Requests queued in the inference engine, from its own /metrics.",
    ),
    (
        "requests_running",
        "gauge",
        "Requests the inference engine is processing, from its own /metrics.",
    ),
    (
        "kv_cache_usage_ratio",
        "gauge",
        "KV-cache usage of the inference engine, 0 to 1 (the fullest engine if several).",
    ),
    (
        "generation_tokens_per_second",
        "gauge",
        "Generation throughput the inference engine reports, in tokens per second.",
    ),
    (
        "ttft_seconds",
        "histogram",
        "Time to first token as the inference engine measures it, cumulative since it started.",
    ),
    (
        "mean_inter_token_latency_seconds",
        "gauge",
        "Mean time between two outputs of a request as the inference engine measures it, over "
        "those it made between its last two reads (one step may give several tokens).",
    ),
    (
        "start_time_seconds",
        "gauge",
        "When the inference engine's process started, in Unix seconds.",
    ),
    (
        "request_successes_per_second",
        "gauge",
        "Requests the inference engine finished per second between its last two reads (Triton: "
        "a streaming model's once it has taken them).",
    ),
    (
        "request_failures_per_second",
        "gauge",
        "Requests the inference engine failed per second between its last two reads.",
    ),
    (
        "mean_queue_seconds",
        "gauge",
        "Mean time a request waited in the engine's queue, over those it finished between its "
        "last two reads.",
    ),
    (
        "mean_compute_input_seconds",
        "gauge",
        "Mean time the engine took to take in a request's inputs, over those it finished "
        "between its last two reads.",
    ),
    (
        "mean_compute_infer_seconds",
        "gauge",
        "Mean time the engine's model computed for a request, over those it finished between "
        "its last two reads (Triton: a streaming model's until it has taken the request).",
    ),
    (
        "mean_compute_output_seconds",
        "gauge",
        "Mean time the engine took to hand out a request's outputs, over those it finished "
        "between its last two reads.",
    ),
    (
        "mean_request_seconds",
        "gauge",
        "Mean time the engine spent on a request in all, over those it finished between its "
        "last two reads (Triton: a streaming model's until it has taken the request).",
    ),
)

SCRAPE_HEADERS: Final = {
    # The classic text format: prometheus_client's parser does not read OpenMetrics.
    "Accept": "text/plain;version=0.0.4;q=1.0, */*;q=0.1",
    "Accept-Encoding": ACCEPT_ENCODING,  # what body_chunks can inflate under the cap
}


@dataclass(frozen=True)
class _Sample:
    labels: Mapping[str, str]
    value: float


def parse(text: str) -> ServerLoad:
    """Map Prometheus text to a ServerLoad through the names of the one engine it comes from
    (engine_names.ENGINES); ValueError if it is not the text format."""
    scalars, histograms = _index(text)
    present = scalars.keys() | histograms.keys()
    present |= {name + suffix for name in histograms for suffix in ("_sum", "_count")}
    engine = engine_of(present)
    starts = [s.value for s in scalars.get(START_TIME_NAME, ()) if math.isfinite(s.value)]
    started_at = max(starts) if starts else None
    if engine is None:
        return ServerLoad({}, None, started_at)
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for name, candidates in engine.names.items():
        for metric in candidates:
            if not isinstance(metric, str):
                continue  # a rate or a mean: with_rates, from two reads
            found = [s.value for s in scalars.get(metric, ()) if math.isfinite(s.value)]
            if found:
                values[name] = max(found) if name in LARGEST_ACROSS_SERIES else math.fsum(found)
                sources[name] = metric
                break
    ttft = None
    if engine.ttft in histograms:
        ttft = _histogram(engine.ttft, histograms[engine.ttft])
        sources["ttft_seconds"] = engine.ttft
    totals = {
        _series(metric, s.labels): s.value
        for metric in engine.cumulative()
        for s in _cumulative(metric, scalars, histograms)
        if math.isfinite(s.value)
    }
    return ServerLoad(values, ttft, started_at, totals, sources)


async def scrape(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], timeout_s: float, cap: int
) -> ServerLoad:
    """GET and parse an engine's /metrics under a deadline and a body cap. A refusal or a body
    that is not Prometheus text raises Failure naming the URL; transport errors propagate."""
    ours = {name.lower() for name in SCRAPE_HEADERS}
    sent = {k: v for k, v in headers.items() if k.lower() not in ours} | SCRAPE_HEADERS
    try:
        text, got = await get_text(client, url, sent, timeout_s, cap)
    except Failure as exc:
        raise Failure(exc.error_class, f"{url}: {exc.detail}", exc.status_code) from None
    try:
        load = parse(text)
    except ValueError as exc:
        raise Failure("bad_response", f"{url}: {exc}", 200) from None
    return dataclasses.replace(load, start_marker=got.get(START_MARKER_HEADER))


def with_rates(
    load: ServerLoad, previous: ServerLoad | None, elapsed_s: float, model: str | None = None
) -> ServerLoad:
    """`load` with the rates and means it lacks, from how far their counters grew since
    `previous`, read `elapsed_s` seconds before. None at a first read, nor after a restart (a
    counter went down), nor a mean when its count did not grow. Where the series carry a `model`
    label (Triton), only `model`'s count: a TensorRT-LLM ensemble's steps are models of their
    own, each counting every request."""
    if previous is None or elapsed_s <= 0:
        return load
    values, sources = dict(load.values), dict(load.sources)
    # parse kept only one engine's counters in `totals`: the others' sources find nothing.
    for engine in ENGINES.values():
        for name, candidates in engine.names.items():
            for source in candidates:
                if name in values:
                    break
                if isinstance(source, Rate):
                    grown = _growth(load, previous, source.counter, model)
                    if grown is not None:
                        values[name], sources[name] = grown / elapsed_s, str(source)
                elif isinstance(source, Mean):
                    spent = _growth(load, previous, source.total, model)
                    done = _growth(load, previous, source.count, model)
                    if spent is None or done is None:
                        continue
                    if done:  # nothing finished: no mean, rather than 0
                        values[name] = spent / done * source.scale
                        sources[name] = str(source)
                    break
    return dataclasses.replace(load, values=values, sources=sources)


def _growth(
    load: ServerLoad, previous: ServerLoad, counter: str, model: str | None
) -> float | None:
    """How far a counter grew over its series (`model`'s, where they name models) since
    `previous`; None when it is not there both times or went down (a restart)."""
    series = [
        key
        for key in load.totals.keys() & previous.totals.keys()
        if key == counter or key.startswith(counter + "{")
    ]
    if model is not None and any(_label(key, "model") is not None for key in series):
        series = [key for key in series if _label(key, "model") == model]
    grown = [load.totals[key] - previous.totals[key] for key in series]
    return math.fsum(grown) if series and min(grown) >= 0 else None


def _label(series: str, name: str) -> str | None:
    """A label's value in a `_series` key, or None."""
    match = re.search(r"[{,]" + re.escape(name) + r'="((?:[^"\\]|\\.)*)"', series)
    return match.group(1) if match else None


def _index(text: str) -> tuple[dict[str, list[_Sample]], dict[str, list[tuple[str, _Sample]]]]:
    """Scalar series by metric name, and histogram samples (with their sample names) by family.

    prometheus_client names a counter family without `_total` (and renames a bare counter's
    samples to `_total`), so counters are filed under both spellings."""
    scalars: dict[str, list[_Sample]] = {}
    histograms: dict[str, list[tuple[str, _Sample]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for raw in family.samples:
                sample = _Sample(dict(raw.labels), float(raw.value))
                if family.type == "histogram":
                    histograms.setdefault(family.name, []).append((raw.name, sample))
                elif family.type == "counter" and raw.name == family.name + "_total":
                    scalars.setdefault(family.name, []).append(sample)
                    scalars.setdefault(raw.name, []).append(sample)
                elif family.type in ("gauge", "unknown", "untyped") and raw.name == family.name:
                    scalars.setdefault(raw.name, []).append(sample)
    except ValueError as exc:
        raise ValueError(f"not Prometheus text format: {_short(exc)}") from None
    return scalars, histograms


def _cumulative(
    metric: str,
    scalars: Mapping[str, list[_Sample]],
    histograms: Mapping[str, list[tuple[str, _Sample]]],
) -> list[_Sample]:
    """A counter's series, or those of a histogram's `_sum` or `_count`."""
    if metric in scalars:
        return scalars[metric]
    family = metric.removesuffix("_sum").removesuffix("_count")
    return [sample for name, sample in histograms.get(family, ()) if name == metric]


def _histogram(family: str, samples: Iterable[tuple[str, _Sample]]) -> TtftHistogram:
    # Label sets (model_name, engine index) are summed bound by bound; an engine that gives
    # its label sets different bounds would make the sum non-cumulative, and none does.
    buckets: dict[float, float] = {}
    total = count = 0.0
    for name, sample in samples:
        if name == family + "_bucket":
            try:
                bound = float(sample.labels["le"])
            except (KeyError, ValueError):
                raise ValueError(
                    f"not Prometheus text format: {family} bucket without a numeric le"
                ) from None
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
        elif name == family + "_sum":
            total += sample.value
        elif name == family + "_count":
            count += sample.value
    return TtftHistogram(tuple(sorted(buckets.items())), total, count)


def _series(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    inner = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    return f"{name}{{{inner}}}"


def _short(exc: ValueError) -> str:
    text = str(exc) or "a malformed line"
    return text if len(text) <= 120 else text[:119] + "…"

"""One table: each inference engine's own metric names under ours (`mlops_watchdog_server_*`)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True)
class Rate:
    """A counter's growth per second between two reads."""

    counter: str

    def __str__(self) -> str:
        return f"rate of {self.counter}"


@dataclass(frozen=True)
class Mean:
    """How far `total` grew per unit of `count` between two reads, times `scale`: the mean of
    what the engine did in between, per request or per token."""

    total: str
    count: str
    scale: float = 1.0

    def __str__(self) -> str:
        return f"{self.total} per {self.count}"


def per_observation(histogram: str) -> Mean:
    """A histogram's mean observation between two reads: its `_sum`'s growth per `_count`'s."""
    return Mean(histogram + "_sum", histogram + "_count")


def per_success(microseconds: str) -> Mean:
    """A Triton duration counter's mean per request that succeeded, in seconds."""
    return Mean(microseconds, "nv_inference_request_success", 1e-6)


# A gauge read as it is, or what two reads of counters give.
Source = str | Rate | Mean


@dataclass(frozen=True)
class Engine:
    """One engine's metric family. For each of our names, the engine's sources in order: the
    first one present gives the value, so a rename costs one more entry and no code. Gauges are
    read at once; rates and means need the read before."""

    title: str
    names: Mapping[str, tuple[Source, ...]]
    ttft: str | None = None  # its histogram of time to first token, in seconds
    # Cumulative counters that only a restart (or an unloaded model) sends down, besides those
    # the rates and means read. Counters without `_total` (TGI, Triton) match as written.
    counters: tuple[str, ...] = ()

    def cumulative(self) -> tuple[str, ...]:
        """Every counter (or histogram `_sum` and `_count`) whose series a read keeps."""
        found = dict.fromkeys(self.counters)
        for sources in self.names.values():
            for source in sources:
                if isinstance(source, Rate):
                    found[source.counter] = None
                elif isinstance(source, Mean):
                    found[source.total] = found[source.count] = None
        return tuple(found)

    def metric_names(self) -> Iterator[str]:
        """Every name of the engine's this table reads: what tells its family in a body."""
        for sources in self.names.values():
            yield from (s for s in sources if isinstance(s, str))
        yield from self.cumulative()
        if self.ttft:
            yield self.ttft


# The engines in the order a body is matched: the first whose names it has is the one read, and
# only through its own names. NIM's names carry no prefix, so it comes last: a prefixed family is
# never read as NIM's.
ENGINES: Final[Mapping[str, Engine]] = MappingProxyType(
    {
        "vllm": Engine(
            "vLLM",
            {
                "requests_waiting": ("vllm:num_requests_waiting",),
                "requests_running": ("vllm:num_requests_running",),
                "kv_cache_usage_ratio": (
                    "vllm:kv_cache_usage_perc",  # a 0-1 fraction despite "perc"
                    "vllm:gpu_cache_usage_perc",  # its name before 0.9; served until 0.10
                ),
                "generation_tokens_per_second": (
                    "vllm:avg_generation_throughput_toks_per_s",  # the V0 engine only
                    Rate("vllm:generation_tokens_total"),  # V1 dropped V0's gauge
                ),
                "mean_inter_token_latency_seconds": (
                    per_observation("vllm:inter_token_latency_seconds"),  # since 0.11
                    # Its name before 0.11; hidden in 0.12, then removed.
                    per_observation("vllm:time_per_output_token_seconds"),
                ),
            },
            ttft="vllm:time_to_first_token_seconds",
            counters=("vllm:prompt_tokens_total", "vllm:generation_tokens_total"),
        ),
        "sglang": Engine(
            "SGLang",
            {
                "requests_waiting": ("sglang:num_queue_reqs",),
                "requests_running": ("sglang:num_running_reqs",),
                "kv_cache_usage_ratio": ("sglang:token_usage",),
                "generation_tokens_per_second": ("sglang:gen_throughput",),
                "mean_inter_token_latency_seconds": (
                    per_observation("sglang:inter_token_latency_seconds"),
                ),
            },
            ttft="sglang:time_to_first_token_seconds",
            counters=("sglang:prompt_tokens_total", "sglang:generation_tokens_total"),
        ),
        "llamacpp": Engine(
            "llama.cpp",
            {
                "requests_waiting": ("llamacpp:requests_deferred",),
                "requests_running": ("llamacpp:requests_processing",),
                "kv_cache_usage_ratio": ("llamacpp:kv_cache_usage_ratio",),  # older builds only
                # Averaged over the window since the previous /metrics read, and each read starts
                # a new window: another scraper of the same server shortens ours.
                "generation_tokens_per_second": ("llamacpp:predicted_tokens_seconds",),
            },
            counters=(
                "llamacpp:prompt_tokens_total",
                "llamacpp:tokens_predicted_total",
                "llamacpp:n_decode_total",
            ),
        ),
        "tgi": Engine(
            "TGI",
            {
                "requests_waiting": ("tgi_queue_size",),
                "requests_running": ("tgi_batch_current_size",),
            },
            counters=("tgi_request_count",),
        ),
        # Series per model and version. Its pending-request gauge stays 0 while a model hangs:
        # answers per second falling to 0 show it. Triton adds a request's durations when it
        # succeeds; a decoupled model's (a stream) end when its execute() hands the request
        # over, before most of the responses: its compute is not the stream's length.
        "triton": Engine(
            "Triton",
            {
                "requests_waiting": ("nv_inference_pending_request_count",),
                "request_successes_per_second": (Rate("nv_inference_request_success"),),
                # One series per reason.
                "request_failures_per_second": (Rate("nv_inference_request_failure"),),
                "mean_queue_seconds": (per_success("nv_inference_queue_duration_us"),),
                "mean_compute_input_seconds": (
                    per_success("nv_inference_compute_input_duration_us"),
                ),
                "mean_compute_infer_seconds": (
                    per_success("nv_inference_compute_infer_duration_us"),
                ),
                "mean_compute_output_seconds": (
                    per_success("nv_inference_compute_output_duration_us"),
                ),
                "mean_request_seconds": (per_success("nv_inference_request_duration_us"),),
            },
        ),
        # NVIDIA NIM for LLMs: vLLM's family without the prefix, at /v1/metrics. Its docs name
        # the former vLLM names; the current ones come first for a NIM that follows vLLM.
        "nim": Engine(
            "NVIDIA NIM",
            {
                "requests_waiting": ("num_requests_waiting",),
                "requests_running": ("num_requests_running",),
                "kv_cache_usage_ratio": ("kv_cache_usage_perc", "gpu_cache_usage_perc"),
                "generation_tokens_per_second": (Rate("generation_tokens_total"),),
                "mean_inter_token_latency_seconds": (
                    per_observation("inter_token_latency_seconds"),
                    per_observation("time_per_output_token_seconds"),
                ),
                "request_successes_per_second": (Rate("request_success_total"),),
                "request_failures_per_second": (Rate("request_failure_total"),),
            },
            ttft="time_to_first_token_seconds",
            counters=("prompt_tokens_total",),
        ),
    }
)


def engine_of(present: set[str]) -> Engine | None:
    """The engine whose names a body has (`present`: its metric, counter and histogram names),
    the first in ENGINES' order; None for a body of no engine this table knows."""
    return next((e for e in ENGINES.values() if any(n in present for n in e.metric_names())), None)

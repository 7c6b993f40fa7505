"""The LLM endpoints dashboard: health, latency, quality, fingerprints, GPU cost, the watchdog, drift."""

from __future__ import annotations

from typing import Any

from watchdog.dashboards.panels import (
    Panel,
    annotation,
    base_variables,
    dashboard,
    graph,
    listing,
    over_interval,
    quantile,
    query_variable,
    selector,
    single,
    timeline,
)

UID = "mlops-watchdog-endpoints"
FILENAME = f"{UID}.json"
OK_STATES = {0: ("failing", "red"), 1: ("ok", "green")}
# mlops_watchdog_endpoint_state: what /targets/<endpoint>/ready tells routers.
SERVING_STATES = {0: ("ok", "green"), 1: ("degraded", "orange"), 2: ("down", "red")}


def ep(metric: str) -> str:
    """A selector for a series labelled by endpoint."""
    return selector(metric, "endpoint")


def latency(title: str, histogram: str, slo: str = "", description: str = "") -> Panel:
    queries = [
        (quantile(0.5, histogram, "endpoint", by="node, endpoint"), "{{node}}/{{endpoint}} p50"),
        (quantile(0.95, histogram, "endpoint", by="node, endpoint"), "{{node}}/{{endpoint}} p95"),
    ]
    if slo:
        queries.append((f"max by (node, endpoint) ({ep(slo)})", "{{node}}/{{endpoint}} SLO"))
    dashed = ["C"] if slo else []
    return graph(title, "s", *queries, dashed=dashed, description=description)


def health() -> list[Panel]:
    return [
        timeline(
            "Serving, as routers see it",
            "none",
            (
                f"max by (node, endpoint) ({ep('mlops_watchdog_endpoint_state')})",
                "{{node}}/{{endpoint}}",
            ),
            states=SERVING_STATES,
            span=24,
            height=5,
            description=(
                "From the firing alerts, as GET /targets/<endpoint>/ready answers routers: down "
                "(503) while no good answers come, degraded while they are wrong, slow, drifted "
                "or off the GPU, ok otherwise."
            ),
        ),
        timeline(
            "Probe success",
            "bool",
            (
                f"min by (node, endpoint) ({ep('mlops_watchdog_probe_success')})",
                "{{node}}/{{endpoint}}",
            ),
            states=OK_STATES,
            span=12,
            description="Failing when any prompt of the endpoint failed its last probe.",
        ),
        single(
            "Alerts firing",
            "none",
            (
                f"sum by (node, endpoint) ({ep('mlops_watchdog_alerts_firing')})",
                "{{node}}/{{endpoint}}",
            ),
            span=4,
            steps=[(None, "green"), (1, "red")],
            description="Alert kinds firing per endpoint; the Slack page says which.",
        ),
        graph(
            "Probe results",
            "reqps",
            (
                "sum by (node, endpoint, result) "
                f"({over_interval('rate', ep('mlops_watchdog_probes_total'))})",
                "{{node}}/{{endpoint}} {{result}}",
            ),
            span=8,
            description="Probes per second by result: ok, check_failed or error.",
        ),
    ]


def serving() -> list[Panel]:
    return [
        timeline(
            "Liveness, readiness, completion",
            "bool",
            (
                f"min by (node, endpoint, tier) ({ep('mlops_watchdog_tier_success')})",
                "{{node}}/{{endpoint}} {{tier}}",
            ),
            states=OK_STATES,
            span=12,
            description=(
                "Health route, models route, and a real golden answer. Liveness ok with completion "
                "failing is a hung engine behind a live HTTP server."
            ),
        ),
        graph(
            "Engine queue",
            "none",
            (
                f"sum by (node, endpoint) ({ep('mlops_watchdog_server_requests_waiting')})",
                "{{node}}/{{endpoint}} waiting",
            ),
            (
                f"sum by (node, endpoint) ({ep('mlops_watchdog_server_requests_running')})",
                "{{node}}/{{endpoint}} running",
            ),
            description=(
                "Requests queued and running in the engine, from its own /metrics at each probe: "
                "a slow probe with a long queue is busy, not regressed."
            ),
        ),
        graph(
            "Engine throughput",
            "suffix: tok/s",
            (ep("mlops_watchdog_server_generation_tokens_per_second"), "{{node}}/{{endpoint}}"),
            description=(
                "Generation speed the engine reports (llama.cpp, SGLang, vLLM V0), or its token "
                "counter's growth between two reads (vLLM V1, NIM)."
            ),
        ),
        graph(
            "Health check duration",
            "s",
            (ep("mlops_watchdog_tier_duration_seconds"), "{{node}}/{{endpoint}} {{tier}}"),
            description="How long the health and models routes and the first answer took, last run.",
        ),
        timeline(
            "Engine metrics read",
            "bool",
            (ep("mlops_watchdog_server_metrics_up"), "{{node}}/{{endpoint}}"),
            states=OK_STATES,
            description="Failing when the engine's /metrics could not be read (set server_metrics: false if it has none).",
        ),
    ]


def engine() -> list[Panel]:
    """What only some engines say about themselves (vLLM, SGLang, NIM, Triton): empty for
    llama.cpp."""
    return [
        graph(
            "Engine KV-cache usage",
            "percentunit",
            (ep("mlops_watchdog_server_kv_cache_usage_ratio"), "{{node}}/{{endpoint}}"),
            ratio=True,
            description="Near 1, new requests wait or get preempted: slow because full.",
        ),
        latency(
            "Engine time to first token",
            "mlops_watchdog_server_ttft_seconds",
            description="The engine's own TTFT histogram over all its traffic, next to the probes'.",
        ),
        graph(
            "Engine inter-token latency",
            "s",
            (ep("mlops_watchdog_server_mean_inter_token_latency_seconds"), "{{node}}/{{endpoint}}"),
            span=6,
            description=(
                "Mean time between two outputs of a request as the engine measured it (vLLM, "
                "SGLang, NIM), over those it made between two reads: all its traffic, not only "
                "the probes'."
            ),
        ),
        single(
            "Engine uptime",
            "s",
            (f"time() - {ep('mlops_watchdog_server_start_time_seconds')}", "{{node}}/{{endpoint}}"),
            description="Since the engine's process started; a restart resets it.",
        ),
        graph(
            "Engine requests",
            "reqps",
            (ep("mlops_watchdog_server_request_successes_per_second"), "{{node}}/{{endpoint}} ok"),
            (
                ep("mlops_watchdog_server_request_failures_per_second"),
                "{{node}}/{{endpoint}} failed",
            ),
            description=(
                "Requests the engine finished and failed per second between two reads of its "
                "counters (Triton, NIM). A streaming Triton model counts a request once it has "
                "taken it: only the probes' answers show it hung."
            ),
        ),
        graph(
            "Engine time per request",
            "s",
            (ep("mlops_watchdog_server_mean_queue_seconds"), "{{node}}/{{endpoint}} queue"),
            (
                ep("mlops_watchdog_server_mean_compute_input_seconds"),
                "{{node}}/{{endpoint}} input",
            ),
            (
                ep("mlops_watchdog_server_mean_compute_infer_seconds"),
                "{{node}}/{{endpoint}} compute",
            ),
            (
                ep("mlops_watchdog_server_mean_compute_output_seconds"),
                "{{node}}/{{endpoint}} output",
            ),
            (ep("mlops_watchdog_server_mean_request_seconds"), "{{node}}/{{endpoint}} in all"),
            description=(
                "Triton's mean queue and compute times of the requests it finished between two "
                "reads. A long queue with a short compute: busy, not slow."
            ),
        ),
    ]


def latencies() -> list[Panel]:
    return [
        latency(
            "Time to first token",
            "mlops_watchdog_probe_ttft_seconds",
            "mlops_watchdog_slo_ttft_seconds",
            "Answered probes only; the dashed line is the endpoint's configured objective.",
        ),
        latency(
            "End-to-end latency",
            "mlops_watchdog_probe_e2e_seconds",
            "mlops_watchdog_slo_e2e_seconds",
            "Answered probes only; the dashed line is the endpoint's configured objective.",
        ),
        latency(
            "Inter-token latency",
            "mlops_watchdog_probe_itl_seconds",
            description="Gaps between streamed content chunks.",
        ),
        latency(
            "Time to response headers",
            "mlops_watchdog_probe_ttfb_seconds",
            description="Queueing and prompt work before the server answers at all.",
        ),
    ]


def quality() -> list[Panel]:
    return [
        graph(
            "Format accuracy",
            "percentunit",
            (ep("mlops_watchdog_format_accuracy_ratio"), "{{node}}/{{endpoint}} {{golden_set}}"),
            ratio=True,
            description="Share of answered prompts whose checks all passed, per golden set.",
        ),
        graph(
            "Check pass ratio per prompt",
            "percentunit",
            (ep("mlops_watchdog_check_pass_ratio"), "{{node}}/{{endpoint}} {{prompt_id}}"),
            ratio=True,
        ),
        graph(
            "Probe errors by class",
            "reqps",
            (
                "sum by (node, endpoint, class) "
                f"({over_interval('rate', ep('mlops_watchdog_probe_errors_total'))})",
                "{{node}}/{{endpoint}} {{class}}",
            ),
        ),
        graph(
            "Canary leaks",
            "none",
            (
                f"sum by (node, endpoint) ({over_interval('increase', ep('mlops_watchdog_canary_leaks_total'))})",
                "{{node}}/{{endpoint}}",
            ),
            description="Answers that gave away the system prompt's canary (golden_sets/injection.yaml).",
        ),
        graph(
            "Output tokens per second",
            "suffix: tok/s",
            (
                ep("mlops_watchdog_probe_output_tokens_per_second"),
                "{{node}}/{{endpoint}} {{prompt_id}}",
            ),
            description="Decode speed of the last answer to each prompt.",
        ),
    ]


def fingerprints() -> list[Panel]:
    return [
        listing(
            "What answers",
            "none",
            (ep("mlops_watchdog_fingerprint_info"), ""),
            columns={
                "node": "Node",
                "endpoint": "Endpoint",
                "model": "Model",
                "fingerprint": "Fingerprint",
                "instance": "Watchdog",
            },
            height=6,
            description="The current fingerprint of each endpoint; changes are marked on every graph.",
        )
    ]


def watchdog_itself() -> list[Panel]:
    plain = selector  # the watchdog's own series carry no endpoint label
    return [
        single(
            "Database size",
            "bytes",
            (plain("mlops_watchdog_database_size_bytes"), "{{node}} ({{instance}})"),
            span=8,
            description="SQLite with its WAL; retention keeps it bounded (retention.max_db_bytes warns).",
        ),
        single(
            "Last cycle age",
            "s",
            (
                f"time() - {plain('mlops_watchdog_last_cycle_timestamp_seconds')}",
                "{{node}} ({{instance}})",
            ),
            span=8,
            steps=[(None, "green"), (300, "orange"), (900, "red")],
            description="Time since a probe run last finished; compare with the shortest `every`.",
        ),
        graph(
            "Scheduler lateness p95",
            "s",
            (
                quantile(0.95, "mlops_watchdog_scheduler_lateness_seconds", by="node, instance"),
                "{{node}} ({{instance}})",
            ),
            span=8,
        ),
        graph(
            "Missed runs",
            "ops",
            (
                over_interval("rate", ep("mlops_watchdog_scheduler_missed_runs_total")),
                "{{node}}/{{endpoint}} ({{instance}})",
            ),
            span=8,
            description="Runs skipped: misfired, or the previous run still going.",
        ),
        graph(
            "Storage write time p95",
            "s",
            (
                quantile(0.95, "mlops_watchdog_storage_write_seconds", by="node, instance"),
                "{{node}} ({{instance}})",
            ),
            span=8,
        ),
        graph(
            "Database writes failing",
            "short",
            (plain("mlops_watchdog_storage_waiting_runs"), "{{node}} ({{instance}}) waiting runs"),
            (
                over_interval("increase", plain("mlops_watchdog_storage_write_errors_total")),
                "{{node}} ({{instance}}) failed writes",
            ),
            (
                over_interval("increase", plain("mlops_watchdog_storage_dropped_runs_total")),
                "{{node}} ({{instance}}) dropped runs",
            ),
            span=8,
            description="A full disk: runs wait in memory until the database takes writes "
            "again, and the oldest are dropped once the spool is full; pages go on.",
        ),
        graph(
            "Outbox pending",
            "short",
            (plain("mlops_watchdog_outbox_pending"), "{{node}} ({{instance}})"),
            span=8,
            description="Pages queued and not yet delivered.",
        ),
        graph(
            "Notifications by result",
            "ops",
            (
                "sum by (node, instance, result) "
                f"({over_interval('rate', plain('mlops_watchdog_notifications_total'))})",
                "{{node}} ({{instance}}) {{result}}",
            ),
            span=8,
        ),
    ]


def gpu() -> list[Panel]:
    """What the endpoint's GPUs spend on its answers; empty where the watchdog has no NVML."""
    return [
        graph(
            "Energy per token",
            "joule",
            (ep("mlops_watchdog_probe_energy_per_token_joules"), "{{node}}/{{endpoint}}"),
            span=8,
            description="Energy of the endpoint's GPUs over its last probe run, per output token.",
        ),
        graph(
            "Cost per 1k tokens",
            "suffix: /1k tok",
            (ep("mlops_watchdog_probe_cost_per_1k_tokens"), "{{node}}/{{endpoint}} {{currency}}"),
            span=8,
            description="The energy per token at gpu.price_per_kwh; empty without a price.",
        ),
        timeline(
            "GPU idle while serving",
            "bool",
            (
                f"max by (node, endpoint, gpu) ({ep('mlops_watchdog_gpu_idle_while_serving')})",
                "{{node}}/{{endpoint}} on {{gpu}}",
            ),
            states={0: ("working", "green"), 1: ("idle", "red")},
            span=8,
            description="Answers, yet the bound GPU does no work: likely a CPU fallback.",
        ),
    ]


def drift() -> list[Panel]:
    legend = "{{node}}/{{endpoint}} {{golden_set}} {{signal}}"
    return [
        graph("Drift status", "none", (ep("mlops_watchdog_drift_status"), legend)),
        graph("Drift score", "none", (ep("mlops_watchdog_drift_score"), legend)),
    ]


def render() -> dict[str, Any]:
    change = ep("mlops_watchdog_fingerprint_change_timestamp_seconds")
    board = dashboard(
        "mlops-watchdog: LLM endpoints",
        UID,
        "Golden-prompt probes of self-hosted LLM endpoints, and the watchdog that runs them.",
        [
            *base_variables(),
            query_variable(
                "endpoint",
                "Endpoint",
                'label_values(mlops_watchdog_probe_success{job=~"$job",node=~"$node",instance=~"$instance"}, endpoint)',
            ),
        ],
        [
            ("Health", health()),
            ("Serving", serving()),
            ("Engine", engine()),
            ("Latency", latencies()),
            ("Quality", quality()),
            ("Fingerprint", fingerprints()),
            ("GPU", gpu()),
            ("Watchdog", watchdog_itself()),
            ("Drift", drift()),
        ],
        [annotation("fingerprint changed", f"{over_interval('changes', change)} > 0", "purple")],
    )
    # The SDK's AnnotationQuery has no Prometheus fields; without titleFormat each mark would be
    # titled with the raw series.
    board["annotations"]["list"][0].update(
        {
            "titleFormat": "fingerprint changed",
            "textFormat": "{{node}}/{{endpoint}}",
            "tagKeys": "endpoint",
        }
    )
    return board

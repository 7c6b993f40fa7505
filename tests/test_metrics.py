"""Metrics from a fresh registry: names, zero series up front, histograms, promtool-clean text."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from watchdog.config.load import Config, load_config
from watchdog.endpoint import Endpoint
from watchdog.result import Answer, CheckOutcome, ProbeResult, ServerLoad
from watchdog.web.metrics import ProbeCollector, ProbeMetrics

ROOT = Path(__file__).resolve().parents[1]


def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
endpoints:
  - {{name: vllm, api: openai-chat, base_url: "http://h:1", slo: {{e2e_s: 5s}}}}
probes:
  - {{endpoint: vllm, golden_set: "{ROOT}/golden_sets/default.yaml"}}
"""
    )
    return load_config(path, env={})


def result(prompt_id: str, ok: bool = True, error: str | None = None) -> ProbeResult:
    answer = Answer(
        text="x",
        ttfb_s=0.01,
        ttft_s=0.04,
        e2e_s=0.3,
        itl_s=[0.008, 0.012],
        output_tokens=20,
        token_source="usage",
        model="m",
        error_class=error,
    )  # type: ignore[arg-type]
    checks = (
        [] if error else [CheckOutcome("contains", ok, ""), CheckOutcome("max_length", True, "")]
    )
    return ProbeResult(
        "vllm",
        prompt_id,
        "default",
        "h",
        datetime(2026, 1, 1, tzinfo=UTC),
        True,
        answer,
        checks,
        "fp1",
    )


def watched(cfg: Config) -> tuple[dict[str, Endpoint], dict[str, list[str]]]:
    """What ProbeMetrics takes of a config: the endpoints, and each one's prompt ids."""
    return cfg.endpoints, cfg.prompts()


def registry(metrics: ProbeMetrics) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(ProbeCollector(metrics))
    return r


def test_series_known_up_front_start_at_zero(tmp_path: Path) -> None:
    r = registry(ProbeMetrics(*watched(config(tmp_path))))
    assert (
        r.get_sample_value(
            "mlops_watchdog_probe_errors_total", {"endpoint": "vllm", "class": "timeout"}
        )
        == 0
    )
    assert (
        r.get_sample_value("mlops_watchdog_probes_total", {"endpoint": "vllm", "result": "ok"}) == 0
    )
    assert (
        r.get_sample_value(
            "mlops_watchdog_probe_e2e_seconds_count",
            {"endpoint": "vllm", "prompt_id": "arithmetic"},
        )
        == 0
    )
    assert r.get_sample_value("mlops_watchdog_slo_e2e_seconds", {"endpoint": "vllm"}) == 5
    assert (
        r.get_sample_value(
            "mlops_watchdog_build_info",
            {"version": "0.1.0", "python": __import__("platform").python_version()},
        )
        == 1
    )
    assert r.get_sample_value("mlops_watchdog_last_cycle_timestamp_seconds") is None  # no cycle yet


def test_a_run_moves_every_metric(tmp_path: Path) -> None:
    m = ProbeMetrics(*watched(config(tmp_path)))
    r = registry(m)
    m.observe_run(
        [result("capital-france"), result("arithmetic", ok=False), result("say", error="timeout")],
        1700000000.0,
    )
    labels = {"endpoint": "vllm", "prompt_id": "capital-france"}
    assert r.get_sample_value("mlops_watchdog_probe_success", labels) == 1
    assert (
        r.get_sample_value("mlops_watchdog_probe_success", {**labels, "prompt_id": "arithmetic"})
        == 0
    )
    assert (
        r.get_sample_value("mlops_watchdog_check_pass_ratio", {**labels, "prompt_id": "arithmetic"})
        == 0.5
    )
    assert (
        r.get_sample_value(
            "mlops_watchdog_format_accuracy_ratio", {"endpoint": "vllm", "golden_set": "default"}
        )
        == 0.5
    )
    assert (
        r.get_sample_value(
            "mlops_watchdog_probes_total", {"endpoint": "vllm", "result": "check_failed"}
        )
        == 1
    )
    assert (
        r.get_sample_value(
            "mlops_watchdog_probe_errors_total", {"endpoint": "vllm", "class": "timeout"}
        )
        == 1
    )
    assert (
        r.get_sample_value("mlops_watchdog_probe_e2e_seconds_bucket", {**labels, "le": "0.25"}) == 0
    )
    assert (
        r.get_sample_value("mlops_watchdog_probe_e2e_seconds_bucket", {**labels, "le": "0.5"}) == 1
    )
    assert r.get_sample_value("mlops_watchdog_probe_itl_seconds_count", labels) == 2
    assert (
        r.get_sample_value("mlops_watchdog_probe_e2e_seconds_count", {**labels, "prompt_id": "say"})
        == 0
    )  # failures are not latency
    assert (
        r.get_sample_value(
            "mlops_watchdog_fingerprint_info",
            {"endpoint": "vllm", "fingerprint": "fp1", "model": "m"},
        )
        == 1
    )
    assert (
        r.get_sample_value(
            "mlops_watchdog_fingerprint_change_timestamp_seconds", {"endpoint": "vllm"}
        )
        == 1700000000.0
    )
    assert r.get_sample_value("mlops_watchdog_last_cycle_timestamp_seconds") == 1700000000.0


def test_exposition_is_promtool_clean(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: apt-get install prometheus", pytrace=False)
        pytest.skip("promtool is missing")
    m = ProbeMetrics(*watched(config(tmp_path)))
    m.observe_run([result("capital-france")], 1700000000.0)
    m.lateness.observe(0.02)
    text = generate_latest(registry(m))
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
    )
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done


def test_engine_values_are_left_out_once_past_their_time(tmp_path: Path) -> None:
    """A frozen engine hangs the runs: what its /metrics said before must not stand on
    /metrics as if read just now (it once did, with 0 requests waiting while the model hung)."""
    metrics = ProbeMetrics(*watched(config(tmp_path)))
    now = {"t": 1000.0}
    r = CollectorRegistry()
    r.register(ProbeCollector(metrics, now=lambda: now["t"]))
    load = ServerLoad({"requests_waiting": 0.0})
    metrics.observe_serving("llama", [], load, None, at=1000.0, current_for=60.0)

    def read() -> tuple[float | None, float | None]:
        return (
            r.get_sample_value("mlops_watchdog_server_requests_waiting", {"endpoint": "llama"}),
            r.get_sample_value("mlops_watchdog_server_metrics_up", {"endpoint": "llama"}),
        )

    now["t"] = 1059.0
    assert read() == (0.0, 1.0)
    now["t"] = 1061.0  # the next run hangs: no read since
    assert read() == (None, 0.0)
    metrics.observe_serving("llama", [], load, None, at=1061.0, current_for=60.0)
    assert read() == (0.0, 1.0)

"""The Grafana dashboards: the committed JSON is current, lints clean, and every query parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import need
from watchdog.dashboards import build, encode, panel_queries, render

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "dashboards"
FILES = sorted(FOLDER.glob("*.json"))
UIDS = {"mlops-watchdog-endpoints", "mlops-watchdog-gpus"}
DATASOURCE = "${datasource}"
REGENERATE = "stale: run `mlops-watchdog dashboards build` and commit dashboards/*.json"

# Every metric a dashboard may query, with its labels besides job and instance. The contract with
# watchdog/web/metrics.py (and, for the GPU and drift names, with the issues that will export them).
KNOWN_METRICS: dict[str, frozenset[str]] = {
    name: frozenset(labels.split())
    for name, labels in {
        "mlops_watchdog_build_info": "version python",
        "mlops_watchdog_probe_success": "endpoint prompt_id",
        "mlops_watchdog_probes_total": "endpoint result",
        "mlops_watchdog_probe_errors_total": "endpoint class",
        "mlops_watchdog_check_pass_ratio": "endpoint prompt_id",
        "mlops_watchdog_format_accuracy_ratio": "endpoint golden_set",
        "mlops_watchdog_probe_output_tokens_per_second": "endpoint prompt_id",
        "mlops_watchdog_probe_ttfb_seconds": "endpoint prompt_id",
        "mlops_watchdog_probe_ttft_seconds": "endpoint prompt_id",
        "mlops_watchdog_probe_e2e_seconds": "endpoint prompt_id",
        "mlops_watchdog_probe_itl_seconds": "endpoint prompt_id",
        "mlops_watchdog_fingerprint_info": "endpoint fingerprint model",
        "mlops_watchdog_fingerprint_change_timestamp_seconds": "endpoint",
        "mlops_watchdog_slo_ttft_seconds": "endpoint",
        "mlops_watchdog_slo_e2e_seconds": "endpoint",
        "mlops_watchdog_last_cycle_timestamp_seconds": "",
        "mlops_watchdog_scheduler_lateness_seconds": "",
        "mlops_watchdog_scheduler_missed_runs_total": "endpoint",
        "mlops_watchdog_storage_write_seconds": "",
        "mlops_watchdog_database_size_bytes": "",
        "mlops_watchdog_endpoint_state": "endpoint",
        "mlops_watchdog_storage_write_errors_total": "",
        "mlops_watchdog_storage_waiting_runs": "",
        "mlops_watchdog_storage_dropped_runs_total": "",
        "mlops_watchdog_alerts_firing": "endpoint kind",
        "mlops_watchdog_gpu_alerts_firing": "gpu kind",
        "mlops_watchdog_notifications_total": "result",
        "mlops_watchdog_outbox_pending": "",
        "mlops_watchdog_tier_success": "endpoint tier",
        "mlops_watchdog_tier_duration_seconds": "endpoint tier",
        "mlops_watchdog_canary_leaks_total": "endpoint",
        "mlops_watchdog_server_metrics_up": "endpoint",
        "mlops_watchdog_server_requests_waiting": "endpoint",
        "mlops_watchdog_server_requests_running": "endpoint",
        "mlops_watchdog_server_kv_cache_usage_ratio": "endpoint",
        "mlops_watchdog_server_generation_tokens_per_second": "endpoint",
        "mlops_watchdog_server_ttft_seconds": "endpoint",
        "mlops_watchdog_server_start_time_seconds": "endpoint",
        "mlops_watchdog_server_request_successes_per_second": "endpoint",
        "mlops_watchdog_server_request_failures_per_second": "endpoint",
        "mlops_watchdog_server_mean_queue_seconds": "endpoint",
        "mlops_watchdog_server_mean_compute_input_seconds": "endpoint",
        "mlops_watchdog_server_mean_compute_infer_seconds": "endpoint",
        "mlops_watchdog_server_mean_compute_output_seconds": "endpoint",
        "mlops_watchdog_server_mean_request_seconds": "endpoint",
        "mlops_watchdog_server_mean_inter_token_latency_seconds": "endpoint",
        "mlops_watchdog_drift_status": "endpoint golden_set signal",
        "mlops_watchdog_drift_score": "endpoint golden_set signal",
        "mlops_watchdog_gpu_telemetry_up": "",
        "mlops_watchdog_gpus": "",
        "mlops_watchdog_gpu_info": "gpu index name driver",
        "mlops_watchdog_gpu_utilization_ratio": "gpu",
        "mlops_watchdog_gpu_memory_utilization_ratio": "gpu",
        "mlops_watchdog_gpu_memory_used_bytes": "gpu",
        "mlops_watchdog_gpu_memory_free_bytes": "gpu",
        "mlops_watchdog_gpu_memory_reserved_bytes": "gpu",
        "mlops_watchdog_gpu_memory_total_bytes": "gpu",
        "mlops_watchdog_gpu_temperature_celsius": "gpu",
        "mlops_watchdog_gpu_power_watts": "gpu",
        "mlops_watchdog_gpu_power_limit_watts": "gpu",
        "mlops_watchdog_gpu_energy_joules_total": "gpu",
        "mlops_watchdog_gpu_sm_clock_hertz": "gpu",
        "mlops_watchdog_gpu_memory_clock_hertz": "gpu",
        "mlops_watchdog_gpu_clock_event_active": "gpu reason",
        "mlops_watchdog_gpu_ecc_errors_total": "gpu type",
        "mlops_watchdog_gpu_remapped_rows": "gpu type",
        "mlops_watchdog_gpu_remap_pending": "gpu",
        "mlops_watchdog_gpu_remap_failed": "gpu",
        "mlops_watchdog_gpu_pcie_bytes_per_second": "gpu direction",
        "mlops_watchdog_gpu_performance_state": "gpu",
        "mlops_watchdog_gpu_processes": "gpu",
        "mlops_watchdog_gpu_process_memory_bytes": "gpu pid process",
        "mlops_watchdog_gpu_xid_errors_total": "gpu xid",
        "mlops_watchdog_gpu_xid_last_seen_timestamp_seconds": "gpu xid",
        "mlops_watchdog_gpu_memory_growth_bytes_per_second": "gpu",
        "mlops_watchdog_gpu_throttle_duration_seconds": "gpu",
        "mlops_watchdog_gpu_detected": "gpu kind",
        "mlops_watchdog_gpu_idle_while_serving": "endpoint gpu",
        "mlops_watchdog_gpu_sampling_seconds": "",
        "mlops_watchdog_probe_energy_per_token_joules": "endpoint",
        "mlops_watchdog_probe_cost_per_1k_tokens": "endpoint currency",
    }.items()
}
# Per endpoint, but measured on its GPUs: shown on the endpoints dashboard, in its GPU row.
GPU_ENDPOINT_METRICS = {
    "mlops_watchdog_probe_energy_per_token_joules",
    "mlops_watchdog_probe_cost_per_1k_tokens",
}
# Everything that only a watchdog with NVML exports.
GPU_METRICS = {
    name
    for name in KNOWN_METRICS
    if name.startswith(("mlops_watchdog_gpu_", "mlops_watchdog_gpus"))
} | GPU_ENDPOINT_METRICS
# The engine's own metrics that llama.cpp (the test peer) does not serve: vLLM and SGLang do.
NOT_FROM_LLAMA_CPP = {
    "mlops_watchdog_server_kv_cache_usage_ratio",
    "mlops_watchdog_server_ttft_seconds",
    "mlops_watchdog_server_start_time_seconds",
    # Triton's counters, as rates and means.
    "mlops_watchdog_server_request_successes_per_second",
    "mlops_watchdog_server_request_failures_per_second",
    "mlops_watchdog_server_mean_queue_seconds",
    "mlops_watchdog_server_mean_compute_input_seconds",
    "mlops_watchdog_server_mean_compute_infer_seconds",
    "mlops_watchdog_server_mean_compute_output_seconds",
    "mlops_watchdog_server_mean_request_seconds",
    # vLLM's, SGLang's and NIM's inter-token latency histogram, as a mean between two reads.
    "mlops_watchdog_server_mean_inter_token_latency_seconds",
}
HISTOGRAMS = {
    "mlops_watchdog_gpu_sampling_seconds",
    "mlops_watchdog_probe_ttfb_seconds",
    "mlops_watchdog_probe_ttft_seconds",
    "mlops_watchdog_probe_e2e_seconds",
    "mlops_watchdog_probe_itl_seconds",
    "mlops_watchdog_scheduler_lateness_seconds",
    "mlops_watchdog_storage_write_seconds",
    "mlops_watchdog_server_ttft_seconds",
}
ALWAYS = frozenset({"job", "node", "instance"})  # node: every series, from the exporter
ENDPOINT_ROWS = [
    "Health",
    "Serving",
    "Engine",
    "Latency",
    "Quality",
    "Fingerprint",
    "GPU",
    "Watchdog",
    "Drift",
]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, including those inside collapsed rows."""
    for panel in board.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels") or []
        else:
            yield panel


def queries(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, query) for every panel target and every annotation query."""
    for panel in panels(board):
        for target in panel.get("targets") or []:
            yield f"panel {panel.get('title')!r}", target
    for a in board.get("annotations", {}).get("list", []):
        if a.get("builtIn") != 1:
            yield f"annotation {a.get('name')!r}", a


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board.get("templating", {}).get("list", [])}


def variable_selectors(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The series selector inside each `label_values(selector, label)` variable query."""
    for name, v in variables(board).items():
        if v["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"])
            assert match, f"variable {name}: not label_values(selector, label): {v['query']}"
            yield f"variable {name!r}", match[1]


def metric_names(expr: str) -> list[str]:
    """The mlops_watchdog_ series an expression reads, histogram suffixes stripped."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    names = []
    for name in re.findall(r"\bmlops_watchdog_\w+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        names.append(base if base in HISTOGRAMS else name)
    return names


def selectors(expr: str) -> list[tuple[str, dict[str, str]]]:
    """(metric, {label: `op"value"`}) for every mlops_watchdog_ selector in `expr`."""
    found = []
    for name, body in re.findall(r"\b(mlops_watchdog_\w+)(?:\{([^}]*)\})?", expr):
        matchers = dict(re.findall(r'(\w+)\s*((?:=~|!~|!=|=)"[^"]*")', body))
        found.append((name, matchers))
    return found


def labels_of(expr: str) -> frozenset[str]:
    known = [KNOWN_METRICS.get(name, frozenset()) for name in metric_names(expr)]
    return ALWAYS.union(*known)


@pytest.fixture(params=FILES, ids=[f.name for f in FILES])
def board(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


# --- generated and committed ------------------------------------------------------------------


def test_committed_dashboards_are_current() -> None:
    rendered = render()
    assert sorted(rendered) == [f.name for f in FILES], REGENERATE
    for name, board in rendered.items():
        assert (FOLDER / name).read_text(encoding="utf-8") == encode(board), f"{name}: {REGENERATE}"


def test_build_writes_what_render_returns(tmp_path: Path) -> None:
    paths = build(tmp_path / "out")
    assert [p.name for p in paths] == sorted(render())
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert text == encode(render()[path.name])
        assert text.endswith("}\n") and json.loads(text)["uid"] == path.stem
    assert render() == render()


def test_panel_queries_lists_every_target_with_its_row() -> None:
    board = load(FOLDER / "mlops-watchdog-endpoints.json")
    listed = panel_queries(board)
    assert len(listed) == sum(len(p.get("targets", [])) for p in panels(board))
    assert ("Drift", "Drift score") in {(row, title) for row, title, _ in listed}
    rows = {row for row, _, _ in listed}
    assert rows == set(ENDPOINT_ROWS)


def test_panel_queries_reads_collapsed_rows() -> None:
    board = {
        "panels": [
            {"type": "stat", "title": "top", "targets": [{"expr": "a"}]},
            {
                "type": "row",
                "title": "Closed",
                "collapsed": True,
                "panels": [{"type": "timeseries", "title": "inside", "targets": [{"expr": "b"}]}],
            },
            {"type": "row", "title": "Open", "panels": []},
            {"type": "timeseries", "title": "after", "targets": [{"expr": "c"}, {"expr": "d"}]},
        ]
    }
    assert panel_queries(board) == [
        ("", "top", "a"),
        ("Closed", "inside", "b"),
        ("Open", "after", "c"),
        ("Open", "after", "d"),
    ]


def test_uids_are_stable_and_unique() -> None:
    boards = [load(f) for f in FILES]
    assert {b["uid"] for b in boards} == UIDS
    assert len(boards) == len(UIDS)
    for path, b in zip(FILES, boards, strict=True):
        assert path.stem == b["uid"]
        assert "id" not in b or b["id"] is None  # provisioning assigns ids; a fixed one collides
        nested = [p for row in b["panels"] if row["type"] == "row" for p in row.get("panels") or []]
        ids = [p["id"] for p in [*b["panels"], *nested]]
        assert all(ids) and len(set(ids)) == len(ids), f"{path.name}: panel ids {ids}"


# --- grafana dashboard-linter rules -----------------------------------------------------------


def test_datasource_variable_is_used_everywhere(board: dict[str, Any]) -> None:
    ds = variables(board).get("datasource")
    assert ds is not None and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name, v in variables(board).items():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == DATASOURCE, f"variable {name}"
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]
    for where, q in queries(board):
        assert q["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, where


def test_job_and_instance_variables(board: dict[str, Any]) -> None:
    vs = variables(board)
    assert vs["job"]["query"] == "label_values(mlops_watchdog_build_info, job)"
    assert vs["node"]["query"] == 'label_values(mlops_watchdog_build_info{job=~"$job"}, node)'
    assert (
        vs["instance"]["query"]
        == 'label_values(mlops_watchdog_build_info{job=~"$job",node=~"$node"}, instance)'
    )
    for name, v in vs.items():
        if v["type"] == "query":
            assert v["multi"] and v["includeAll"] and v["allValue"] == ".*", name


def test_rates_use_rate_interval(board: dict[str, Any]) -> None:
    for where, q in queries(board):
        expr = q["expr"]
        ranges = re.findall(r"\[([^\]]*)\]", expr)
        assert all(r == "$__rate_interval" for r in ranges), f"{where}: {expr}"
        calls = re.findall(r"\b(?:rate|irate|increase|changes)\(", expr)
        assert len(calls) <= len(ranges), f"{where}: a range function without a range: {expr}"


def test_every_panel_has_a_unit(board: dict[str, Any]) -> None:
    for panel in panels(board):
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


def test_every_target_has_an_expr_and_its_own_ref_id(board: dict[str, Any]) -> None:
    for panel in panels(board):
        targets = panel.get("targets") or []
        assert targets, f"{panel['title']}: no targets"
        assert all(t.get("expr", "").strip() for t in targets), panel["title"]
        ref_ids = [t["refId"] for t in targets]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), panel["title"]


def test_queries_follow_the_variables(board: dict[str, Any]) -> None:
    names = variables(board)
    for where, q in queries(board):
        for metric, matchers in selectors(q["expr"]):
            wanted = {"job", "node", "instance"}
            if "endpoint" in names and "endpoint" in KNOWN_METRICS.get(metric, ()):
                wanted.add("endpoint")
            if "gpu" in names and "gpu" in KNOWN_METRICS.get(metric, ()):
                wanted.add("gpu")
            for label in wanted:
                assert matchers.get(label) == f'=~"${label}"', f"{where}: {metric} {label}"


def test_metric_names_are_known(board: dict[str, Any]) -> None:
    exprs = [(where, q["expr"]) for where, q in queries(board)]
    for where, expr in [*exprs, *variable_selectors(board)]:
        names = metric_names(expr)
        assert names, f"{where}: reads no mlops_watchdog_ series: {expr}"
        unknown = set(names) - KNOWN_METRICS.keys()
        assert not unknown, f"{where}: unknown metrics {sorted(unknown)}"


def test_labels_are_known(board: dict[str, Any]) -> None:
    """`by (...)`, legends and table columns name labels that the queried series carry."""
    for panel in panels(board):
        targets = panel.get("targets") or []
        for t in targets:
            allowed = labels_of(t["expr"])
            for group in re.findall(r"\bby \(([^)]*)\)", t["expr"]):
                used = {label.strip() for label in group.split(",")} - {"le"}
                assert used <= allowed, f"{panel['title']}: by ({group})"
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
            assert legend <= allowed, f"{panel['title']}: legend {t.get('legendFormat')}"
        for step in panel.get("transformations") or []:
            if step["id"] == "filterFieldsByName":
                columns = set(step["options"]["include"]["names"]) - {"Value"}
                assert columns <= labels_of(targets[0]["expr"]), panel["title"]


def test_every_known_metric_is_on_a_dashboard() -> None:
    shown: set[str] = set()
    for path in FILES:
        b = load(path)
        for _, q in queries(b):
            shown.update(metric_names(q["expr"]))
        for _, s in variable_selectors(b):
            shown.update(metric_names(s))
    assert shown == KNOWN_METRICS.keys()


# --- the dashboards' own contracts ------------------------------------------------------------


def test_endpoints_dashboard() -> None:
    b = load(FOLDER / "mlops-watchdog-endpoints.json")
    rows = [p["title"] for p in b["panels"] if p["type"] == "row"]
    assert rows == ENDPOINT_ROWS
    endpoint = variables(b)["endpoint"]
    assert endpoint["query"] == (
        'label_values(mlops_watchdog_probe_success{job=~"$job",node=~"$node",instance=~"$instance"}, endpoint)'
    )
    (note,) = b["annotations"]["list"]
    assert note["name"] == note["titleFormat"] == "fingerprint changed"
    assert note["expr"] == (
        "changes(mlops_watchdog_fingerprint_change_timestamp_seconds"
        '{job=~"$job",node=~"$node",instance=~"$instance",endpoint=~"$endpoint"}[$__rate_interval]) > 0'
    )
    listed = {(row, title) for row, title, _ in panel_queries(b)}
    drift = {m for row, _, expr in panel_queries(b) if row == "Drift" for m in metric_names(expr)}
    assert drift == {"mlops_watchdog_drift_status", "mlops_watchdog_drift_score"}
    # tests/test_prometheus_e2e.py expects no data in a row named GPU: keep GPU metrics there.
    gpu = {m for row, _, expr in panel_queries(b) if row == "GPU" for m in metric_names(expr)}
    assert gpu == GPU_ENDPOINT_METRICS | {"mlops_watchdog_gpu_idle_while_serving"}
    assert {m for _, _, expr in panel_queries(b) for m in metric_names(expr)} & GPU_METRICS == gpu
    assert ("Fingerprint", "What answers") in listed
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels(b)}
    assert units["Format accuracy"] == "percentunit"
    assert units["Time to first token"] == units["End-to-end latency"] == "s"


def test_gpu_dashboard() -> None:
    b = load(FOLDER / "mlops-watchdog-gpus.json")
    assert variables(b)["gpu"]["query"] == (
        'label_values(mlops_watchdog_gpu_info{job=~"$job",node=~"$node",instance=~"$instance"}, gpu)'
    )
    rows = [p["title"] for p in b["panels"] if p["type"] == "row"]
    assert rows == [
        "Overview",
        "Utilisation",
        "Memory",
        "Thermals and power",
        "Clocks",
        "Errors",
        "Detectors",
    ]
    shown = {m for _, _, expr in panel_queries(b) for m in metric_names(expr)}
    assert shown == GPU_METRICS - GPU_ENDPOINT_METRICS
    for _, title, expr in panel_queries(b):
        if re.search(r"_total\b", expr):
            assert "increase(" in expr, f"{title}: counters are shown as increases"
    detectors = {
        m for row, _, expr in panel_queries(b) if row == "Detectors" for m in metric_names(expr)
    }
    assert detectors == {
        "mlops_watchdog_gpu_alerts_firing",
        "mlops_watchdog_gpu_detected",
        "mlops_watchdog_gpu_memory_growth_bytes_per_second",
        "mlops_watchdog_gpu_throttle_duration_seconds",
        "mlops_watchdog_gpu_idle_while_serving",
    }
    units = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels(b)}
    assert units["VRAM"] == units["VRAM per process"] == "bytes"
    assert units["Power vs limit"] == "watt" and units["Energy"] == "joule"
    assert units["SM clock"] == units["Memory clock"] == "hertz"
    assert units["PCIe throughput"] == units["VRAM growth"] == "Bps"
    # Grafana's date units take milliseconds.
    (last_xid,) = [p for p in panels(b) if p["title"] == "Last XID by code"]
    assert last_xid["targets"][0]["expr"].endswith(" * 1000")


def test_provisioning_points_at_a_folder() -> None:
    config = yaml.safe_load((FOLDER / "provisioning.yaml").read_text())
    (provider,) = config["providers"]
    assert config["apiVersion"] == 1 and provider["type"] == "file"
    folder = provider["options"]["path"]
    assert folder.startswith("/") and folder in (FOLDER / "provisioning.yaml").read_text()


# --- the real PromQL parser -------------------------------------------------------------------


def promql(expr: str) -> str:
    """The expression as Prometheus would receive it, with dashboard variables filled in."""
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def parse_errors(exprs: list[tuple[str, str]], folder: Path) -> list[str]:
    """promtool's complaint for each (where, expr) that does not parse, via `check rules`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        need("promtool is not installed (apt-get install prometheus)")
        raise AssertionError("unreachable")
    rules = [
        {"record": f"dashboard_query_{i}", "expr": promql(e)} for i, (_, e) in enumerate(exprs)
    ]
    path = folder / "dashboard-queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    # One line per bad rule: `FILE: LINE:COL: group "dashboards", rule N, "NAME": could not parse...`
    bad = {int(n) - 1: line for n, line in re.findall(r'(?m)rule (\d+), "[^"]*": (.+)$', output)}
    if done.returncode != 0 and not bad:
        return [output]
    return [f"{exprs[i][0]}: {promql(exprs[i][1])}: {why}" for i, why in sorted(bad.items())]


def test_every_query_parses(tmp_path: Path) -> None:
    exprs = []
    for path in FILES:
        b = load(path)
        exprs += [(f"{path.name} {where}", q["expr"]) for where, q in queries(b)]
        exprs += [(f"{path.name} {where}", s) for where, s in variable_selectors(b)]
    assert not parse_errors(exprs, tmp_path)


def test_promtool_catches_a_broken_query(tmp_path: Path) -> None:
    exprs = [
        ("good", 'rate(mlops_watchdog_probes_total{job=~"$job"}[$__rate_interval])'),
        ("bad", "sum by (endpoint) (rate(mlops_watchdog_probes_total[$__rate_interval])"),
    ]
    (error,) = parse_errors(exprs, tmp_path)
    assert error.startswith("bad: ") and "parse error" in error

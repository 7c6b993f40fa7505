"""The Prometheus alerting rules, their promtool unit tests and the Alertmanager example."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import need
from tests.peers import (
    PeerMissing,
    alertmanager_config,
    start_alertmanagers,
    stop_process,
)
from tests.test_dashboards import HISTOGRAMS, KNOWN_METRICS

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "alerts" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
RULE_TEST_FILES = sorted(RULES_DIR.glob("*test*.yml"))
ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager" / "alertmanager.example.yml"
RUNBOOK_BASE = "https://github.com/mlops-watchdog/mlops-watchdog/blob/main/docs/runbooks/"
ENDPOINT_ALERTS = {
    "EndpointDown",
    "CanaryLeak",
    "FormatAccuracyLow",
    "LatencySLOBreached",
}
GPU_ALERTS = {
    "GpuTelemetryDown",
    "GpuMissing",
    "GpuXidError",
    "GpuMemoryFault",
    "GpuVramLeak",
    "GpuVramContention",
    "GpuIdleWhileServing",
    "GpuThrottling",
}
WATCHDOG_ALERTS = {"WatchdogDown", "WatchdogStorageFailing"}
ALERTNAMES = WATCHDOG_ALERTS | ENDPOINT_ALERTS | GPU_ALERTS
# Each rules file, its one group, and the alerts in it.
GROUPS = {
    "mlops-watchdog.rules.yml": ("mlops-watchdog", WATCHDOG_ALERTS | ENDPOINT_ALERTS),
    "mlops-watchdog-gpu.rules.yml": ("mlops-watchdog-gpu", GPU_ALERTS),
}

# PromQL words that look like names but are not metrics.
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def tool(package: str, *names: str) -> str:
    """The first of `names` on PATH; a missing one fails in CI and skips elsewhere."""
    for name in names:
        if path := shutil.which(name):
            return path
    need(f"{names[0]} is not installed (apt-get install {package})")
    raise AssertionError("unreachable")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in load(path)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (functions and label names left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\b(?:group_left|group_right)\b", " ", expr)
    names = re.findall(r"(?<![\w.:])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", expr)
    return set(names) - PROMQL_KEYWORDS


def template_queries(text: str) -> list[str]:
    """PromQL that an annotation template runs through `query`, with printf verbs filled in."""
    queries = []
    for action in re.findall(r"\{\{(.*?)\}\}", text, flags=re.S):
        if re.search(r"\bquery\b", action):
            for literal in re.findall(r'(?:printf|query)\s+"((?:[^"\\]|\\.)*)"', action):
                queries.append(literal.replace('\\"', '"').replace("%q", '"x"'))
    return queries


# --- the real tools ----------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    promtool = tool("prometheus", "promtool")
    assert RULE_FILES, f"no *.rules.yml in {RULES_DIR}"
    result = run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = tool("prometheus", "promtool")
    assert RULE_TEST_FILES, f"no *test*.yml in {RULES_DIR}"
    result = run(promtool, "test", "rules", *map(str, RULE_TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_example_is_valid() -> None:
    amtool = tool("prometheus-alertmanager", "amtool")
    result = run(amtool, "check-config", str(ALERTMANAGER_EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The example config in a real Alertmanager on a free loopback port; Slack unreachable."""
    try:
        [am] = start_alertmanagers(
            tmp_path, alertmanager_config(tmp_path, "http://127.0.0.1:9/never-slack"), count=1
        )
    except PeerMissing as exc:
        need(str(exc))
        raise
    try:
        yield am.url
    finally:
        stop_process(am.process)


def test_watchdog_down_inhibits_endpoint_alerts_of_its_instance(alertmanager: str) -> None:
    def alert(name: str, instance: str, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "instance": instance, **labels}}

    sent = [
        alert("WatchdogDown", "watchdog-a:9464", kind="watchdog_down", cause="stale_cycle"),
        alert("EndpointDown", "watchdog-a:9464", endpoint="local-smol", kind="unreachable"),
        alert("FormatAccuracyLow", "watchdog-a:9464", endpoint="local-smol", golden_set="json"),
        alert("EndpointDown", "watchdog-b:9464", endpoint="local-smol", kind="unreachable"),
        alert("NodeDown", "watchdog-a:9464"),
    ]
    httpx.post(alertmanager + "/api/v2/alerts", json=sent, timeout=5).raise_for_status()
    expected = {
        ("WatchdogDown", "watchdog-a:9464"): "active",
        ("EndpointDown", "watchdog-a:9464"): "suppressed",
        ("FormatAccuracyLow", "watchdog-a:9464"): "suppressed",
        ("EndpointDown", "watchdog-b:9464"): "active",
        ("NodeDown", "watchdog-a:9464"): "active",
    }
    deadline = time.monotonic() + 10
    while True:
        got = {
            (a["labels"]["alertname"], a["labels"]["instance"]): a["status"]["state"]
            for a in httpx.get(alertmanager + "/api/v2/alerts", timeout=5).json()
        }
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the inhibitor reads new alerts in the background
    assert got == expected


# --- the rules' shape --------------------------------------------------------------------------


def test_rules_define_exactly_the_fleet_alerts() -> None:
    found = {}
    for path in RULE_FILES:
        (group,) = load(path)["groups"]
        found[path.name] = (group["name"], {rule["alert"] for rule in group["rules"]})
    assert found == GROUPS
    assert {rule["alert"] for rule in alert_rules()} == ALERTNAMES


def test_each_rules_file_has_its_own_unit_tests() -> None:
    tested = {name: path.name for path in RULE_TEST_FILES for name in load(path)["rule_files"]}
    assert tested == {
        path.name: path.name.replace(".rules.yml", ".rules.test.yml") for path in RULE_FILES
    }


def test_gpu_alerts_have_gpu_kinds_and_name_their_gpu() -> None:
    per_host = {"GpuTelemetryDown", "GpuMissing"}
    for rule in alert_rules():
        if rule["alert"] in GPU_ALERTS:
            assert rule["labels"]["kind"].startswith("gpu_"), rule["alert"]
            if rule["alert"] not in per_host:
                assert "$labels.gpu" in rule["annotations"]["summary"], rule["alert"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']}")
def test_every_alert_has_severity_kind_annotations_and_for(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "needs a for: duration"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    kind = rule["labels"]["kind"]
    assert re.fullmatch(r"[a-z_]+", kind)
    annotations = rule["annotations"]
    assert {"summary", "description", "runbook_url"} <= set(annotations)
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{kind}.md"
    assert "$labels" in annotations["description"] or "absent(" in rule["expr"]


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']}")
def test_rules_use_only_watchdog_metrics(rule: dict[str, Any]) -> None:
    exprs = [rule["expr"]]
    for text in rule["annotations"].values():
        exprs += template_queries(text)
    names = set().union(*map(metric_names, exprs))
    assert names, f"no metric found in {exprs}"
    foreign = {n for n in names if not n.startswith("mlops_watchdog_") and n not in {"up", "time"}}
    assert not foreign, f"{rule['alert']} uses {sorted(foreign)}"
    # The same metric contract as the dashboards': a misspelt name would never match a series.
    known = KNOWN_METRICS.keys() | {f"{h}_bucket" for h in HISTOGRAMS} | {"up", "time"}
    assert names <= known, f"{rule['alert']} reads unknown {sorted(names - known)}"


def test_metric_name_parser_sees_selectors_and_skips_functions_and_labels() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (instance, le) (rate(a_bucket{x="y z"}[10m])))'
        " > on (instance) group_left max(b) and time() - c offset 5m > bool 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}
    assert metric_names('absent(up{job="mlops-watchdog"}) or vector(1)') == {"up"}
    text = '{{ with printf "max(m{instance=%q})" $labels.instance | query | sortByLabel "k" }}'
    assert template_queries(text) == ['max(m{instance="x"})']


def test_unit_tests_cover_each_alert_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TEST_FILES:
        for case in load(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
                for exp in check.get("exp_alerts") or []:
                    assert {"severity", "kind"} <= set(exp["exp_labels"])
                    assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url"}
    assert firing == ALERTNAMES
    assert silent == ALERTNAMES


def test_unit_tests_fire_every_rule() -> None:
    """Rules that share an alertname (causes, severities) each have a case that fires them."""
    fired = [
        (check["alertname"], exp["exp_labels"])
        for path in RULE_TEST_FILES
        for case in load(path)["tests"]
        for check in case.get("alert_rule_test", [])
        for exp in check.get("exp_alerts") or []
    ]
    for rule in alert_rules():
        wanted = {k: str(v) for k, v in rule["labels"].items()}
        assert any(
            name == rule["alert"] and wanted.items() <= {k: str(v) for k, v in got.items()}.items()
            for name, got in fired
        ), f"no unit test fires {rule['alert']} {wanted}"


def test_alertmanager_example_groups_repeats_and_inhibits() -> None:
    config = load(ALERTMANAGER_EXAMPLE)
    route = config["route"]
    assert route["group_by"] == ["alertname", "node", "instance", "endpoint", "gpu"]
    assert route["repeat_interval"] == "4h"
    [slack] = [s for r in config["receivers"] for s in r.get("slack_configs", [])]
    assert slack["api_url_file"] == "/etc/alertmanager/slack_webhook_url"
    assert "api_url" not in slack
    assert slack["send_resolved"] is True
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['alertname="WatchdogDown"']
    assert inhibit["equal"] == ["instance"]
    targets = re.fullmatch(r'alertname=~"(.*)"', inhibit["target_matchers"][0])
    assert targets and set(targets.group(1).split("|")) == ENDPOINT_ALERTS

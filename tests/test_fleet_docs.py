"""deploy/fleet/: the example configs pass the tools that will read them, and the guide names them.

The figures the guide quotes come from `python -m bench.fleet_series` and are not checked here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import need
from tests.peers import check_config
from tests.test_dashboards import HISTOGRAMS, KNOWN_METRICS

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / "deploy" / "fleet"
README = FLEET / "README.md"
PROMETHEUS = FLEET / "prometheus.yml"
RECORDING = FLEET / "mlops-watchdog-fleet.rules.yml"
ALERTMANAGER_EXAMPLE = ROOT / "alerts" / "alertmanager" / "alertmanager.example.yml"
# What the configs read from the environment, with harmless values.
ENV = {
    "SLACK_WEBHOOK_URL": "https://hooks.example.test/T0/B0/x",
    "GATEWAY_API_KEY": "gw-key-8c1f2e",
}
# The two cardinality cuts, exactly as the guide, prometheus.yml and the bench give them.
CUT = "mlops_watchdog_gpu_process_memory_bytes|mlops_watchdog_probe_(ttfb|ttft|e2e|itl)_seconds_bucket"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        need("promtool is not installed (apt-get install prometheus)")
    assert binary is not None
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=120, cwd=ROOT / "deploy"
    )


@pytest.mark.parametrize("name", ["node-agent.yaml", "central.yaml"])
def test_watchdog_configs_pass_check(name: str) -> None:
    done = check_config(FLEET / name, drop=["NODE_NAME"], **ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK:" in done.stdout
    for secret in ENV.values():
        assert secret not in done.stdout + done.stderr


def test_central_reads_its_secrets_from_the_environment() -> None:
    done = check_config(FLEET / "central.yaml", drop=ENV)
    assert done.returncode == 2
    assert "SLACK_WEBHOOK_URL" in done.stderr and "GATEWAY_API_KEY" in done.stderr


def test_agents_leave_slack_to_alertmanager_and_central_pages_both_ways() -> None:
    agent = yaml.safe_load((FLEET / "node-agent.yaml").read_text())
    central = yaml.safe_load((FLEET / "central.yaml").read_text())
    assert agent["alerting"] == {"route": "alertmanager"}
    assert agent["listen"] == "0.0.0.0:9464" and "node" not in agent  # the host name
    assert central["alerting"]["route"] == "both"
    assert len(central["alerting"]["alertmanager"]["urls"]) == 2  # both members of the pair
    assert central["gpu"] == {"enabled": False}


def test_prometheus_config_passes_promtool_with_the_shipped_rules() -> None:
    done = promtool("check", "config", str(PROMETHEUS))  # rule files resolve from its folder
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 rule files found" in done.stdout + done.stderr
    config = yaml.safe_load(PROMETHEUS.read_text())
    [job] = config["scrape_configs"]
    assert job["job_name"] == "mlops-watchdog" and job["honor_labels"] is True
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert len(alertmanagers["static_configs"][0]["targets"]) == 2
    targets = yaml.safe_load((FLEET / job["file_sd_configs"][0]["files"][0]).read_text())
    assert all(group["labels"].get("node") for group in targets)  # so `up` names the node


def test_the_cuts_name_series_the_watchdog_exports() -> None:
    assert CUT in PROMETHEUS.read_text() and CUT in README.read_text()
    from bench.fleet_series import CUT_REGEX

    assert CUT_REGEX == CUT
    pattern = re.compile(f"^(?:{CUT})$")
    exported = KNOWN_METRICS.keys() | {f"{h}_bucket" for h in HISTOGRAMS}
    cut = {name for name in exported if pattern.match(name)}
    assert cut == {
        "mlops_watchdog_gpu_process_memory_bytes",
        *(f"mlops_watchdog_probe_{h}_seconds_bucket" for h in ("ttfb", "ttft", "e2e", "itl")),
    }


def test_recording_rules_read_exported_buckets_and_compute_quantiles(tmp_path: Path) -> None:
    rules = yaml.safe_load(RECORDING.read_text())["groups"][0]["rules"]
    read = {name for r in rules for name in re.findall(r"mlops_watchdog_\w+", r["expr"])}
    assert read == {f"{h}_bucket" for h in HISTOGRAMS if h.startswith("mlops_watchdog_probe_")}
    # Two prompts of one endpoint, summed: 1 answer/min under 1 s, 2 more/min between 1 and 2 s.
    series = 'mlops_watchdog_probe_e2e_seconds_bucket{instance="a:9464",job="mlops-watchdog",node="n1",endpoint="vllm",prompt_id="%s",le="%s"}'
    labels = '{instance="a:9464",node="n1",endpoint="vllm"}'
    test = {
        "rule_files": [str(RECORDING)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series % ("p1", "1"), "values": "0+1x10"},
                    {"series": series % ("p1", "2"), "values": "0+2x10"},
                    {"series": series % ("p1", "+Inf"), "values": "0+2x10"},
                    {"series": series % ("p2", "1"), "values": "0+0x10"},
                    {"series": series % ("p2", "2"), "values": "0+1x10"},
                    {"series": series % ("p2", "+Inf"), "values": "0+1x10"},
                ],
                # Rounded to the millisecond: promtool compares floats exactly.
                "promql_expr_test": [
                    {
                        "expr": f"round(endpoint:mlops_watchdog_probe_e2e_seconds:{q} * 1000)",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": ms}],
                    }
                    for q, ms in (("p50_5m", 1250), ("p95_5m", 1925))
                ],
            }
        ],
    }
    path = tmp_path / "fleet.rules.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    checked = promtool("check", "rules", str(RECORDING))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_push_routes_merge_into_the_shipped_alertmanager_config(tmp_path: Path) -> None:
    """Pushed alerts of kinds a rule covers go nowhere; the finer kinds and the rules' alerts
    still reach Slack."""
    amtool = shutil.which("amtool")
    if amtool is None:
        need("amtool is not installed (apt-get install prometheus-alertmanager)")
    assert amtool is not None
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    fragment = yaml.safe_load((FLEET / "alertmanager-push-routes.yml").read_text())
    config["templates"] = [str(ALERTMANAGER_EXAMPLE.parent / "mlops-watchdog.tmpl")]
    config["route"]["routes"] = fragment["route"]["routes"] + config["route"].get("routes", [])
    config["receivers"] += fragment["receivers"]
    config["inhibit_rules"] += fragment["inhibit_rules"]
    (tmp_path / "slack_webhook_url").write_text(ENV["SLACK_WEBHOOK_URL"] + "\n")
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            slack["api_url_file"] = str(tmp_path / "slack_webhook_url")
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    checked = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    slack = config["route"]["receiver"]
    for labels, receiver in (
        (["source=mlops-watchdog", "kind=unreachable", "alertname=EndpointDown"], "null"),
        (["source=mlops-watchdog", "kind=gpu_vram_leak", "alertname=GpuVramLeak"], "null"),
        (["source=mlops-watchdog", "kind=http_error", "alertname=EndpointHTTPErrors"], slack),
        (["source=mlops-watchdog", "kind=drift", "alertname=BehaviourDrift"], slack),
        (["kind=unreachable", "alertname=EndpointDown", "instance=n1:9464"], slack),
    ):
        routed = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={path}", *labels],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert routed.stdout.strip() == receiver, (labels, routed.stdout, routed.stderr)


def test_the_guide_names_every_file_here_and_the_bench_command() -> None:
    text = README.read_text()
    for path in sorted(FLEET.rglob("*")):
        if path.is_file() and path != README:
            assert str(path.relative_to(FLEET)) in text, f"README.md does not mention {path.name}"
    assert ".venv/bin/python -m bench.fleet_series" in text
    assert "tests/test_fleet_e2e.py" in text

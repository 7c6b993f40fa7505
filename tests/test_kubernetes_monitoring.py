"""deploy/kubernetes/60-prometheusrule.yaml and 70-grafana-dashboards.yaml carry the shipped alert
rules and dashboards unchanged, or this fails: the rules as PrometheusRules for the Prometheus
Operator, the dashboards as ConfigMaps for Grafana's dashboard sidecar. tests/test_container.py
validates them with the other manifests.

Regenerate both with `python -m tests.test_kubernetes_monitoring`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import yaml

from tests.test_prometheus_rules import run, tool

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
RULE_FILES = sorted((ROOT / "alerts" / "prometheus").glob("*.rules.yml"))
DASHBOARD_FILES = sorted((ROOT / "dashboards").glob("*.json"))
RULES, DASHBOARDS = "60-prometheusrule.yaml", "70-grafana-dashboards.yaml"
NAMESPACE = "mlops-watchdog"
LABELS = {"app.kubernetes.io/name": "mlops-watchdog"}
# What Grafana's dashboard sidecar looks for (kube-prometheus-stack's defaults).
SIDECAR_LABEL = {"grafana_dashboard": "1"}
REGENERATE = "stale: regenerate with `python -m tests.test_kubernetes_monitoring` and commit deploy/kubernetes/"
GENERATED = "# Generated from {} by `python -m tests.test_kubernetes_monitoring`:\n# edit those, not this file.\n"
HEADERS = {
    RULES: GENERATED.format("alerts/prometheus/*.rules.yml")
    + """\
# The alerting rules for the Prometheus Operator, one PrometheusRule per rules file (needs its
# CRDs, as 50-servicemonitor.yaml does). Your Prometheus selects PrometheusRules by label:
# kube-prometheus-stack's wants `release: <its release name>` unless
# ruleSelectorNilUsesHelmValues is false.
""",
    DASHBOARDS: GENERATED.format("dashboards/*.json")
    + """\
# The Grafana dashboards, one ConfigMap each, for Grafana's dashboard sidecar: it loads every
# ConfigMap labelled grafana_dashboard: "1". kube-prometheus-stack's looks in every namespace;
# Grafana's own chart only in Grafana's, unless sidecar.dashboards.searchNamespace is ALL.
""",
}
# A plain (client-side) `kubectl apply` copies the object into an annotation, and annotations
# may hold 256 KiB in all; a ConfigMap's data may hold 1 MiB.
APPLY_LIMIT = 256 * 1024


def head(api_version: str, kind: str, name: str, labels: dict[str, str]) -> str:
    metadata = {"name": name, "namespace": NAMESPACE, "labels": labels}
    return yaml.safe_dump(
        {"apiVersion": api_version, "kind": kind, "metadata": metadata}, sort_keys=False
    )


def prometheus_rule(path: Path) -> str:
    """A rules file as a PrometheusRule: its own text, comments and all, is the spec."""
    name = path.name.removesuffix(".rules.yml")
    text = path.read_text(encoding="utf-8")
    return head("monitoring.coreos.com/v1", "PrometheusRule", name, LABELS) + (
        f"spec:\n  # alerts/prometheus/{path.name}, as it is:\n" + textwrap.indent(text, "  ")
    )


def dashboard_configmap(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    return head("v1", "ConfigMap", f"{path.stem}-dashboard", LABELS | SIDECAR_LABEL) + (
        f"data:\n  {path.name}: |\n" + textwrap.indent(text, "    ")
    )


def rendered() -> dict[str, str]:
    """{file in deploy/kubernetes/: its text}, from the rules and dashboards as they are now."""
    rules = [prometheus_rule(p) for p in RULE_FILES]
    boards = [dashboard_configmap(p) for p in DASHBOARD_FILES]
    return {
        RULES: HEADERS[RULES] + "---\n".join(rules),
        DASHBOARDS: HEADERS[DASHBOARDS] + "---\n".join(boards),
    }


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]


def test_committed_manifests_are_current() -> None:
    for name, text in rendered().items():
        assert (K8S / name).read_text(encoding="utf-8") == text, f"{name}: {REGENERATE}"


def test_every_rules_file_is_a_prometheus_rule_unchanged() -> None:
    monitor = yaml.safe_load((K8S / "50-servicemonitor.yaml").read_text(encoding="utf-8"))
    rules = docs(RULES)
    assert {d["kind"] for d in rules} == {"PrometheusRule"}
    for d in rules:
        # Beside the ServiceMonitor and labelled as it is: the label a Prometheus selects by
        # (kube-prometheus-stack's `release`) goes on both the same way.
        assert d["metadata"]["namespace"] == monitor["metadata"]["namespace"] == NAMESPACE
        assert d["metadata"]["labels"] == monitor["metadata"]["labels"]
    shipped = {
        p.name.removesuffix(".rules.yml"): yaml.safe_load(p.read_text(encoding="utf-8"))
        for p in RULE_FILES
    }
    assert {d["metadata"]["name"]: d["spec"] for d in rules} == shipped, REGENERATE


def test_the_prometheus_rules_pass_promtool(tmp_path: Path) -> None:
    """What the operator's admission webhook checks: each spec is a valid rules file."""
    promtool = tool("prometheus", "promtool")
    files = []
    for d in docs(RULES):
        files.append(tmp_path / f"{d['metadata']['name']}.yml")
        files[-1].write_text(yaml.safe_dump(d["spec"]))
    result = run(promtool, "check", "rules", *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_is_a_configmap_for_the_sidecar() -> None:
    maps = docs(DASHBOARDS)
    assert {d["kind"] for d in maps} == {"ConfigMap"}
    carried = {}
    for d in maps:
        assert d["metadata"]["namespace"] == NAMESPACE
        assert d["metadata"]["labels"].items() >= SIDECAR_LABEL.items()
        carried.update(d["data"])
    shipped = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARD_FILES}
    assert carried == shipped, REGENERATE
    assert all(json.loads(text)["uid"] for text in carried.values())


def test_each_object_fits_a_plain_kubectl_apply() -> None:
    for d in docs(RULES) + docs(DASHBOARDS):
        size = len(json.dumps(d, separators=(",", ":")))
        assert size < APPLY_LIMIT < 1024 * 1024, f"{d['metadata']['name']}: {size} bytes"


if __name__ == "__main__":
    for name, text in rendered().items():
        (K8S / name).write_text(text, encoding="utf-8")
        print(f"wrote deploy/kubernetes/{name}")

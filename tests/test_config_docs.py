"""The config's JSON Schema and docs/config.md: generated from the models, shipped up to date,
and true to every config this repository ships."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import BaseModel, TypeAdapter, ValidationError

from watchdog.cli import STARTER_CONFIG
from watchdog.config.load import KNOWN_APIS, Included, TopLevel
from watchdog.config.schema import (
    SCHEMA_URL,
    config_markdown,
    config_schema,
    config_schema_json,
    key_paths,
)
from watchdog.endpoint import Endpoint, Probe
from watchdog.parsing.fields import Ratio, Seconds, Size

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "deploy" / "config.schema.json"
DOCS = ROOT / "docs" / "config.md"
ETC_CONFIG = ROOT / "deploy" / "etc" / "mlops-watchdog" / "config.yaml"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return config_schema()


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def errors(validator: Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(data)
    ]


def test_the_shipped_schema_is_up_to_date() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == config_schema_json(), (
        "deploy/config.schema.json is stale; run: "
        "mlops-watchdog config schema > deploy/config.schema.json"
    )


def test_the_docs_are_up_to_date() -> None:
    assert DOCS.read_text(encoding="utf-8") == config_markdown(), (
        "docs/config.md is stale; run: python -m watchdog.config.schema docs/config.md"
    )


def test_the_command_prints_the_shipped_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "watchdog.cli", "config", "schema"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert done.stdout == SCHEMA.read_text(encoding="utf-8")


def test_the_schema_is_draft_2020_12_and_refuses_unknown_keys(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_URL
    assert schema["title"]
    assert "${VAR}" in schema["description"]
    objects = [schema, *(d for d in schema["$defs"].values() if "properties" in d)]
    assert len(objects) == len(config_models()) - 1  # Included's keys are the top level's
    assert all(o["additionalProperties"] is False for o in objects)


def test_endpoints_and_probes_are_real_models(schema: dict[str, Any]) -> None:
    assert schema["properties"]["endpoints"]["items"] == {"$ref": "#/$defs/Endpoint"}
    assert schema["properties"]["probes"]["items"] == {"$ref": "#/$defs/Probe"}


def test_the_editor_modeline_points_at_the_schema() -> None:
    first = ETC_CONFIG.read_text(encoding="utf-8").splitlines()[0]
    assert first == f"# yaml-language-server: $schema={SCHEMA_URL}"
    assert SCHEMA_URL.endswith("/deploy/config.schema.json")


def config_models() -> list[type[BaseModel]]:
    """Every model the config file is validated with, from the top level down."""
    found: list[type[BaseModel]] = []
    todo: list[Any] = [TopLevel, Endpoint, Probe, Included]
    while todo:
        item = todo.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item not in found:
                found.append(item)
                todo.extend(f.annotation for f in item.model_fields.values())
        else:
            todo.extend(getattr(item, "__args__", ()))
    return found


def test_every_key_has_a_description() -> None:
    """A new key without a docstring right under it fails here."""
    missing = [
        f"{model.__name__}.{name}"
        for model in config_models()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not missing, f"give these fields a docstring: {missing}"
    undescribed = [m.__name__ for m in config_models() if not (m.__doc__ or "").strip()]
    assert not undescribed, f"give these models a docstring: {undescribed}"


def model_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every key path, read off the models (not the schema)."""
    nested = {"endpoints": Endpoint, "probes": Probe}
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        inner = nested.get(name) if model is TopLevel else None
        annotation = field.annotation
        many = inner is not None or getattr(annotation, "__origin__", None) is list
        for arg in [inner, annotation, *getattr(annotation, "__args__", ())]:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += model_paths(arg, f"{path}[]." if many else f"{path}.")
                break
    return out


def test_every_key_is_in_the_docs() -> None:
    paths = model_paths(TopLevel)
    assert sorted(paths) == sorted(key_paths())
    assert {"storage.path", "endpoints[].timeout_s", "alerting.slack.webhook_url"} <= set(paths)
    docs = DOCS.read_text(encoding="utf-8")
    missing = [p for p in paths if f"| `{p}` |" not in docs]
    assert not missing, f"not in docs/config.md: {missing}"


def test_the_restart_keys_are_the_daemons() -> None:
    """docs/config.md marks what Daemon.reload keeps until a restart: RESTART, the one list."""
    source = (ROOT / "watchdog" / "daemon.py").read_text(encoding="utf-8")
    reload = source.split("    def reload(", 1)[1].split("\n    def ", 1)[0]
    assert "until_restart(" in reload
    docs = DOCS.read_text(encoding="utf-8")
    assert (
        "| `storage.path` | string | `/var/lib/mlops-watchdog/watchdog.db` | after restart |"
        in docs
    )
    assert "| `alerting.remind_every` | duration | `4h` | on reload |" in docs


def shipped_configs() -> list[tuple[str, Any]]:
    """(name, parsed YAML) of every watchdog config this repository ships, as written."""
    found: list[tuple[str, Any]] = [("cli.STARTER_CONFIG", yaml.safe_load(STARTER_CONFIG))]
    for path in [ETC_CONFIG, *sorted((ROOT / "probes").glob("*.yaml"))]:
        found.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text("utf-8"))))
    configmap = ROOT / "deploy" / "kubernetes" / "20-configmap.yaml"
    if configmap.exists():
        data = yaml.safe_load(configmap.read_text("utf-8"))["data"]["config.yaml"]
        found.append((f"{configmap.relative_to(ROOT)}: config.yaml", yaml.safe_load(data)))
    for path in sorted((ROOT / "deploy" / "fleet").glob("*.yaml")):
        data = yaml.safe_load(path.read_text("utf-8"))
        if isinstance(data, dict) and {"endpoints", "include"} & set(data):
            found.append((str(path.relative_to(ROOT)), data))
    readme = (ROOT / "README.md").read_text("utf-8")
    for n, block in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)):
        data = yaml.safe_load(block)
        if isinstance(data, dict) and set(data) <= set(TopLevel.model_fields):
            found.append((f"README.md yaml block {n + 1}", data))
    return found


SHIPPED = shipped_configs()


def test_the_shipped_configs_are_found() -> None:
    names = [name for name, _ in SHIPPED]
    assert "deploy/etc/mlops-watchdog/config.yaml" in names
    assert "probes/vllm.yaml" in names
    assert sum(name.startswith("README.md") for name in names) >= 2


@pytest.mark.parametrize(("name", "data"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_the_schema_accepts_every_shipped_config(
    validator: Draft202012Validator, name: str, data: Any
) -> None:
    assert errors(validator, data) == []


BAD: dict[str, dict[str, Any]] = {
    "unknown top-level key": {"endpoint": []},
    "unknown endpoint key": {
        "endpoints": [{"name": "a", "api": "tgi", "base_url": "http://h", "timeout": 5}]
    },
    "unknown nested key": {"gpu": {"leak": {"windw": "30m"}}},
    "wrong type": {
        "endpoints": [{"name": "a", "api": "tgi", "base_url": "http://h", "headers": 3}]
    },
    "integer as text": {"max_concurrency": "eight"},
    "not a duration": {"probes": [{"endpoint": "a", "golden_set": "g", "every": "1 minute"}]},
    "unknown api": {"endpoints": [{"name": "a", "api": "openai", "base_url": "http://h"}]},
    "bad enum": {"storage": {"responses": "some"}},
    "missing required key": {"endpoints": [{"name": "a", "api": "tgi"}]},
    "unknown alert kind": {"alerting": {"severity": {"outage": "critical"}}},
}


@pytest.mark.parametrize("case", list(BAD))
def test_the_schema_rejects_what_the_config_rejects(
    validator: Draft202012Validator, case: str
) -> None:
    assert errors(validator, BAD[case])
    assert not parses(BAD[case])


def parses(data: dict[str, Any]) -> bool:
    """Whether the models take `data`, endpoints and probes one by one as load_config does."""
    try:
        TopLevel.model_validate(data)
        for item in data.get("endpoints", []):
            Endpoint.model_validate(item, context=KNOWN_APIS)
        for item in data.get("probes", []):
            Probe.model_validate(item)
    except ValidationError:
        return False
    return True


def test_placeholders_stand_for_any_scalar(validator: Draft202012Validator) -> None:
    config = {
        "node": "${NODE_NAME}",
        "max_concurrency": "${MAX}",
        "endpoints": [
            {
                "name": "${NAME}",
                "api": "${API}",
                "base_url": "${URL}",
                "timeout_s": "${TIMEOUT}s",
                "warmup": "${WARMUP}",
                "gpus": ["${GPU}", 0],
            }
        ],
        "gpu": {"enabled": "${GPU_ON}", "leak": {"min_growth": "${GROWTH}"}},
    }
    assert errors(validator, config) == []
    assert errors(validator, {"max_concurrency": "${not-a-name}"})


def accepts(schema: dict[str, Any], definition: str, value: Any) -> bool:
    wrapped = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return not list(Draft202012Validator(wrapped).iter_errors(value))


@pytest.mark.parametrize(
    ("definition", "adapter", "values"),
    [
        (
            "Duration",
            TypeAdapter(Seconds),
            ["90s", "5m", "1h30m", "2d", "1.5h", "250ms", "1w", "60", " 5m ", 60, 0.5,
             "1h 30m", "5 m", "abc", "", "5x", "-5s", "1.s", "s", -1, 0, True],
        ),
        (
            "Size",
            TypeAdapter(Size),
            ["512MiB", "2GiB", "1gb", "10kbit", "100", " 1 GiB ", "1.5GiB", "1k", 1024,
             "abc", "GiB", "1 foo", "1GiBx", -1, 0],
        ),
        (
            "Ratio",
            TypeAdapter(Ratio),
            [0.05, 0, 1, "5%", " 5 %", "100%", ".5%", 5, -0.1, "5", "x%", "%"],
        ),
    ],
)  # fmt: skip
def test_the_schemas_scalars_accept_what_the_parser_accepts(
    schema: dict[str, Any], definition: str, adapter: TypeAdapter[Any], values: list[Any]
) -> None:
    for value in values:
        try:
            adapter.validate_python(value)
            parsed = True
        except ValidationError:
            parsed = False
        assert accepts(schema, definition, value) == parsed, value

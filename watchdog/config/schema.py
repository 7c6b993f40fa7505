"""The config file's JSON Schema and docs/config.md, both made from the models that validate it."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema

from watchdog.alerting.kinds import KINDS
from watchdog.config.load import RESTART, TopLevel
from watchdog.endpoint import NAME, Endpoint, Probe, _gpu_ref
from watchdog.gpu.nvml import CLOCK_EVENT_REASONS
from watchdog.parsing.fields import _ratio, _size, parse_duration
from watchdog.probers import APIS

SCHEMA_URL = (
    "https://raw.githubusercontent.com/mlops-watchdog/mlops-watchdog/main/deploy/config.schema.json"
)
DRAFT = "https://json-schema.org/draft/2020-12/schema"
PLACEHOLDER = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"
_NUMBER = r"[0-9]+(\.[0-9]+)?"
DURATION = rf"^\s*({_NUMBER}|({_NUMBER}(ms|s|m|h|d|w))+)\s*$"  # watchdog/parsing/fields.py
PERCENT = r"^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*%\s*$"
SIZE = r"^\s*[0-9]*\.?[0-9]+\s*([KkMmGgTtPpEe]([Ii]?[Bb]([Ii][Tt])?)?|[Bb]([Ii][Tt])?)?\s*$"
GPU = r"^(GPU|MIG)-[0-9a-fA-F-]{8,}$"
URL = r"^https?://[^/\s]+"
ROUTE = r"^(/|$)"
# Scalars made by a BeforeValidator: each has a $defs entry that says what the parser accepts.
_KINDS: dict[Callable[[Any], Any], str] = {
    parse_duration: "Duration",
    _ratio: "Ratio",
    _size: "Size",
    _gpu_ref: "GpuRef",
}
_REF = "#/$defs/"
_NULL = {"type": "null"}
_PLACEHOLDER_REF = {"$ref": f"{_REF}Placeholder"}
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _hints() -> dict[tuple[str, str], dict[str, Any]]:
    """What field validators check, said in the schema too: (model, field) → keywords."""
    url = {"pattern": URL}
    route = {"pattern": ROUTE}
    return {
        ("TopLevel", "heartbeat_url"): url,
        ("Endpoint", "api"): {"enum": list(APIS)},
        ("Endpoint", "base_url"): url,
        ("Endpoint", "metrics_url"): url,
        ("Endpoint", "path"): route,
        ("Endpoint", "health_path"): route,
        ("Endpoint", "ready_path"): route,
        ("Alerting", "runbook_base_url"): url,
        ("Alerting", "severity"): {"propertyNames": {"enum": list(KINDS)}},
        ("Slack", "webhook_url"): {"pattern": "^https?://"},
        ("AlertmanagerPush", "urls"): url,
        ("Throttle", "reasons"): {"enum": list(CLOCK_EVENT_REASONS)},
        ("Gpu", "currency"): {"pattern": "^[A-Z]{3}$"},
        ("Otlp", "endpoint"): url,
    }


def _scalar(description: str, number: JsonSchemaValue, pattern: str) -> JsonSchemaValue:
    """A value the loader parses: a number, a string it reads, or a ${VAR} placeholder."""
    return {
        "description": description,
        "anyOf": [number, {"type": "string", "pattern": pattern}, _PLACEHOLDER_REF],
    }


def _special_defs() -> dict[str, JsonSchemaValue]:
    return {
        "Duration": _scalar(
            "A number of seconds, or number-unit parts (ms, s, m, h, d, w) "
            "written together: 90s, 5m, 1h30m, 2d. Longer than zero.",
            {"type": "number", "exclusiveMinimum": 0},
            DURATION,
        ),
        "Ratio": _scalar(
            'A ratio from 0 to 1, or a percentage: 0.05 or "5%".',
            {"type": "number", "minimum": 0, "maximum": 1},
            PERCENT,
        ),
        "Size": _scalar(
            "A size: bytes, or a number with a unit: 512MiB, 2GiB, 1GB.",
            {"type": "integer", "exclusiveMinimum": 0},
            SIZE,
        ),
        "GpuRef": _scalar(
            "A GPU by UUID (GPU-…, from `mlops-watchdog gpu` or `nvidia-smi -L`) "
            "or NVML index (0, 1, …).",
            {"type": "integer", "minimum": 0},
            GPU,
        ),
        "Placeholder": {
            "description": "${VAR}: the value is read from an environment variable (or a "
            "systemd credential) and checked after substitution.",
            "type": "string",
            "pattern": PLACEHOLDER,
        },
    }


class _Generator(GenerateJsonSchema):
    """Pydantic's schema, with the scalars that BeforeValidators parse marked by their kind."""

    def function_before_schema(self, schema: Any) -> JsonSchemaValue:
        kind = _KINDS.get(schema["function"]["function"])
        if kind is None:
            return super().function_before_schema(schema)
        inner = self.generate_inner(schema["schema"])
        return {"x-kind": kind, **{k: v for k, v in inner.items() if k in _BOUNDS.values()}}


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the config file, and of the files it includes."""
    _, generated = models_json_schema(
        [(TopLevel, "validation"), (Endpoint, "validation"), (Probe, "validation")],
        schema_generator=_Generator,
    )
    defs: dict[str, Any] = generated["$defs"]
    hints = _hints()
    for name, model in defs.items():
        model["description"] = _oneline(model.get("description", ""))
        for key, prop in model["properties"].items():
            prop.pop("title", None)
            if "description" in prop:  # pydantic leaves out one that repeats its model's
                prop["description"] = _oneline(prop["description"])
            if extra := hints.pop((name, key), None):
                _hint(prop, extra)
            model["properties"][key] = _placeholders(_kinds(prop))
    if hints:
        raise KeyError(f"schema hints for fields that are gone: {sorted(hints)}")
    top = defs.pop("TopLevel")
    top["properties"]["endpoints"]["items"] = {"$ref": f"{_REF}Endpoint"}
    top["properties"]["probes"]["items"] = {"$ref": f"{_REF}Probe"}
    top.pop("title", None)
    top.pop("description", None)
    defs.update(_special_defs())
    schema = {
        "$schema": DRAFT,
        "$id": SCHEMA_URL,
        "title": "mlops-watchdog config",
        "description": _oneline(
            """The mlops-watchdog config file (/etc/mlops-watchdog/config.yaml), and the files it
            names in `include:` (they hold `endpoints` and `probes` only). Unknown keys are
            errors. `${VAR}` anywhere in a string reads an environment variable; a value of any
            other type (a number, a duration, a boolean) may be written as a string holding
            `${VAR}` too, and is checked after substitution, so here it is accepted as any
            string that contains one. Durations are a number of seconds or a string like 90s,
            5m, 4h. Rules between keys, files the config names and cron lines are checked by
            `mlops-watchdog check`, not by this schema."""
        ),
        **top,
        "$defs": dict(sorted(defs.items())),
    }
    return _tidy(schema)


def config_schema_json() -> str:
    """The schema as deploy/config.schema.json holds it."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def _oneline(text: str) -> str:
    return " ".join(text.split())


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`node` and the schemas of its alternatives, items and map values."""
    yield node
    for child in [*node.get("anyOf", []), node.get("items"), node.get("additionalProperties")]:
        if isinstance(child, dict):
            yield from _walk(child)


def _hint(prop: dict[str, Any], extra: dict[str, Any]) -> None:
    wanted = "object" if "propertyNames" in extra else "string"
    for node in _walk(prop):
        if node.get("type") == wanted:
            node.update(extra)


def _kinds(prop: dict[str, Any]) -> dict[str, Any]:
    """Marked scalars become $refs; their bounds (ge, gt, …) become JSON Schema's names, less
    those the kind's own definition already has."""
    for node in _walk(prop):
        kind = node.pop("x-kind", None)
        for short, long in _BOUNDS.items():
            if short in node:
                node[long] = node.pop(short)
        if kind is None:
            continue
        inherent = _special_defs()[kind]["anyOf"][0]
        for long in _BOUNDS.values():
            if long in node and inherent.get(long) == node[long]:
                del node[long]
        node["$ref"] = f"{_REF}{kind}"
    return prop


def _placeholders(prop: dict[str, Any]) -> dict[str, Any]:
    """`prop`, also accepting a `${VAR}` string wherever a plain string would not do."""
    if prop.get("type") == "array" and isinstance(prop.get("items"), dict):
        prop["items"] = _placeholders(prop["items"])
        return prop
    if prop.get("type") == "object":
        if isinstance(prop.get("additionalProperties"), dict):
            prop["additionalProperties"] = _placeholders(prop["additionalProperties"])
        return prop
    members = prop.get("anyOf", [prop])
    if any("$ref" in m or m == {"type": "string"} for m in members):
        return prop  # a section, a kind that takes ${VAR} itself, or any string
    if "anyOf" in prop:
        prop["anyOf"] = [*members, _PLACEHOLDER_REF]
        return prop
    notes: dict[str, Any] = {k: prop.pop(k) for k in ("default", "description") if k in prop}
    return {"anyOf": [prop, _PLACEHOLDER_REF], **notes}


def _model_ref(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref", "")
    name = ref.removeprefix(_REF)
    return name if ref and name not in (*_KINDS.values(), "Placeholder") else None


def _tidy(value: Any, key: str = "") -> Any:
    """Keys in a fixed order (properties keep the models' order), so the file diffs well."""
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    if not isinstance(value, dict):
        return value
    items = value.items() if key == "properties" else sorted(value.items(), key=_order)
    return {k: _tidy(v, k) for k, v in items}


def _order(item: tuple[str, Any]) -> tuple[int, str]:
    first = ("$schema", "$id", "title", "description", "$ref", "type")
    rank = first.index(item[0]) if item[0] in first else len(first) + (item[0] == "$defs")
    return rank, item[0]


# docs/config.md


def config_markdown() -> str:
    """docs/config.md: every key as a dotted path, with its type, default and meaning."""
    schema = config_schema()
    defs = schema["$defs"]
    out = [
        "<!-- Generated from the config models by watchdog/config/schema.py: edit their docstrings, "
        "not this file. Regenerate with: python -m watchdog.config.schema docs/config.md -->",
        "",
        "# Config reference",
        "",
        INTRO.strip(),
        "",
    ]
    for path, model in _sections(schema):
        out += [f"{'###' if '.' in path else '##'} {f'`{path}`' if path else 'Top level'}", ""]
        if path:
            out += [model["description"], ""]
        if path and _restart(path):
            out += ["Changes to this section apply after a restart, not on reload.", ""]
        out += ["| key | type | default | applies | meaning |", "| --- | --- | --- | --- | --- |"]
        for key, prop in model["properties"].items():
            dotted = f"{path}.{key}" if path else key
            nested = _nested(prop, defs)
            row = [
                f"`{dotted}`",
                _type(prop),
                "required" if key in model.get("required", ()) else _default(prop),
                "after restart" if _restart(dotted) else "on reload",
                prop.get("description") or (nested[1]["description"] if nested else ""),
            ]
            out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        out.append("")
    return "\n".join(out)


def _sections(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(dotted path, model) of the top level and every nested section, depth first."""
    todo: list[tuple[str, dict[str, Any]]] = [("", schema)]
    while todo:
        path, model = todo.pop(0)
        yield path, model
        nested = []
        for key, prop in model["properties"].items():
            found = _nested(prop, schema["$defs"])
            if found:
                dotted = f"{path}.{key}" if path else key
                nested.append((dotted + ("[]" if found[0] else ""), found[1]))
        todo[:0] = nested


def key_paths() -> list[str]:
    """Every key of the config as a dotted path (`endpoints[].timeout_s`), section by section."""
    return [
        f"{path}.{key}" if path else key
        for path, model in _sections(config_schema())
        for key in model["properties"]
    ]


INTRO = """
The config is one YAML file, `/etc/mlops-watchdog/config.yaml` unless `--config` or
`MLOPS_WATCHDOG_CONFIG` names another; `mlops-watchdog check` validates it and every file it
names, and reports every problem at once with its file, line and key.

- **Unknown keys are errors**, at every level: a misspelt key is never silently ignored.
- **`${VAR}`** anywhere in a string reads the environment variable `VAR` (or the systemd
  credential of that name); a missing variable is an error, and values read this way are treated
  as secrets, never echoed back. Numbers, durations and booleans may be written as `"${VAR}"`
  too: they are checked after substitution.
- **Durations** are a number of seconds (`60`) or number-unit parts written together, with
  units `ms`, `s`, `m`, `h`, `d` and `w`: `90s`, `5m`, `1h30m`, `2d`. They must be longer than
  zero. Defaults below are written the same way.
- **Sizes** are bytes or a number with a unit (`512MiB`, `2GiB`); **ratios** are from 0 to 1 or
  a percentage (`0.05` or `"5%"`).
- **Relative paths** are relative to the config file's folder.
- **`include:`** names more files (globs, relative to the config) that hold `endpoints:` and
  `probes:` and nothing else; a probe may name an endpoint of any file.
- **Reload**: `systemctl reload mlops-watchdog` (SIGHUP) reads the config again, refuses it if
  it is invalid, and applies it live, except the keys marked *after restart*: they keep their
  old values until the daemon restarts, and the log names them.

The same contract as a JSON Schema is `deploy/config.schema.json`, printed by
`mlops-watchdog config schema`; with the YAML language server, a first line
`# yaml-language-server: $schema=URL` lets an editor complete and check the file.
"""


def _nested(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[bool, Any] | None:
    """(a list of them?, the model) when `prop` holds a nested model, else None."""
    for node in _walk(prop):
        name = _model_ref(node)
        if name:
            return node is prop.get("items"), defs[name]
    return None


def _restart(path: str) -> bool:
    return any(path == key or path.startswith((f"{key}.", f"{key}[")) for key in RESTART)


_NOUNS = {
    "Duration": ("duration", "durations"),
    "Ratio": ("ratio from 0 to 1, or a percentage", "ratios"),
    "Size": ("size (bytes, or e.g. 512MiB)", "sizes"),
    "GpuRef": ("GPU UUID or NVML index", "GPU UUIDs or NVML indexes"),
}
_PATTERNS = {
    URL: ("http(s) URL", "http(s) URLs"),
    "^https?://": ("http(s) URL", "http(s) URLs"),
    ROUTE: ("route starting with `/`", "routes"),
    NAME: ("name: letters, digits, `_.-`, up to 64", "names"),
    "^[A-Z]{3}$": ("currency code", "currency codes"),
    r"^[^\x00-\x1f\x7f]+$": ("string without control characters", "strings"),
}


def _type(prop: dict[str, Any], plural: bool = False) -> str:
    """What `prop` holds, as an operator reads it: "duration", "integer ≥ 1", "list of strings"."""
    members = [m for m in prop.get("anyOf", [prop]) if m != _PLACEHOLDER_REF and m != _NULL]
    if len(members) > 1:
        return " or ".join(_type(m, plural) for m in members)
    node = members[0]
    ref = node.get("$ref", "").removeprefix(_REF)
    if ref in _NOUNS:
        return _NOUNS[ref][plural] + _bounds(node, "s" if ref == "Duration" else "")
    if ref:
        return "mappings (below)" if plural else "mapping (below)"
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return ("any of " if plural else "one of ") + ", ".join(f"`{v}`" for v in node["enum"])
    kind = node["type"]
    if kind == "array":
        return "list of " + _type(node["items"], plural=True)
    if kind == "object":
        keys = "alert kind" if "propertyNames" in node else "string"
        return f"map of {keys} to {_type(node['additionalProperties'])}"
    if kind == "string" and "pattern" in node:
        text = _PATTERNS.get(node["pattern"], (f"string matching `{node['pattern']}`",) * 2)
        return text[plural] + _lengths(node)
    return kind + ("s" if plural else "") + _bounds(node, "") + _lengths(node)


def _lengths(node: dict[str, Any]) -> str:
    if "minLength" in node or "maxLength" in node:
        return f", {node.get('minLength', 0)} to {node.get('maxLength', '∞')} characters"
    return ""


def _bounds(node: dict[str, Any], unit: str) -> str:
    low = node.get("minimum"), node.get("exclusiveMinimum")
    high = node.get("maximum"), node.get("exclusiveMaximum")
    if low[0] is not None and high[0] is not None:
        return f" from {low[0]:g}{unit} to {high[0]:g}{unit}"
    parts = []
    for value, sign in ((low[0], "≥"), (low[1], ">"), (high[0], "≤"), (high[1], "<")):
        if value is not None:
            parts.append(f"{sign} {value:g}{unit}")
    return (" " + " and ".join(parts)) if parts else ""


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "none"
    value = prop["default"]
    refs = {node.get("$ref", "").removeprefix(_REF) for node in _walk(prop)}
    if value is None:
        return "none"
    if isinstance(value, dict) and value:
        return "see below"
    if "Duration" in refs:
        return f"`{human_duration(float(value))}`"
    if "Size" in refs and isinstance(value, int):
        return f"`{human_size(value)}`"
    if isinstance(value, list) and value:
        return ", ".join(f"`{v}`" for v in value)
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(value)}`"


def human_duration(seconds: float) -> str:
    """60 → 1m, 5400 → 1h30m: the way the config writes durations."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts) or "0s"


def human_size(size: int) -> str:
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def main(argv: list[str]) -> int:
    """`python -m watchdog.config.schema FILE…`: write each .json file the schema, each .md the docs."""
    if not argv or any(Path(a).suffix not in (".json", ".md") for a in argv):
        print("usage: python -m watchdog.config.schema deploy/config.schema.json docs/config.md")
        return 2
    for name in argv:
        text = config_schema_json() if name.endswith(".json") else config_markdown()
        Path(name).write_text(text, encoding="utf-8")
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

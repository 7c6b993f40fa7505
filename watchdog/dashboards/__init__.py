"""Grafana dashboards as code: render them, write them to a folder, list their queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SDK = "grafana-foundation-sdk==1769699379!11.6.0"


class SdkMissing(RuntimeError):
    """The dashboards are generated with grafana-foundation-sdk, which is not installed."""


def render() -> dict[str, dict[str, Any]]:
    """{filename: dashboard JSON}, the same on every call."""
    # Imported here: only generating dashboards needs the SDK, not the daemon or the other commands.
    try:
        from watchdog.dashboards import endpoints, gpus
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("grafana_foundation_sdk"):
            raise
        raise SdkMissing(
            f"generating dashboards needs {SDK}: pip install 'mlops-watchdog[dashboards]'"
        ) from None
    return {endpoints.FILENAME: endpoints.render(), gpus.FILENAME: gpus.render()}


def encode(dashboard: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"


def build(out_dir: Path) -> list[Path]:
    """Write every dashboard into `out_dir` and return the paths, in name order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dashboard in sorted(render().items()):
        path = out_dir / name
        path.write_text(encode(dashboard), encoding="utf-8")
        paths.append(path)
    return paths


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(row title, panel title, expr) for every target, in dashboard order; no SDK needed."""
    queries: list[tuple[str, str, str]] = []
    row = ""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            row = panel.get("title", "")
            # A collapsed row holds its panels; an open one is followed by them.
            nested = panel.get("panels") or []
        else:
            nested = [panel]
        for p in nested:
            for target in p.get("targets") or []:
                queries.append((row, p.get("title", ""), target.get("expr", "")))
    return queries

"""Slack Block Kit messages rendered from Jinja2 templates: sandboxed, StrictUndefined, pure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "alert_templates"
EVENTS = ("firing", "reminder", "resolved", "change")


class TemplateProblem(Exception):
    """A template that does not render to a Slack message; the message names the file."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" * bool(days), f"{hours}h" * bool(hours), f"{minutes}m" * bool(minutes)]
    return "".join(parts) or f"{secs}s"


def _mrkdwn(text: object) -> str:
    """Escape Slack's control characters, so a model's answer cannot @channel or forge a link."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


class Renderer:
    def __init__(self, templates_dir: Path | None = None):
        self.dir = templates_dir or SHIPPED
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(self.dir), undefined=StrictUndefined, autoescape=False
        )
        self.env.filters["duration"] = _duration
        self.env.filters["seconds"] = _seconds
        self.env.filters["mrkdwn"] = _mrkdwn

    def render(self, facts: dict[str, Any]) -> dict[str, Any]:
        """The Block Kit message for one outbox row's facts."""
        name = f"{facts['event']}.json.j2"
        try:
            text = self.env.get_template(name).render(**facts)
        except TemplateError as exc:
            raise TemplateProblem(f"{self.dir / name}: {exc}") from None
        try:
            message = json.loads(text)
        except ValueError as exc:
            raise TemplateProblem(f"{self.dir / name}: does not render to JSON: {exc}") from None
        if not isinstance(message.get("text"), str) or not isinstance(message.get("blocks"), list):
            raise TemplateProblem(f"{self.dir / name}: needs a `text` string and a `blocks` list")
        return message

    def check(self) -> list[str]:
        """Render every event with sample facts; each problem names its template."""
        problems = []
        for event in EVENTS:
            for scope in ("endpoint", "gpu"):
                try:
                    self.render(sample_facts(event, scope))
                except TemplateProblem as exc:
                    problems.append(str(exc))
        return list(dict.fromkeys(problems))  # a template broken for both scopes: one line


def sample_facts(event: str, scope: str = "endpoint") -> dict[str, Any]:
    """Facts with every field set, as the alerter writes them (also for golden tests)."""
    if event == "change":
        return {
            "event": "change",
            "incident": "vllm-a:change:9f2c1d0e4b7a",
            "endpoint": "vllm-a",
            "node": "gpu-node-07",
            "kind": "change",
            "change_kind": "template" if scope == "gpu" else "fingerprint",
            "before": "3a1f0c9d2e8b",
            "after": "9f2c1d0e4b7a",
            "detail": "model_ids: meta-llama/Llama-3.1-8B-Instruct → Qwen/Qwen2.5-7B-Instruct",
            "at": "2026-11-23T12:00:00Z",
            "grafana_url": "https://grafana.example/d/mlops-watchdog-endpoints?var-endpoint=vllm-a",
        }
    if scope == "gpu":
        return {
            "event": event,
            "incident": "GPU-9d0155fb-bd15-a06d-ef5d-5ff82a735a68:gpu_vram_leak:20261123T120000Z",
            "endpoint": "GPU-9d0155fb-bd15-a06d-ef5d-5ff82a735a68",
            "node": "gpu-node-07",
            "scope": "gpu",
            "kind": "gpu_vram_leak",
            "kind_title": "VRAM leak",
            "severity": "warning",
            "model": None,
            "failures": 3,
            "since": "2026-11-23T12:00:00Z",
            "at": "2026-11-23T12:00:15Z",
            "duration_s": 900.0 if event == "resolved" else None,
            "summary": "GPU 0 (NVIDIA H100 80GB HBM3): used VRAM grew 20.0 GiB in 30m while "
            "load stayed flat at 99%; most growth: pid 396 python3",
            "error_class": None,
            "error_detail": None,
            "ttft_p50_s": None,
            "e2e_p50_s": None,
            "slo_ttft_s": None,
            "slo_e2e_s": None,
            "grafana_url": None,
            "runbook_url": "https://runbooks.example/mlops-watchdog/gpu_vram_leak.md",
        }
    return {
        "event": event,
        "incident": "vllm-a:format:20261123T120000Z",
        "endpoint": "vllm-a",
        "node": "gpu-node-07",
        "scope": "endpoint",
        "kind": "format",
        "kind_title": "format checks failing",
        "severity": "warning",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "failures": 3,
        "since": "2026-11-23T12:00:00Z",
        "at": "2026-11-23T12:03:00Z",
        "duration_s": 180.0 if event == "resolved" else None,
        "summary": "2/5 prompts: person-json: json_schema: no JSON in 'Sure! Here is'",
        "error_class": "check_failed",
        "error_detail": "json_schema: no JSON in 'Sure! Here is'",
        "ttft_p50_s": 0.42,
        "e2e_p50_s": 2.8,
        "slo_ttft_s": 1.0,
        "slo_e2e_s": 10.0,
        "grafana_url": "https://grafana.example/d/mlops-watchdog-endpoints?var-endpoint=vllm-a",
        "runbook_url": "https://runbooks.example/mlops-watchdog/format.md",
    }

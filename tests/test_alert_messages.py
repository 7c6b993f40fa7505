"""Slack messages: golden Block Kit JSON from the shipped templates, and template errors caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watchdog.alerting.messages import EVENTS, Renderer, TemplateProblem, sample_facts
from watchdog.cli import main

GOLDEN = Path(__file__).parent / "fixtures" / "slack"


@pytest.mark.parametrize("event", EVENTS)
def test_rendered_message_is_golden(event: str) -> None:
    expected = json.loads((GOLDEN / f"{event}.json").read_text(encoding="utf-8"))
    assert Renderer().render(sample_facts(event)) == expected


@pytest.mark.parametrize("event", EVENTS)
def test_gpu_message_is_golden(event: str) -> None:
    expected = json.loads((GOLDEN / f"gpu-{event}.json").read_text(encoding="utf-8"))
    assert Renderer().render(sample_facts(event, "gpu")) == expected


def test_pages_queued_before_the_gpu_upgrade_still_render() -> None:
    facts = sample_facts("firing")
    del facts["scope"]  # outbox rows written by an older version
    assert Renderer().render(facts) == Renderer().render(sample_facts("firing"))


def test_model_text_cannot_ping_the_channel() -> None:
    facts = {
        **sample_facts("firing"),
        "summary": "<!channel> see <https://evil.example|here> & more",
    }
    text = json.dumps(Renderer().render(facts))
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "&amp; more" in text


def test_missing_facts_are_errors_not_blanks() -> None:
    facts = sample_facts("firing")
    del facts["endpoint"]
    with pytest.raises(TemplateProblem, match=r"firing\.json\.j2: 'endpoint' is undefined"):
        Renderer().render(facts)


def test_sandbox_blocks_unsafe_templates(tmp_path: Path) -> None:
    for event in EVENTS:
        (tmp_path / f"{event}.json.j2").write_text(
            '{"text": {{ endpoint.__class__.__mro__ | tojson }}, "blocks": []}'
        )
    problems = Renderer(tmp_path).check()
    assert len(problems) == len(EVENTS) and all(
        "unsafe" in p or "__class__" in p for p in problems
    ), problems


def test_check_reports_a_broken_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    for event in EVENTS:
        (templates / f"{event}.json.j2").write_text(
            '{"text": {{ endpoint | tojson }}, "blocks": []}'
        )
    (templates / "resolved.json.j2").write_text('{"text": {{ no_such_fact }}}')
    config = tmp_path / "config.yaml"
    config.write_text(
        "alerting: {templates_dir: templates}\n"
        "endpoints: [{name: e, api: openai-chat, base_url: 'http://127.0.0.1:9'}]\n"
    )
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{templates / 'resolved.json.j2'}: 'no_such_fact' is undefined" in err
    assert "1 template problem(s)" in err


def test_every_message_names_the_node_and_old_rows_without_one_still_render() -> None:
    for event in EVENTS:
        assert "gpu-node-07" in Renderer().render(sample_facts(event))["text"]
        facts = sample_facts(event)
        del facts["node"]  # outbox rows written before nodes had names
        assert " on " not in Renderer().render(facts)["text"]


def test_pages_link_their_runbook_and_rows_from_before_runbooks_still_render() -> None:
    for event in ("firing", "reminder", "resolved"):
        message = json.dumps(Renderer().render(sample_facts(event)))
        assert '"Runbook"' in message and "mlops-watchdog/format.md" in message
        facts = sample_facts(event)
        del facts["runbook_url"]
        assert '"Runbook"' not in json.dumps(Renderer().render(facts))

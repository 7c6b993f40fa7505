"""Silences from the CLI, maintenance windows from config: when an alert is recorded, not sent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from watchdog.alerting.settings import Maintenance
from watchdog.alerting.silences import Silence, why_quiet
from watchdog.cli import main

SUNDAY_2AM_BERLIN = Maintenance(
    cron="0 2 * * 0",
    duration=7200,
    timezone="Europe/Berlin",
    endpoints=["vllm"],
    reason="weekly update",
)


@pytest.mark.parametrize(
    ("utc", "quiet"),
    [
        (datetime(2026, 11, 22, 0, 59, tzinfo=UTC), False),  # 01:59 CET
        (datetime(2026, 11, 22, 1, 0, tzinfo=UTC), True),  # 02:00 CET
        (datetime(2026, 11, 22, 2, 59, tzinfo=UTC), True),
        (datetime(2026, 11, 22, 3, 0, tzinfo=UTC), False),  # 04:00 CET: over
        (datetime(2026, 7, 5, 0, 30, tzinfo=UTC), True),  # 02:30 CEST: summer time too
        (datetime(2026, 7, 5, 1, 30, tzinfo=UTC), True),
        (datetime(2026, 7, 5, 2, 0, tzinfo=UTC), False),
        (datetime(2026, 11, 23, 1, 30, tzinfo=UTC), False),  # a Monday
    ],
)
def test_maintenance_window_follows_local_time(utc: datetime, quiet: bool) -> None:
    reason = why_quiet("vllm", "timeout", utc, [], [SUNDAY_2AM_BERLIN])
    assert (reason is not None) == quiet
    assert why_quiet("other", "timeout", utc, [], [SUNDAY_2AM_BERLIN]) is None


def test_silence_matches_endpoint_and_kind() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    s = Silence(
        1, "vllm", "format", "2026-11-23T12:00:00Z", "2026-11-23T14:00:00Z", "known bad JSON", "ana"
    )
    assert (
        why_quiet("vllm", "format", now, [s], [])
        == "silenced until 2026-11-23T14:00:00Z by ana: known bad JSON"
    )
    assert why_quiet("vllm", "timeout", now, [s], []) is None
    everything = Silence(2, "*", "", "", "2026-11-23T14:00:00Z", "datacentre move", "ana")
    assert why_quiet("any", "timeout", now, [everything], []) is not None


def test_silence_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", str(tmp_path)]) == 0
    config = ["--config", str(tmp_path / "config.yaml")]
    capsys.readouterr()
    assert main(["silence", "list", *config]) == 0
    assert capsys.readouterr().out == "no active silences\n"
    add = [
        "silence",
        "add",
        *config,
        "--endpoint",
        "llama-cpp",
        "--for",
        "2h",
        "--reason",
        "driver upgrade",
    ]
    assert main(add) == 0
    assert capsys.readouterr().out == "silence 1 added: llama-cpp every kind for 2h\n"
    assert main(["silence", "list", *config]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0] == "ID  ENDPOINT  KIND  UNTIL  BY  REASON"
    assert listing[1].startswith("1  llama-cpp  *  ") and listing[1].endswith("driver upgrade")
    assert main(["silence", "remove", "1", *config]) == 0
    assert main(["silence", "remove", "1", *config]) == 1
    assert "no active silence 1" in capsys.readouterr().err
    assert (
        main(["silence", "add", *config, "--endpoint", "nope", "--for", "2h", "--reason", "x"]) == 2
    )
    assert (
        "--endpoint: no endpoint named 'nope' (known: llama-cpp, a GPU's UUID, gpus, or *)"
        in capsys.readouterr().err
    )
    assert (
        main(["silence", "add", *config, "--endpoint", "*", "--for", "soon", "--reason", "x"]) == 2
    )
    assert "--for: 'soon' is not a duration" in capsys.readouterr().err

"""A secret written out in a config file that every user can read is a config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchdog import cli
from watchdog.config.load import load_config
from watchdog.parsing.permissions import permission_problems, secret_key
from watchdog.parsing.yamlfile import InvalidFile

WEBHOOK = "https://hooks.slack.example/services/T000/B000/s3cr3t-webhook"
ENDPOINT = "endpoints:\n  - {name: e, api: openai-chat, base_url: 'http://h:1'}\n"
FIX = (
    "a secret written out in a file that every user on this host can read (mode {mode}); "
    "read it from ${{VAR}} (an environment variable or a systemd credential) instead, "
    "or make the file private: chmod 640 {file}"
)


def write(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(InvalidFile) as caught:
        load_config(path, env=env or {})
    return [str(p) for p in caught.value.problems]


SLACK = f"alerting:\n  slack:\n    webhook_url: {WEBHOOK}\n{ENDPOINT}"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666])
def test_a_literal_webhook_in_a_world_readable_file_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "config.yaml", SLACK, mode)
    fix = FIX.format(mode=f"{mode:04o}", file=path)
    assert problems(path) == [f"{path}:3: alerting.slack.webhook_url: {fix}"]
    assert all(WEBHOOK not in line for line in problems(path))


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o400])
def test_a_private_file_may_hold_secrets(tmp_path: Path, mode: int) -> None:
    config = load_config(write(tmp_path / "config.yaml", SLACK, mode), env={})
    assert config.alerting.slack and config.alerting.slack.webhook_url == WEBHOOK


def test_a_secret_from_a_variable_may_sit_in_a_world_readable_file(tmp_path: Path) -> None:
    text = (
        "heartbeat_url: ${HEARTBEAT_URL}\n"
        "alerting:\n  slack: {bot_token: '${SLACK_BOT_TOKEN}', channel: '#ops'}\n"
        "endpoints:\n  - name: e\n    api: openai-chat\n    base_url: http://h:1\n"
        "    headers: {Authorization: 'Bearer ${KEY}', X-Api-Key: '${KEY}', Accept: text/plain}\n"
    )
    env = {"HEARTBEAT_URL": "https://hc.example/ping/x", "SLACK_BOT_TOKEN": "xoxb-1", "KEY": "k"}
    config = load_config(write(tmp_path / "config.yaml", text, 0o644), env=env)
    assert config.endpoints["e"].headers["Authorization"] == "Bearer k"


def test_every_kind_of_secret_is_found(tmp_path: Path) -> None:
    text = (
        "heartbeat_url: https://hc.example/ping/0b9e\n"  # 1
        "alerting:\n"
        "  slack: {bot_token: xoxb-123, channel: '#ops'}\n"  # 3
        "endpoints:\n"
        "  - name: e\n"
        "    api: openai-chat\n"
        "    base_url: http://user:pa55@h:1\n"  # 7
        "    headers:\n"
        "      Authorization: Bearer abc\n"  # 9
        "      X-Api-Key: abc\n"  # 10
        "      Ocp-Apim-Subscription-Key: abc\n"  # 11
        "      Content-Type: application/json\n"
        "    reasoning_tokens: 512\n"
    )
    path = write(tmp_path / "config.yaml", text, 0o644)
    fix = FIX.format(mode="0644", file=path)
    assert problems(path) == [
        f"{path}:1: heartbeat_url: {fix}",
        f"{path}:3: alerting.slack.bot_token: {fix}",
        f"{path}:5: endpoints[0]: base_url: it carries a user and password, and headers sets "
        "Authorization too: give the credentials once",
        f"{path}:7: endpoints[0].base_url: {fix}",
        f"{path}:9: endpoints[0].headers.Authorization: {fix}",
        f"{path}:10: endpoints[0].headers.X-Api-Key: {fix}",
        f"{path}:11: endpoints[0].headers.Ocp-Apim-Subscription-Key: {fix}",
    ]


def test_an_included_file_is_judged_by_its_own_mode(tmp_path: Path) -> None:
    (tmp_path / "probes").mkdir()
    main = write(tmp_path / "config.yaml", "include: [probes/*.yaml]\n", 0o644)
    text = "endpoints:\n  - name: e\n    api: tgi\n    base_url: http://h:1\n"
    shared = write(
        tmp_path / "probes" / "a.yaml", text + "    headers: {Authorization: t}\n", 0o644
    )
    private = write(
        tmp_path / "probes" / "b.yaml",
        text.replace("e\n", "f\n") + "    headers: {Authorization: t}\n",
        0o640,
    )
    fix = FIX.format(mode="0644", file=shared)
    assert problems(main) == [f"{shared}:5: endpoints[0].headers.Authorization: {fix}"]
    shared.chmod(0o600)
    assert set(load_config(main, env={}).endpoints) == {"e", "f"}
    assert private.stat().st_mode & 0o777 == 0o640


def test_exposed_secrets_come_with_the_files_other_problems(tmp_path: Path) -> None:
    text = f"listen: nowhere\nalerting:\n  slack: {{webhook_url: '{WEBHOOK}'}}\n{ENDPOINT}"
    path = write(tmp_path / "config.yaml", text, 0o644)
    assert [line.split(": ", 2)[1] for line in problems(path)] == [
        "listen",
        "alerting.slack.webhook_url",
    ]


def test_the_permission_check_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "alerting: {slack: {webhook_url: x}}\n", 0o644)
    (only,) = permission_problems(path)
    assert (only.file, only.line, only.key) == (str(path), 1, "alerting.slack.webhook_url")
    path.chmod(0o600)
    assert permission_problems(path) == []
    assert permission_problems(tmp_path / "missing.yaml") == []


def test_check_reports_it_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "config.yaml", SLACK, 0o644)
    assert cli.main(["check", "--config", str(path)]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{path}:3: alerting.slack.webhook_url: a secret written out" in text
    assert f"chmod 640 {path}" in text and WEBHOOK not in text


@pytest.mark.parametrize(
    ("path", "secret"),
    [
        (("alerting", "slack", "webhook_url"), True),
        (("alerting", "slack", "bot_token"), True),
        (("heartbeat_url",), True),
        (("endpoints", 0, "headers", "Authorization"), True),
        (("endpoints", 0, "headers", "proxy-authorization"), True),
        (("endpoints", 0, "headers", "X-Auth-Token"), True),
        (("endpoints", 0, "headers", "api-key"), True),
        (("endpoints", 0, "headers", "Cookie"), True),
        (("endpoints", 0, "headers", "Accept"), False),
        (("endpoints", 0, "headers", "X-Trace"), False),
        (("some", "api_key"), True),
        (("some", "client_secret"), True),
        (("some", "password"), True),
        (("some", "key"), False),  # only inside headers
        (("endpoints", 0, "reasoning_tokens"), False),
        (("alerting", "slack", "channel"), False),
        (("endpoints", 0, "base_url"), False),
        ((), False),
    ],
)
def test_secret_keys(path: tuple[str | int, ...], secret: bool) -> None:
    assert secret_key(path) is secret

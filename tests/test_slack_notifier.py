"""The Slack notifiers: real slack-sdk clients against the fake Slack, every failure classified."""

from __future__ import annotations

import logging

import pytest

from tests.fakeslack import FakeSlack
from tests.faultserver import free_port
from watchdog.alerting.notifiers.slack import BotNotifier, Delivery, WebhookNotifier

MESSAGE = {
    "text": "page",
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}],
}
SECRET = "S3CRETplanted9f1e"


def test_webhook_delivers_and_carries_the_key() -> None:
    with FakeSlack() as slack:
        assert WebhookNotifier(slack.webhook_url).send(MESSAGE, key="k1") == Delivery(True)
        (got,) = slack.accepted
        assert got["blocks"][0]["block_id"] == "mlops-watchdog:k1" and got["text"] == "page"
    assert "block_id" not in MESSAGE["blocks"][0]  # the caller's message is not touched


def test_bot_threads_and_finds_what_it_sent() -> None:
    with FakeSlack() as slack:
        bot = BotNotifier(slack.token, "#oncall", base_url=slack.api_url)
        first = bot.send(MESSAGE, key="incident:firing")
        assert first.ok and first.ts
        assert bot.send(MESSAGE, key="incident:resolved", thread_ts=first.ts).ok
        assert slack.accepted[1]["thread_ts"] == first.ts
        assert slack.accepted[0]["metadata"] == {
            "event_type": "mlops_watchdog_alert",
            "event_payload": {"key": "incident:firing"},
        }
        assert bot.find_sent("incident:firing") == first.ts
        assert bot.find_sent("never-sent") is None


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            ("status", 429, {"Retry-After": "30"}),
            Delivery(False, "rate_limited", retry_after_s=30.0),
        ),
        (("status", 500), Delivery(False, "server_error")),
        (("status", 503), Delivery(False, "server_error")),
        (("hang", 1.3), Delivery(False, "timeout")),
        (("error", "channel_not_found"), Delivery(False, "rejected", permanent=True)),
    ],
)
@pytest.mark.parametrize("mode", ["webhook", "bot"])
def test_failures_are_classified(
    mode: str, outcome: tuple[object, ...], expected: Delivery
) -> None:
    with FakeSlack() as slack:
        notifier = (
            WebhookNotifier(slack.webhook_url, timeout_s=1)
            if mode == "webhook"
            else BotNotifier(slack.token, "#c", base_url=slack.api_url, timeout_s=1)
        )
        slack.script(outcome)
        assert notifier.send(MESSAGE, key="k") == expected
        assert slack.accepted == []


def test_refused_connection_and_bad_token() -> None:
    port = free_port()
    assert WebhookNotifier(f"http://127.0.0.1:{port}/services/x").send(
        MESSAGE, key="k"
    ) == Delivery(False, "connect")
    with FakeSlack() as slack:
        bad = BotNotifier("xoxb-wrong", "#c", base_url=slack.api_url)
        assert bad.send(MESSAGE, key="k") == Delivery(False, "invalid_auth", permanent=True)


def test_secrets_reach_no_log_and_no_result(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeSlack(webhook_path=f"/services/{SECRET}", token=f"xoxb-{SECRET}") as slack:
        hook = WebhookNotifier(slack.webhook_url, timeout_s=1)
        bot = BotNotifier(slack.token, "#c", base_url=slack.api_url, timeout_s=1)
        outcomes = [
            ("status", 429, {"Retry-After": "1"}),
            ("status", 500),
            ("hang", 1.3),
            ("error", "x"),
            "ok",
        ]
        results = []
        for notifier in (hook, bot):
            for outcome in outcomes:
                slack.script(outcome)
                results.append(notifier.send(MESSAGE, key="k"))
        results.append(
            WebhookNotifier(f"http://127.0.0.1:{free_port()}/{SECRET}").send(MESSAGE, key="k")
        )
        bot.find_sent("k")
    assert SECRET not in repr(results)
    assert SECRET not in caplog.text and all(SECRET not in r.getMessage() for r in caplog.records)

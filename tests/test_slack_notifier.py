"""The Slack notifiers: real slack-sdk clients against the fake Slack, every failure classified."""

from __future__ import annotations

import copy
import logging
import threading
import time

import pytest
from slack_sdk.webhook import WebhookClient

from tests.fakeslack import FakeSlack
from tests.faultserver import free_port
from watchdog.alerting.notifiers.slack import BotNotifier, Delivery, WebhookNotifier

MESSAGE = {
    "text": "page",
    "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "hi"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "more"}]},
    ],
}
SECRET = "S3CRETplanted9f1e"
TIMEOUT_S = 0.3  # the hang outcome outlasts it; the fake wakes hanging handlers on close


def notifier(slack: FakeSlack, mode: str) -> WebhookNotifier | BotNotifier:
    if mode == "webhook":
        return WebhookNotifier(slack.webhook_url, timeout_s=TIMEOUT_S)
    return BotNotifier(slack.token, "#oncall", base_url=slack.api_url, timeout_s=TIMEOUT_S)


def test_webhook_delivers_and_carries_the_key() -> None:
    before = copy.deepcopy(MESSAGE)
    with FakeSlack() as slack:
        assert WebhookNotifier(slack.webhook_url).send(MESSAGE, key="k1") == Delivery(True)
        (got,) = slack.accepted
        assert got["text"] == "page" and got["via"] == "webhook"
        assert got["blocks"][0] == {**MESSAGE["blocks"][0], "block_id": "mlops-watchdog:k1"}
        assert got["blocks"][1] == MESSAGE["blocks"][1]
        assert WebhookNotifier(slack.webhook_url).find_sent("k1") is None  # cannot read back
    assert before == MESSAGE  # the caller's message is not touched


def test_bot_threads_and_finds_what_it_sent() -> None:
    before = copy.deepcopy(MESSAGE)
    with FakeSlack() as slack:
        bot = BotNotifier(slack.token, "#oncall", base_url=slack.api_url)
        first = bot.send(MESSAGE, key="incident:firing")
        assert first.ok and first.ts
        reply = bot.send(MESSAGE, key="incident:resolved", thread_ts=first.ts)
        assert reply.ok and reply.ts != first.ts
        page, resolved = slack.accepted
        assert page["thread_ts"] is None and resolved["thread_ts"] == first.ts
        assert page["blocks"][0]["block_id"] == "mlops-watchdog:incident:firing"
        assert page["metadata"] == {
            "event_type": "mlops_watchdog_alert",
            "event_payload": {"key": "incident:firing"},
        }
        assert bot.find_sent("incident:firing") == first.ts
        assert bot.find_sent("incident:resolved", thread_ts=first.ts) == reply.ts
        assert bot.find_sent("never-sent") is None
        assert bot.find_sent("never-sent", thread_ts=first.ts) is None
    assert before == MESSAGE


def test_after_a_restart_history_needs_the_channel_id() -> None:
    """A fresh notifier finds an earlier page by the channel's ID; a #name cannot read history."""
    with FakeSlack() as slack:
        sent = BotNotifier(slack.token, "#oncall", base_url=slack.api_url).send(MESSAGE, key="k")
        by_id = BotNotifier(slack.token, slack.channel_id("#oncall"), base_url=slack.api_url)
        assert by_id.find_sent("k") == sent.ts
        by_name = BotNotifier(slack.token, "#oncall", base_url=slack.api_url)
        assert by_name.find_sent("k") is None


def test_the_key_is_found_by_block_id_or_by_metadata_alone() -> None:
    with FakeSlack() as slack:
        bot = BotNotifier(slack.token, "C0ONCALL", base_url=slack.api_url)
        no_blocks = bot.send({"text": "plain"}, key="k-meta")
        assert no_blocks.ok and slack.accepted[0]["blocks"] is None
        assert bot.find_sent("k-meta") == no_blocks.ts
        keyed = bot.send(MESSAGE, key="k-block")
        slack.accepted[-1]["metadata"] = None  # as if Slack had dropped it
        assert bot.find_sent("k-block") == keyed.ts


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (
            ("status", 429, {"Retry-After": "30"}),
            Delivery(False, "rate_limited", retry_after_s=30.0),
        ),
        (("status", 500), Delivery(False, "server_error")),
        (("status", 503), Delivery(False, "server_error")),
        (("hang", 5), Delivery(False, "timeout")),
        (("error", "channel_not_found"), Delivery(False, "rejected", permanent=True)),
        (("error", "invalid_payload"), Delivery(False, "rejected", permanent=True)),
    ],
)
@pytest.mark.parametrize("mode", ["webhook", "bot"])
def test_failures_are_classified(
    mode: str, outcome: tuple[object, ...], expected: Delivery
) -> None:
    with FakeSlack() as slack:
        slack.script(outcome)
        assert notifier(slack, mode).send(MESSAGE, key="k") == expected
        assert slack.accepted == [] and slack.attempts == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("invalid_auth", Delivery(False, "invalid_auth", permanent=True)),
        ("token_revoked", Delivery(False, "invalid_auth", permanent=True)),
        ("internal_error", Delivery(False, "server_error")),  # Slack says: transient
        ("invalid_blocks", Delivery(False, "rejected", permanent=True)),
    ],
)
def test_bot_error_codes(code: str, expected: Delivery) -> None:
    with FakeSlack() as slack:
        slack.script(("error", code))
        assert notifier(slack, "bot").send(MESSAGE, key="k") == expected


def test_odd_answers_are_retried_not_dropped() -> None:
    """A 200 that is not Slack's JSON (a proxy's page) and a Retry-After that is not seconds."""
    with FakeSlack() as slack:
        bot = notifier(slack, "bot")
        slack.script(("status", 200), ("status", 429, {"Retry-After": "nan"}))
        assert bot.send(MESSAGE, key="k") == Delivery(False, "server_error")
        assert bot.send(MESSAGE, key="k") == Delivery(False, "rate_limited")


def test_refused_connection_and_bad_credentials() -> None:
    nothing = f"http://127.0.0.1:{free_port()}"
    assert WebhookNotifier(f"{nothing}/services/x").send(MESSAGE, key="k") == Delivery(
        False, "connect"
    )
    bot = BotNotifier("xoxb-t", "C1", base_url=f"{nothing}/api/")
    assert bot.send(MESSAGE, key="k") == Delivery(False, "connect")
    assert bot.find_sent("k") is None
    with FakeSlack() as slack:
        bad = BotNotifier("xoxb-wrong", "#c", base_url=slack.api_url)
        assert bad.send(MESSAGE, key="k") == Delivery(False, "invalid_auth", permanent=True)
        slack.script(("error", "invalid_token"))  # a revoked webhook answers 403
        revoked = WebhookNotifier(slack.webhook_url).send(MESSAGE, key="k")
        assert revoked == Delivery(False, "invalid_auth", permanent=True)


def test_a_failed_history_read_is_not_found_not_raised() -> None:
    with FakeSlack() as slack:
        bot = notifier(slack, "bot")
        assert bot.send(MESSAGE, key="k").ok
        slack.script(("status", 500), ("hang", 5), ("status", 429, {"Retry-After": "1"}))
        assert [bot.find_sent("k") for _ in range(3)] == [None, None, None]
        assert bot.find_sent("k") is not None


def test_slack_sdk_itself_would_log_the_webhook_url(caplog: pytest.LogCaptureFixture) -> None:
    """Why the notifiers hand slack-sdk a mute logger: its default one logs the URL at DEBUG."""
    caplog.set_level(logging.DEBUG)
    with FakeSlack(webhook_path=f"/services/{SECRET}") as slack:
        WebhookClient(slack.webhook_url, retry_handlers=[]).send_dict({"text": "x"})
    assert SECRET in caplog.text


def test_secrets_reach_no_log_no_result_no_exception(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("slack_sdk", "urllib3", "mlops_watchdog"):
        caplog.set_level(logging.DEBUG, logger=name)
    nothing = f"http://127.0.0.1:{free_port()}"
    results: list[object] = []
    with FakeSlack(webhook_path=f"/services/{SECRET}", token=f"xoxb-{SECRET}") as slack:
        hook = WebhookNotifier(slack.webhook_url, timeout_s=TIMEOUT_S)
        bot = BotNotifier(slack.token, "#c", base_url=slack.api_url, timeout_s=TIMEOUT_S)
        outcomes = [
            ("status", 429, {"Retry-After": "1"}),
            ("status", 500),
            ("status", 503),
            ("hang", 5),
            ("error", "channel_not_found"),
            ("error", "invalid_token"),
            ("error", "invalid_auth"),
            "ok",
        ]
        for sender in (hook, bot):
            for outcome in outcomes:
                slack.script(outcome)
                results.append(sender.send(MESSAGE, key="k"))
        results.append(
            BotNotifier("xoxb-wrong", "#c", base_url=slack.api_url).send(MESSAGE, key="k")
        )
        results += [bot.find_sent("k"), bot.find_sent("nope")]
        slack.script(("status", 500))
        results.append(bot.find_sent("k"))
    results.append(WebhookNotifier(f"{nothing}/services/{SECRET}").send(MESSAGE, key="k"))
    results.append(
        BotNotifier(f"xoxb-{SECRET}", "C1", base_url=f"{nothing}/").send(MESSAGE, key="k")
    )
    results.append(WebhookNotifier(f"{nothing}/a b/{SECRET}").send(MESSAGE, key="k"))  # malformed
    classes = {r.error_class for r in results if isinstance(r, Delivery)}
    assert classes == {
        None,
        "rate_limited",
        "server_error",
        "timeout",
        "rejected",
        "invalid_auth",
        "connect",
    }
    assert SECRET not in repr(results)
    assert SECRET not in caplog.text
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert any(r.name == "mlops_watchdog.slack" for r in caplog.records)  # we did log, safely


def test_fakeslack_closes_promptly_under_a_hanging_request() -> None:
    with FakeSlack() as slack:
        slack.script(("hang", 60))
        caller = threading.Thread(
            target=notifier(slack, "webhook").send, args=(MESSAGE,), kwargs={"key": "k"}
        )
        caller.start()
        caller.join(5)
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert not caller.is_alive()

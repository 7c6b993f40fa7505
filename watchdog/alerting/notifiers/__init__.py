"""Notifiers, one module each; `build` picks Slack's from the `alerting:` config. Pushing to
Alertmanager (notifiers/alertmanager.py) reads alert state, not the outbox: the daemon runs it."""

from __future__ import annotations

from watchdog.alerting.notifiers.slack import BotNotifier, WebhookNotifier
from watchdog.alerting.settings import Alerting


def build(settings: Alerting) -> WebhookNotifier | BotNotifier | None:
    slack = settings.slack
    if slack is None or settings.route == "alertmanager":
        return None
    if slack.webhook_url:
        return WebhookNotifier(slack.webhook_url, timeout_s=slack.timeout_s)
    assert slack.bot_token and slack.channel  # enforced by the config model
    return BotNotifier(
        slack.bot_token, slack.channel, base_url=slack.api_url, timeout_s=slack.timeout_s
    )

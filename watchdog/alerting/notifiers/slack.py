"""Slack through slack-sdk: an incoming webhook or a bot token. Thin I/O; never raises for Slack."""

from __future__ import annotations

import http.client
import logging
import socket
import urllib.error
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

log = logging.getLogger("mlops_watchdog.slack")
KEY_PREFIX = "mlops-watchdog:"
EVENT_TYPE = "mlops_watchdog_alert"
AUTH_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}


def _silent_logger() -> logging.Logger:
    """slack-sdk logs request URLs at DEBUG, and a webhook URL is a secret: give it a mute logger."""
    logger = logging.Logger("mlops_watchdog.slack.sdk")  # outside the logging tree on purpose
    logger.disabled = True
    return logger


@dataclass(frozen=True)
class Delivery:
    """The outcome of one send attempt."""

    ok: bool
    error_class: str | None = (
        None  # rate_limited server_error timeout connect invalid_auth rejected
    )
    retry_after_s: float | None = None
    permanent: bool = False
    ts: str | None = None  # bot mode: the posted message, to thread replies under


def _keyed(message: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of the message whose first block carries the idempotency key."""
    blocks = [dict(b) for b in message.get("blocks", [])]
    if blocks:
        blocks[0]["block_id"] = KEY_PREFIX + key
    return {**message, "blocks": blocks}


def _retry_after(headers: Any) -> float | None:
    value = None
    if headers:
        value = headers.get("Retry-After") or headers.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _by_status(status: int, headers: Any, error: str | None = None) -> Delivery:
    if status == 429 or error == "ratelimited":
        return Delivery(False, "rate_limited", retry_after_s=_retry_after(headers))
    if status >= 500:
        return Delivery(False, "server_error")
    if status in (401, 403) or error in AUTH_ERRORS:
        return Delivery(False, "invalid_auth", permanent=True)
    return Delivery(False, "rejected", permanent=True)


def _transport(exc: BaseException) -> Delivery:
    """A network failure, classified without its text (urllib puts the URL in it)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError | socket.timeout):
        return Delivery(False, "timeout")
    return Delivery(False, "connect")


NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)


class WebhookNotifier:
    """An incoming webhook: one channel, no threads, no read-back."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self._client = WebhookClient(
            url, timeout=int(max(1, timeout_s)), retry_handlers=[], logger=_silent_logger()
        )

    def send(self, message: dict[str, Any], *, key: str, thread_ts: str | None = None) -> Delivery:
        try:
            response = self._client.send_dict(_keyed(message, key))
        except NETWORK_ERRORS as exc:
            return _transport(exc)
        if response.status_code == 200:
            return Delivery(True)
        body = response.body.strip() if isinstance(response.body, str) else ""
        return _by_status(response.status_code, response.headers, body or None)

    def find_sent(self, key: str) -> str | None:
        return None  # a webhook cannot read the channel back


class BotNotifier:
    """A bot token and a channel: reminders and resolved messages thread under the page."""

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        base_url: str = "https://slack.com/api/",
        timeout_s: float = 10.0,
    ):
        self.channel = channel  # an ID (C0123…) lets find_sent read history before any send
        self._client = WebClient(
            token=token,
            base_url=base_url if base_url.endswith("/") else base_url + "/",
            timeout=int(max(1, timeout_s)),
            retry_handlers=[],
            logger=_silent_logger(),
        )

    def send(self, message: dict[str, Any], *, key: str, thread_ts: str | None = None) -> Delivery:
        keyed = _keyed(message, key)
        try:
            response = self._client.chat_postMessage(
                channel=self.channel,
                text=keyed.get("text", ""),
                blocks=keyed.get("blocks"),
                thread_ts=thread_ts,
                metadata={"event_type": EVENT_TYPE, "event_payload": {"key": key}},
            )
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            return _by_status(exc.response.status_code, exc.response.headers, data.get("error"))
        except NETWORK_ERRORS as exc:
            return _transport(exc)
        if isinstance(response.get("channel"), str):
            self.channel = response["channel"]  # history needs the ID, not the #name
        return Delivery(True, ts=response.get("ts"))

    def find_sent(self, key: str) -> str | None:
        """Look in recent channel history for a message carrying `key` (after a crash)."""
        try:
            history = self._client.conversations_history(
                channel=self.channel, limit=100, include_all_metadata=True
            )
        except (SlackApiError, *NETWORK_ERRORS):
            log.warning(
                "slack: could not read channel history to settle a page sent before a crash"
            )
            return None
        for message in history.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            block_ids = {b.get("block_id") for b in message.get("blocks") or []}
            if payload.get("key") == key or KEY_PREFIX + key in block_ids:
                return str(message.get("ts"))
        return None

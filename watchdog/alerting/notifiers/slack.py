"""Slack through slack-sdk: an incoming webhook or a bot token. Thin I/O; never raises for Slack."""

from __future__ import annotations

import http.client
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.webhook import WebhookClient

log = logging.getLogger("mlops_watchdog.slack")
KEY_PREFIX = "mlops-watchdog:"
EVENT_TYPE = "mlops_watchdog_alert"
AUTH_ERRORS = {
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "invalid_token",  # a revoked webhook's answer, with HTTP 403
}
# Slack documents these as transient: answered with HTTP 200 and ok:false, yet worth a retry.
TRANSIENT_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
SLACK_CODE = re.compile(r"[a-z0-9_]{1,64}")  # anything else (a proxy's HTML page) is not logged
NETWORK_ERRORS = (OSError, http.client.HTTPException)  # URLError, socket.timeout: OSErrors too


def _silent_logger() -> logging.Logger:
    """slack-sdk logs the request URL at DEBUG, and a webhook URL is a secret: hand it a mute logger."""
    logger = logging.Logger("mlops_watchdog.slack.sdk")  # outside the logging tree on purpose
    logger.setLevel(logging.CRITICAL + 1)  # also skips slack-sdk's `level <= DEBUG` f-strings
    logger.disabled = True
    return logger


@dataclass(frozen=True)
class Delivery:
    """The outcome of one send attempt."""

    ok: bool
    # None when ok, else: rate_limited server_error timeout connect invalid_auth rejected
    error_class: str | None = None
    retry_after_s: float | None = None  # Slack's Retry-After on a 429
    permanent: bool = False  # retrying cannot help
    ts: str | None = None  # bot mode: the posted message, to thread replies under


def _keyed(message: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of the message whose first block carries the idempotency key."""
    blocks = list(message.get("blocks") or [])
    if not blocks:
        return dict(message)
    return {**message, "blocks": [{**blocks[0], "block_id": KEY_PREFIX + key}, *blocks[1:]]}


def _retry_after(headers: Any) -> float | None:
    value: Any = (headers.get("Retry-After") or headers.get("retry-after")) if headers else None
    try:
        seconds = float(value[0] if isinstance(value, list) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return seconds if 0 <= seconds < math.inf else None  # float() also takes "nan" and "inf"


def _failed(status: int, headers: Any, code: str | None) -> Delivery:
    """Classify an answer from Slack (HTTP status, and the error code of its body)."""
    if status == 429 or code == "ratelimited":
        delivery = Delivery(False, "rate_limited", retry_after_s=_retry_after(headers))
    elif status >= 500 or code in TRANSIENT_ERRORS or (status == 200 and code is None):
        delivery = Delivery(False, "server_error")  # 200 without a Slack code: a proxy's page
    elif status in (401, 403) or code in AUTH_ERRORS:
        delivery = Delivery(False, "invalid_auth", permanent=True)
    else:
        delivery = Delivery(False, "rejected", permanent=True)
    wait = f", retry after {delivery.retry_after_s:g}s" if delivery.retry_after_s else ""
    level = logging.WARNING if delivery.permanent else logging.INFO
    log.log(level, "slack: %s (%s%s)", delivery.error_class, code or f"HTTP {status}", wait)
    return delivery


def _unsent(exc: BaseException) -> Delivery:
    """A request that got no answer, classified without its text (urllib may put the URL in it)."""
    if isinstance(exc, UnicodeDecodeError):  # an answer, but not text: a broken peer
        error_class = "server_error"
    elif isinstance(exc, ValueError | SlackRequestError):  # urllib refuses a malformed URL
        log.warning("slack: rejected (the request could not be made: a malformed URL?)")
        return Delivery(False, "rejected", permanent=True)
    elif isinstance(getattr(exc, "reason", exc), TimeoutError):
        error_class = "timeout"
    else:
        error_class = "connect"
    log.info("slack: %s", error_class)
    return Delivery(False, error_class)


class WebhookNotifier:
    """An incoming webhook: one channel, no threads, no read-back."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        self._client = WebhookClient(
            url,
            timeout=timeout_s,  # type: ignore[arg-type]  # urllib takes float seconds; the hint says int
            retry_handlers=[],  # the outbox retries, with backoff
            logger=_silent_logger(),
        )

    def send(self, message: dict[str, Any], *, key: str, thread_ts: str | None = None) -> Delivery:
        try:
            response = self._client.send_dict(_keyed(message, key))
        except (*NETWORK_ERRORS, ValueError, SlackRequestError) as exc:
            return _unsent(exc)
        if response.status_code == 200:
            return Delivery(True)
        body = response.body.strip() if isinstance(response.body, str) else None
        return _failed(response.status_code, response.headers, _slack_code(body))

    def find_sent(self, key: str, thread_ts: str | None = None) -> str | None:
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
            timeout=timeout_s,  # type: ignore[arg-type]  # as above
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
            return _failed(exc.response.status_code, exc.response.headers, _code(exc))
        except (*NETWORK_ERRORS, ValueError, SlackRequestError) as exc:
            return _unsent(exc)
        if isinstance(response.get("channel"), str):
            self.channel = response["channel"]  # history needs the ID, not the #name
        return Delivery(True, ts=response.get("ts"))

    def find_sent(self, key: str, thread_ts: str | None = None) -> str | None:
        """The ts of a recent message carrying `key`, else None: settles a send a crash cut off.

        Replies live in their thread, not in channel history: pass the thread for those.
        """
        try:
            if thread_ts:
                found = self._client.conversations_replies(
                    channel=self.channel, ts=thread_ts, limit=200, include_all_metadata=True
                )
            else:
                found = self._client.conversations_history(
                    channel=self.channel, limit=100, include_all_metadata=True
                )
        except SlackApiError as exc:
            why = _code(exc) or f"HTTP {exc.response.status_code}"
            log.warning("slack: cannot read back what was sent (%s)", why)
            return None
        except (*NETWORK_ERRORS, ValueError, SlackRequestError) as exc:
            _unsent(exc)
            return None
        for message in found.get("messages") or []:
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            block_ids = {b.get("block_id") for b in message.get("blocks") or []}
            if payload.get("key") == key or KEY_PREFIX + key in block_ids:
                return str(message.get("ts"))
        return None


def _code(exc: SlackApiError) -> str | None:
    data = exc.response.data
    return _slack_code(data.get("error") if isinstance(data, dict) else None)


def _slack_code(value: object) -> str | None:
    """Slack's error code, or None for any other text (a proxy's page may echo the URL)."""
    return value if isinstance(value, str) and SLACK_CODE.fullmatch(value) else None

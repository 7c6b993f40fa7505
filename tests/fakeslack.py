"""A fake Slack on loopback: the real slack-sdk clients talk to it over HTTP."""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Outcome = str | tuple[Any, ...]
# What Slack's incoming webhooks answer, by error code (text/plain bodies).
WEBHOOK_STATUS = {
    "invalid_payload": 400,
    "no_text": 400,
    "invalid_token": 403,
    "action_prohibited": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "channel_is_archived": 410,
}


class FakeSlack:
    """`with FakeSlack() as slack:` a webhook and a Web API (`api_url`, `token`) on 127.0.0.1.

    Every request counts in `attempts` and takes the next scripted outcome, if any:
    `slack.script("ok", ("status", 429, {"Retry-After": "2"}), ("status", 503),
    ("hang", seconds), ("error", "channel_not_found"))`. "hang" waits (or until the fake
    closes) and then closes the connection without an answer; "error" is HTTP 200 with
    ok:false on the Web API and Slack's 4xx text on the webhook. With nothing scripted,
    `slack.down = True` answers 500 until set back to False.

    Like Slack: chat.postMessage takes a #name or an ID and answers with the ID, history reads
    need the ID (a name is channel_not_found), history holds top-level messages only
    (replies are read with conversations.replies), and metadata comes back only with
    include_all_metadata. `slack.accepted` lists what was posted, oldest first.
    """

    def __init__(
        self, webhook_path: str = "/services/T000/B000/XXXXXXXX", token: str = "xoxb-test-token"
    ):
        self.token = token
        self.down = False
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self._script: list[Outcome] = []
        self._channels: dict[str, str] = {}  # name -> ID
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._next_ts = 1_700_000_000_000100
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True  # server_close still joins them (block_on_close)
        port = self._server.server_address[1]
        self.webhook_path = webhook_path
        self.webhook_url = f"http://127.0.0.1:{port}{webhook_path}"
        self.api_url = f"http://127.0.0.1:{port}/api/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()  # wakes hanging handlers, so closing does not wait them out
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *outcomes: Outcome) -> None:
        with self._lock:
            self._script.extend(outcomes)

    def channel_id(self, channel: str) -> str:
        """The ID Slack would give a channel name (an ID stays itself)."""
        name = channel.removeprefix("#")
        if name[:1] in ("C", "G") and name.isupper():
            return name
        with self._lock:
            return self._channels.setdefault(name, f"C{len(self._channels) + 1:08d}")

    def _outcome(self) -> Outcome:
        with self._lock:
            self.attempts += 1
            if self._script:
                return self._script.pop(0)
        return ("status", 500) if self.down else "ok"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path, _, query = h.path.partition("?")
        body = _parse(raw, h.headers.get("Content-Type", ""), query)
        outcome = self._outcome()
        webhook = path == self.webhook_path
        if isinstance(outcome, tuple) and outcome[0] == "hang":
            self._closing.wait(outcome[1])
            return
        if isinstance(outcome, tuple) and outcome[0] == "status":
            headers = outcome[2] if len(outcome) > 2 else {}
            if outcome[1] == 429 and not webhook:
                return _json(h, {"ok": False, "error": "ratelimited"}, 429, headers)
            return _reply(h, outcome[1], b"<html>upstream error</html>", "text/html", headers)
        error = outcome[1] if isinstance(outcome, tuple) else None
        if webhook:
            if error:
                return _reply(h, WEBHOOK_STATUS.get(error, 400), error.encode(), "text/plain")
            self._accept(body, "webhook")
            return _reply(h, 200, b"ok", "text/plain")
        if not path.startswith("/api/"):
            return _reply(h, 404, b"no such route", "text/plain")
        auth = h.headers.get("Authorization")
        if auth is None:
            return _json(h, {"ok": False, "error": "not_authed"})
        if auth != f"Bearer {self.token}":
            return _json(h, {"ok": False, "error": "invalid_auth"})
        if error:
            return _json(h, {"ok": False, "error": error})
        method = path.removeprefix("/api/")
        if method == "chat.postMessage":
            message = self._accept(body, "bot")
            view = {k: v for k, v in message.items() if k not in ("channel", "via")}
            return _json(
                h, {"ok": True, "channel": message["channel"], "ts": message["ts"], "message": view}
            )
        if method in ("conversations.history", "conversations.replies"):
            return self._read(h, method, body)
        if method == "auth.test":
            return _json(h, {"ok": True, "user_id": "U0BOT", "team_id": "T000"})
        return _json(h, {"ok": False, "error": "unknown_method"}, 404)

    def _accept(self, body: dict[str, Any], via: str) -> dict[str, Any]:
        channel = self.channel_id(body["channel"]) if body.get("channel") else None
        with self._lock:
            self._next_ts += 100
            ts = f"{self._next_ts // 1_000_000}.{self._next_ts % 1_000_000:06d}"
            message = {
                "text": body.get("text"),
                "blocks": _maybe_json(body.get("blocks")),
                "attachments": _maybe_json(body.get("attachments")),  # Alertmanager's
                "thread_ts": body.get("thread_ts"),
                "channel": channel,
                "metadata": _maybe_json(body.get("metadata")),
                "ts": ts,
                "via": via,
            }
            self.accepted.append(message)
            return message

    def _read(self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any]) -> None:
        channel = str(body.get("channel") or "")
        if channel != self.channel_id(channel):  # a name: Slack wants the ID here
            return _json(h, {"ok": False, "error": "channel_not_found"})
        limit = int(body.get("limit") or 100)
        with self._lock:
            mine = [m for m in self.accepted if m["via"] == "bot" and m["channel"] == channel]
        if method == "conversations.history":
            found = [m for m in reversed(mine) if m["thread_ts"] in (None, m["ts"])][:limit]
        else:
            parent = body.get("ts")
            found = [m for m in mine if parent in (m["ts"], m["thread_ts"])][:limit]
            if not found:
                return _json(h, {"ok": False, "error": "thread_not_found"})
        with_metadata = str(body.get("include_all_metadata")).lower() in ("1", "true")
        messages = []
        for m in found:
            shown = {k: v for k, v in m.items() if k not in ("via", "channel", "metadata")}
            if with_metadata and m["metadata"]:
                shown["metadata"] = m["metadata"]
            messages.append(shown)
        return _json(h, {"ok": True, "messages": messages, "has_more": False})


def _maybe_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _parse(raw: bytes, content_type: str, query: str) -> dict[str, Any]:
    if "json" in content_type and raw:
        return dict(json.loads(raw))
    fields = urllib.parse.parse_qs(raw.decode() + ("&" + query if query else ""))
    return {k: v[0] for k, v in fields.items()}


def _reply(
    h: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    kind: str,
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", kind)
    h.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(body)


def _json(
    h: BaseHTTPRequestHandler,
    data: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> None:
    _reply(h, status, json.dumps(data).encode(), "application/json; charset=utf-8", headers)

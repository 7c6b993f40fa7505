"""A fake Slack on loopback: the real slack-sdk clients talk to it over HTTP.

`slack.down = True` answers 500 to everything until set back; `slack.script(...)` queues the
next answers (`"ok"`, `("status", 429, {"Retry-After": "2"})`, `("status", 500)`,
`("hang", seconds)`, `("error", "channel_not_found")`). `slack.accepted` lists what Slack took.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Outcome = str | tuple[Any, ...]


class FakeSlack:
    def __init__(
        self, webhook_path: str = "/services/T000/B000/XXXXXXXX", token: str = "xoxb-test-token"
    ):
        self.token = token
        self.down = False
        self.accepted: list[dict[str, Any]] = []
        self.attempts = 0
        self._script: list[Outcome] = []
        self._lock = threading.Lock()
        self._next_ts = 1_700_000_000_000100
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                fake._handle(self)

            do_GET = do_POST

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.webhook_path = webhook_path
        self.webhook_url = f"http://127.0.0.1:{port}{webhook_path}"
        self.api_url = f"http://127.0.0.1:{port}/api/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSlack:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def script(self, *outcomes: Outcome) -> None:
        with self._lock:
            self._script.extend(outcomes)

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
        if path == "/api/conversations.history":
            return self._history(h, body)
        outcome = self._outcome()
        if isinstance(outcome, tuple) and outcome[0] == "hang":
            time.sleep(outcome[1])
            return
        if isinstance(outcome, tuple) and outcome[0] == "status":
            headers = outcome[2] if len(outcome) > 2 else {}
            return _reply(h, outcome[1], b"error", "text/plain", headers)
        if path == self.webhook_path:
            if isinstance(outcome, tuple):  # ("error", code): Slack's webhook answers 4xx text
                return _reply(h, 404, outcome[1].encode(), "text/plain")
            self._accept(body, "webhook")
            return _reply(h, 200, b"ok", "text/plain")
        if path == "/api/chat.postMessage":
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                return _json(h, {"ok": False, "error": "invalid_auth"})
            if isinstance(outcome, tuple):
                return _json(h, {"ok": False, "error": outcome[1]})
            message = self._accept(body, "bot")
            return _json(
                h, {"ok": True, "channel": "C0ONCALL", "ts": message["ts"], "message": message}
            )
        if path == "/api/auth.test":
            return _json(h, {"ok": True, "user_id": "U0BOT"})
        return _reply(h, 404, b"no such route", "text/plain")

    def _accept(self, body: dict[str, Any], via: str) -> dict[str, Any]:
        with self._lock:
            self._next_ts += 100
            ts = f"{self._next_ts // 1_000_000}.{self._next_ts % 1_000_000:06d}"
            blocks = body.get("blocks")
            message = {
                "text": body.get("text"),
                "blocks": json.loads(blocks) if isinstance(blocks, str) else blocks,
                "thread_ts": body.get("thread_ts"),
                "channel": body.get("channel"),
                "metadata": json.loads(body["metadata"])
                if isinstance(body.get("metadata"), str)
                else body.get("metadata"),
                "ts": ts,
                "via": via,
            }
            self.accepted.append(message)
            return message

    def _history(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(h, {"ok": False, "error": "invalid_auth"})
        limit = int(body.get("limit") or 100)
        with self._lock:
            messages = [m for m in reversed(self.accepted) if m["via"] == "bot"][:limit]
        return _json(h, {"ok": True, "messages": messages})


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


def _json(h: BaseHTTPRequestHandler, data: dict[str, Any]) -> None:
    _reply(h, 200, json.dumps(data).encode(), "application/json; charset=utf-8")

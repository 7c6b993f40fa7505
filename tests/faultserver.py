"""A real HTTP server on 127.0.0.1 that misbehaves at the byte level, one fault per path."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Any

MAX_HEAD_BYTES = 65536
BOMB_INFLATED_BYTES = 1 << 30  # 1 GiB of zeros
SEND_CHUNK = 65536


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def fault(self) -> str:
        """`X-Fault`, else the name in `/fault/<name>/v1/...`."""
        if "x-fault" in self.headers:
            return self.headers["x-fault"]
        parts = self.path.split("/")
        return parts[2] if len(parts) > 2 and parts[1] == "fault" else ""

    @property
    def wants_stream(self) -> bool:
        try:
            return bool(json.loads(self.body).get("stream"))
        except (ValueError, AttributeError):
            return False


class Conn:
    """One accepted client socket and the ways a fault can (mis)use it."""

    def __init__(self, sock: socket.socket, stop: threading.Event):
        self.sock = sock
        self.stop = stop

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def head(self, status: int, reason: str, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
        self.send(("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1"))

    def respond(
        self, status: int, reason: str, body: bytes, content_type: str, **extra: str
    ) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)), **extra}
        self.head(status, reason, headers)
        self.send(body)

    def sse_head(self, **extra: str) -> None:
        self.head(
            200,
            "OK",
            {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked", **extra},
        )

    def chunk(self, data: bytes) -> None:
        """One HTTP/1.1 chunk; the empty chunk ends the body."""
        self.send(b"%x\r\n%s\r\n" % (len(data), data))

    def pause(self, seconds: float) -> bool:
        """Wait, unless the server is stopping; True means stop now."""
        return self.stop.wait(seconds)

    def wait_for_client_close(self) -> None:
        while self.sock.recv(65536):
            pass

    def reset(self) -> None:
        """Close with SO_LINGER 0, so the peer gets an RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def sse(event: object) -> bytes:
    data = event if isinstance(event, bytes) else json.dumps(event).encode()
    return b"data: " + data + b"\n\n"


def delta(content: str | None = None, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    d: dict[str, Any] = dict(fields)
    if content is not None:
        d["content"] = content
    choice = {"index": 0, "delta": d, "finish_reason": finish}
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "model": "fault",
        "choices": [choice],
    }


USAGE = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}
OK_STREAM = [
    delta(role="assistant"),
    delta("Hello"),
    delta(","),
    delta(" world"),
    delta(finish="stop"),
    USAGE,
]
OK_JSON = {
    "id": "chatcmpl-fault",
    "object": "chat.completion",
    "model": "fault",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world"},
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE["usage"],
}


@cache
def gzip_bomb() -> bytes:
    """gzip of 1 GiB of zeros in about 1 MB, built in well under a second.

    After a full flush deflate starts afresh, so every 1 MiB block of zeros compresses to the same
    bytes: compress two blocks, repeat the second, and write the trailer (CRC-32, size) by hand.
    """
    block = bytes(1 << 20)
    co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    repeat = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(BOMB_INFLATED_BYTES // len(block)):
        crc = zlib.crc32(block, crc)
    final_empty_block = b"\x03\x00"
    trailer = struct.pack("<II", crc, BOMB_INFLATED_BYTES & 0xFFFFFFFF)
    count = BOMB_INFLATED_BYTES // len(block)
    return first + repeat * (count - 1) + final_empty_block + trailer


Fault = Callable[[Conn, Request], None]
JSON = "application/json"


def canned(status: int, body: bytes, content_type: str = JSON, **headers: str) -> Fault:
    """A whole response with an honest Content-Length."""
    reason = REASONS[status]
    return lambda c, r: c.respond(status, reason, body, content_type, **headers)


def stream(*events: object, end: bool = True) -> Fault:
    """SSE over chunked encoding; `end=False` closes (FIN) without the terminating chunk.

    Bytes that start with `data:` go out verbatim (to send what json.dumps cannot).
    """

    def fault(c: Conn, r: Request) -> None:
        c.sse_head()
        for event in events:
            c.chunk(
                event if isinstance(event, bytes) and event.startswith(b"data:") else sse(event)
            )
        if end:
            c.chunk(b"")

    return fault


# --- the faults: each gets the connection after its request was read in full -------------------


def ok(c: Conn, r: Request) -> None:
    if not r.wants_stream:
        c.respond(200, "OK", json.dumps(OK_JSON).encode(), JSON)
        return
    c.sse_head()
    for event in [*OK_STREAM, b"[DONE]"]:
        if c.pause(0.01):  # spaced out so that TTFT, ITL and e2e differ
            return
        c.chunk(sse(event))
    c.chunk(b"")


def hang(c: Conn, r: Request) -> None:
    c.wait_for_client_close()


def headers_then_hang(c: Conn, r: Request) -> None:
    c.sse_head()
    c.wait_for_client_close()


def slow_drip(c: Conn, r: Request) -> None:
    """A valid stream, one byte every 0.3 s, forever."""
    c.sse_head()
    body = sse(delta("drip"))
    i = 0
    while not c.pause(0.3):
        c.chunk(body[i : i + 1])
        i = (i + 1) % len(body)


def gzip_bomb_fault(content_type: str) -> Fault:
    def fault(c: Conn, r: Request) -> None:
        headers = {"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"}
        c.head(200, "OK", {"Content-Type": content_type, **headers})
        view = memoryview(gzip_bomb())
        for start in range(0, len(view), SEND_CHUNK):
            c.chunk(bytes(view[start : start + SEND_CHUNK]))
        c.chunk(b"")

    return fault


def reset_early(c: Conn, r: Request) -> None:
    c.reset()


def reset_mid_stream(c: Conn, r: Request) -> None:
    stream(delta(role="assistant"), delta("Hel"), end=False)(c, r)
    # Let the client read what was sent first: an RST can discard unread bytes at the peer.
    if not c.pause(0.2):
        c.reset()


REASONS = {
    200: "OK",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
CORRUPT_GZIP = GZIP_HEADER + b"\x07 is a reserved deflate block type"
TRUNCATED_GZIP = gzip.compress(json.dumps(OK_JSON).encode())[:60]
NULL_CONTENT = {"role": "assistant", "content": None}
BAD_UTF8 = b'data: {"choices":[{"index":0,"delta":{"content":"\xff\xfe"}}]}\n\n'

FAULTS: dict[str, Fault] = {
    "ok": ok,
    "hang": hang,
    "headers-then-hang": headers_then_hang,
    "slow-drip": slow_drip,
    "429": canned(429, b'{"error":{"message":"slow down"}}', **{"Retry-After": "7"}),
    "500": canned(500, b'{"error":{"message":"CUDA out of memory"}}'),
    "503": canned(503, b"upstream overloaded", "text/plain"),
    "html": canned(200, b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
    "truncated-json": canned(200, b'{"id":"x","choices":[{"index":0,"message":{"content":"hel'),
    "wrong-shape": canned(200, b'{"object":"list","data":[{"id":"fault"}]}'),
    "null-content": canned(
        200, json.dumps({"choices": [{"message": NULL_CONTENT, "finish_reason": "stop"}]}).encode()
    ),
    "stream-cut": stream(delta(role="assistant"), delta("Hel"), end=False),
    "no-done": stream(delta(role="assistant"), delta("Hi"), delta(finish="stop")),
    "error-event": stream(delta("Hel"), {"error": {"message": "boom", "code": 500}}),
    "error-event-no-code": stream(delta("Hel"), {"error": {"message": "boom"}}),
    "error-event-429": stream(delta("Hel"), {"error": {"message": "slow down", "code": 429}}),
    "sse-not-json": stream(b"Hello there"),
    "oversized": canned(200, b'{"pad":"' + b"x" * 200_000 + b'"}'),
    "oversized-stream": stream(*[delta("x" * 1000)] * 300, b"[DONE]"),
    "gzip-bomb": gzip_bomb_fault(JSON),
    "gzip-bomb-stream": gzip_bomb_fault("text/event-stream"),
    "corrupt-gzip": canned(200, CORRUPT_GZIP, **{"Content-Encoding": "gzip"}),
    "truncated-gzip": canned(200, TRUNCATED_GZIP, **{"Content-Encoding": "gzip"}),
    "bad-utf8": stream(delta("Hel"), BAD_UTF8, b"[DONE]"),
    "reset-early": reset_early,
    "reset-mid-stream": reset_mid_stream,
    "not-http": lambda c, r: c.send(b"SSH-2.0-OpenSSH_9.6\r\n"),
}


def free_port() -> int:
    """A port that nothing listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_request(sock: socket.socket) -> Request | None:
    """The whole request, or None when the peer does not speak HTTP (a TLS ClientHello, say)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            return None
        buffer += data
        if not buffer[:1].isalpha() or len(buffer) > MAX_HEAD_BYTES:
            return None
    head, _, body = buffer.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            return None
        body += data
    return Request(method, path, headers, body)


class FaultServer:
    """`with FaultServer() as fs:` serves the faults at `fs.url + "/fault/<name>"`."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)  # the accept loop polls the stop flag
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.default = ""  # the fault for requests that name none: switch an endpoint live
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(
            target=self._accept_loop, name="faultserver-accept", daemon=True
        )

    def __enter__(self) -> FaultServer:
        self._accepter.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, break every open connection, and close all sockets."""
        self._stop.set()
        if self._accepter.is_alive():
            self._accepter.join()
        self._listener.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv or send
        for thread in threads:
            thread.join(timeout=5)
        for sock in conns:
            sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(30)  # a safety net: no fault waits on the client longer than this
            thread = threading.Thread(
                target=self._serve, args=(sock,), name="faultserver-conn", daemon=True
            )
            with self._lock:
                self._conns.add(sock)
                self._threads = [t for t in self._threads if t.is_alive()]
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            request = read_request(sock)
            if request is None:
                Conn(sock, self._stop).respond(400, "Bad Request", b"not HTTP", "text/plain")
            else:
                fault = FAULTS.get(request.fault or self.default)
                if fault is None:
                    body = f"unknown fault {request.fault!r}".encode()
                    Conn(sock, self._stop).respond(404, "Not Found", body, "text/plain")
                else:
                    fault(Conn(sock, self._stop), request)
            _close_gently(sock)
        except OSError:
            pass  # the client gave up (cap reached, deadline, TLS alert): that is the point
        finally:
            sock.close()
            with self._lock:
                self._conns.discard(sock)


def _close_gently(sock: socket.socket) -> None:
    """FIN, then drain what the client still sends, so closing never turns into an RST."""
    if sock.fileno() < 0:
        return
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(1)
    while sock.recv(65536):
        pass

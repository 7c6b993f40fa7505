"""A streaming chat-completion target with a known, fixed delay, for measuring how much the
watchdog's own work inflates the TTFT and e2e it records.

Each POST to /v1/chat/completions is answered as an OpenAI-compatible engine streams: the
headers at once, the first content chunk `--first-ms` after the request arrived, the rest and
`[DONE]` `--last-ms` after it. The server notes, per request, the span id of its `traceparent`
and the delays it actually kept (from the moment the request was read to the moment each write
was made), so the bench can subtract exactly what the server took from what the watchdog
measured. GET /health and /v1/models answer at once.

    python -m bench.delay_server --port 8081 [--port 8082 ...] --first-ms 20 --last-ms 40 \\
        --log served.tsv
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

MODELS = b'{"object":"list","data":[{"id":"canned","object":"model"}]}'
HEALTH = b'{"status":"ok"}'


def chunk(payload: dict[str, object]) -> bytes:
    """One server-sent event as one HTTP chunk."""
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


FIRST = chunk(
    {
        "id": "chatcmpl-delay",
        "object": "chat.completion.chunk",
        "model": "canned",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": "Paris"}, "finish_reason": None}
        ],
    }
)
LAST = (
    chunk(
        {
            "id": "chatcmpl-delay",
            "object": "chat.completion.chunk",
            "model": "canned",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
        }
    )
    + b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
    b"Cache-Control: no-cache\r\n\r\n"
)


def plain(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class Served:
    """What the server kept, one row per streamed answer: wall time the request was read,
    its span id, and the seconds to the first and the last write."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, float, float]] = []

    def write(self, path: Path) -> None:
        path.write_text("".join(f"{t:.6f}\t{s}\t{a:.6f}\t{b:.6f}\n" for t, s, a, b in self.rows))


class Delayed(asyncio.Protocol):
    def __init__(self, served: Served, first_s: float, last_s: float) -> None:
        self.served, self.first_s, self.last_s = served, first_s, last_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < head_end + 4 + length:
                return
            self.buffer = self.buffer[head_end + 4 + length :]
            self.answer(method, path, headers)

    def answer(self, method: str, path: str, headers: dict[str, str]) -> None:
        transport = self.transport
        assert transport is not None
        if method == "POST" and path.startswith("/v1/chat/completions"):
            read_at, wall = time.monotonic(), time.time()
            span = headers.get("traceparent", "00-x-x-00").split("-")[2]
            transport.write(STREAM_HEAD)
            loop = asyncio.get_running_loop()
            kept: list[float] = []

            def first() -> None:
                kept.append(time.monotonic() - read_at)
                transport.write(FIRST)

            def last() -> None:
                kept.append(time.monotonic() - read_at)
                transport.write(LAST)
                self.served.rows.append((wall, span, kept[0], kept[1]))

            loop.call_at(read_at + self.first_s, first)
            loop.call_at(read_at + self.last_s, last)
        elif path.startswith("/health"):
            transport.write(plain("200 OK", HEALTH))
        elif path.startswith("/v1/models"):
            transport.write(plain("200 OK", MODELS))
        else:
            transport.write(plain("404 Not Found", b'{"error":"not found"}'))


async def serve(ports: list[int], first_s: float, last_s: float, log: Path) -> None:
    served = Served()
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(
            lambda: Delayed(served, first_s, last_s), "127.0.0.1", port, backlog=4096
        )
        for port in ports
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    served.write(log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port", type=int, action="append", required=True, help="a port to listen on (repeat)"
    )
    parser.add_argument("--first-ms", type=float, default=20)
    parser.add_argument("--last-ms", type=float, default=40)
    parser.add_argument("--log", type=Path, required=True, help="where the kept delays go")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.first_ms / 1000, args.last_ms / 1000, args.log))


if __name__ == "__main__":
    main()

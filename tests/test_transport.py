"""The pooled transport: a keep-alive connection the server drops as we reuse it is not an outage;
a server that drops a fresh connection still is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from watchdog.probers.transport import http_client

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class DroppingServer:
    """Answers the first request on each connection and hangs up on the second, unanswered, the
    way a server closes an idle keep-alive connection just as the client reuses it. With
    `answer_first=False` it hangs up on every request."""

    def __init__(self, answer_first: bool = True) -> None:
        self.answer_first = answer_first
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                self.requests += 1
                if answered or not self.answer_first:
                    break
                writer.write(OK)
                await writer.drain()
                answered += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    servers: list[asyncio.Server] = []

    async def start(handler: DroppingServer) -> str:
        server = await asyncio.start_server(handler.handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"

    yield start
    for server in servers:
        server.close()


async def test_a_post_on_a_reused_connection_the_server_dropped_is_sent_again(serve) -> None:
    handler = DroppingServer()
    url = await serve(handler)
    async with http_client() as client:
        first = await client.post(url, json={"prompt": 1}, timeout=5)
        second = await client.post(url, json={"prompt": 2}, timeout=5)
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {"ok": True}
    assert handler.connections == 2  # the second POST went again, on a fresh connection
    assert handler.requests == 3


async def test_a_fresh_connection_the_server_drops_is_a_failure_sent_once(serve) -> None:
    import httpx

    handler = DroppingServer(answer_first=False)
    url = await serve(handler)
    async with http_client() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="disconnected"):
            await client.post(url, json={"prompt": 1}, timeout=5)
    assert (handler.connections, handler.requests) == (1, 1)


class RecordingProxy:
    """Answers every request and keeps its request line (a proxy sees the absolute URL)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.lines.append(head.split(b"\r\n", 1)[0])
        writer.write(OK)
        await writer.drain()
        writer.close()


async def test_proxies_come_from_the_environment_as_httpx_reads_them(serve, monkeypatch) -> None:
    proxy = RecordingProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = DroppingServer()
    url = await serve(direct)
    try:
        async with http_client() as client:
            via = await client.get("http://gateway.internal:8000/health", timeout=5)
            bypassed = await client.post(url, json={}, timeout=5)
    finally:
        server.close()
    assert via.status_code == 200
    assert proxy.lines[0] == b"GET http://gateway.internal:8000/health HTTP/1.1"
    assert bypassed.status_code == 200
    assert len(proxy.lines) == 1 and direct.connections == 1


class CookieServer:
    """Sets a cookie on every answer and keeps each request's head."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(OK.replace(b"\r\n\r\n", b"\r\nSet-Cookie: lb=node-3\r\n\r\n", 1))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def test_each_probe_stands_alone_without_cookies(serve) -> None:
    """As a blackbox_exporter probe does: a load balancer's sticky cookie is not sent back, so
    every probe meets the endpoint as a new client would."""
    handler = CookieServer()
    server = await asyncio.start_server(handler.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/health"
    try:
        async with http_client() as client:
            first = await client.get(url, timeout=5)
            await client.get(url, timeout=5)
            assert first.headers["set-cookie"] == "lb=node-3"
            assert not client.cookies
    finally:
        server.close()
    assert len(handler.heads) == 2 and not any(b"cookie:" in h.lower() for h in handler.heads)

"""Plain HTTP/1.1 on keep-alive connections (`http11.Pool`, under the transport): a connection is
used again only where its last answer was whole and the server will keep it; anything else gets
a fresh one, and every answer read is its own request's."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable

import pytest

from watchdog.probers import http11
from watchdog.probers.transport import http_client

PAUSED_BODY = b"x" * (4 * http11.PAUSE_AT)


def answer(body: bytes, *head: bytes) -> bytes:
    lines = [b"HTTP/1.1 200 OK", b"Content-Length: %d" % len(body), *head]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Server:
    """Answers each request with what `reply(n)` gives for the n-th request (counted from 1 over
    all connections) and closes the connection after it where `close_after(n)`; remembers each
    request's connection."""

    def __init__(
        self,
        reply: Callable[[int], bytes],
        close_after: Callable[[int], bool] = lambda n: False,
        hold_after: Callable[[int], bool] = lambda n: False,
    ) -> None:
        self.reply, self.close_after, self.hold_after = reply, close_after, hold_after
        self.connection_of: list[int] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = self.connections
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                self.connection_of.append(me)
                n = len(self.connection_of)
                writer.write(self.reply(n))
                await writer.drain()
                if self.hold_after(n):
                    await reader.read()  # until the client hangs up
                    break
                if self.close_after(n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Server], asyncio.Future[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Server) -> str:
        server = await asyncio.start_server(handler.handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/health"

    yield start  # type: ignore[misc]
    for server in servers:
        server.close()


async def test_answers_on_one_kept_connection_are_each_their_own(serve) -> None:
    handler = Server(lambda n: answer(b"%d" % n))
    url = await serve(handler)
    async with http_client() as client:
        texts = [(await client.get(url, timeout=5)).text for _ in range(3)]
    assert texts == ["1", "2", "3"]
    assert handler.connection_of == [1, 1, 1]


async def test_an_answer_that_ends_when_the_server_closes_is_whole(serve) -> None:
    handler = Server(lambda n: b'HTTP/1.1 200 OK\r\n\r\n{"n": %d}' % n, close_after=lambda n: True)
    url = await serve(handler)
    async with http_client() as client:
        first = await client.get(url, timeout=5)
        second = await client.get(url, timeout=5)
    assert (first.json(), second.json()) == ({"n": 1}, {"n": 2})
    assert handler.connection_of == [1, 2]


async def test_a_connection_the_server_says_it_will_close_is_not_used_again(serve) -> None:
    # The server keeps reading after saying so: only the client's word keeps the next request off.
    handler = Server(lambda n: answer(b"ok", b"Connection: close") if n == 1 else answer(b"ok"))
    url = await serve(handler)
    async with http_client() as client:
        await client.get(url, timeout=5)
        await client.get(url, timeout=5)
    assert handler.connection_of == [1, 2]


async def test_an_answer_given_up_midway_takes_its_connection_with_it(serve) -> None:
    """A probe that stops reading (a body over its cap, a deadline) leaves bytes in flight: the
    next request must not read them as its own answer."""
    half = answer(b"a" * 1000)[:-500]
    handler = Server(lambda n: half if n == 1 else answer(b"second"), hold_after=lambda n: n == 1)
    url = await serve(handler)
    async with http_client() as client:
        async with client.stream("GET", url, timeout=5) as response:
            async for _ in response.aiter_raw():
                break
        second = await client.get(url, timeout=5)
    assert second.text == "second"
    assert handler.connection_of == [1, 2]


async def test_bytes_after_an_answer_keep_its_connection_from_being_used_again(serve) -> None:
    handler = Server(lambda n: answer(b"ok") + (b"HTTP/1.1 200 OK\r\n" if n == 1 else b""))
    url = await serve(handler)
    async with http_client() as client:
        await client.get(url, timeout=5)
        second = await client.get(url, timeout=5)
    assert second.text == "ok"
    assert handler.connection_of == [1, 2]


async def test_a_long_answer_read_slowly_arrives_whole(serve) -> None:
    """Reading stops while more than PAUSE_AT bytes wait unread, and starts again as they are
    taken."""
    handler = Server(lambda n: answer(PAUSED_BODY))
    url = await serve(handler)
    received = b""
    async with http_client() as client:
        async with client.stream("GET", url, timeout=5) as response:
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0)
        again = await client.get(url, timeout=5)
    assert received == PAUSED_BODY and again.content == PAUSED_BODY
    assert handler.connection_of == [1, 1]


async def test_an_idle_connection_is_dropped_before_the_server_would(serve, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(http11.time, "monotonic", lambda: now[0])
    handler = Server(lambda n: answer(b"ok"))
    url = await serve(handler)
    async with http_client() as client:
        await client.get(url, timeout=5)
        now[0] += 3.9
        await client.get(url, timeout=5)
        now[0] += 4.0
        await client.get(url, timeout=5)
    assert handler.connection_of == [1, 1, 2]


async def test_a_connection_whose_answer_ended_while_reading_waited_reads_the_next(serve) -> None:
    """The last bytes of an answer can arrive while reading is held (more than PAUSE_AT unread):
    the connection goes back to the pool with reading held, and the next request takes it up."""
    body = b"y" * (http11.PAUSE_AT + 2)
    handler = Server(lambda n: answer(body))
    url = await serve(handler)
    async with http_client() as client:
        async with client.stream("GET", url, timeout=1) as response:
            await asyncio.sleep(0.2)  # the whole answer read by the loop, none of it taken
            first = await response.aread()
        second = await client.get(url, timeout=1)
    assert first == body and second.content == body
    assert handler.connection_of == [1, 1]


async def test_an_interim_answer_is_not_taken_for_the_answer(serve) -> None:
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    handler = Server(lambda n: hints + answer(b"%d" % n, b"X-Answer: yes"))
    url = await serve(handler)
    async with http_client() as client:
        first = await client.get(url, timeout=5)
        second = await client.get(url, timeout=5)
    assert (first.status_code, first.text, first.headers.get("link")) == (200, "1", None)
    assert first.headers["x-answer"] == "yes" and second.text == "2"
    assert handler.connection_of == [1, 1]


async def test_a_closed_connection_is_freed_at_once_not_by_the_garbage_collector(serve) -> None:
    """At 1,000 endpoints about 100 connections close a second. Each left for the collector (a
    reference cycle) holds its memory until a full collection, which comes rarely in a daemon
    with many long-lived objects."""
    handler = Server(lambda n: answer(b"ok", b"Connection: close"))
    url = await serve(handler)
    gc.collect()
    gc.disable()
    try:
        async with http_client() as client:
            for _ in range(3):
                await client.get(url, timeout=5)
        for _ in range(3):
            await asyncio.sleep(0)  # the transports' connection_lost, on the loop's next turns
        alive = [o for o in gc.get_objects() if isinstance(o, http11._Connection)]
    finally:
        gc.enable()
    assert alive == []
    assert handler.connection_of == [1, 2, 3]

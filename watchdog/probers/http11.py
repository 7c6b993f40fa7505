"""Plain HTTP/1.1 on keep-alive connections, for the requests that need neither TLS nor a proxy:
nearly every probe of a watchdog inside a server room. The answers are parsed by httptools
(llhttp, the parser aiohttp and uvicorn use); the rest of aiohttp's request machinery (its
request and response objects, yarl URLs, multidicts, timers and traces) cost as much as the
request itself (bench/README.md).

The pool keeps aiohttp's promises (transport.py): an idle connection is dropped after
`idle_s`, and a request that fails on a reused connection before any byte of its answer is
sent once more on a fresh one. Failures come out as httpx's exceptions, raised from the
`OSError` or parser error that caused them, with the texts aiohttp's path gives."""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools
import httpx

PAUSE_AT = 1 << 18  # bytes read but not yet taken: stop reading the socket until they are
INTERIM = frozenset({100, 102, 103})  # 1xx answers before the answer (101 switches protocol)
DNS_TTL_S = 10.0  # as aiohttp's resolver cache

SocketFactory = Callable[[Any], socket.socket]
Extensions = Callable[[socket.socket, bool], dict[str, Any]]


class _Disconnected(ConnectionError):
    """The server closed the connection where an answer, or the rest of one, was due."""


class _NotHttp(ValueError):
    """What the server sent is not an HTTP/1.x answer."""


class _Connection(asyncio.Protocol):
    """One TCP connection, and the answer now arriving on it (httptools calls back here)."""

    def __init__(self, key: tuple[str, int], sock: socket.socket) -> None:
        self.key, self.sock = key, sock
        self.transport: asyncio.Transport | None = None
        # It calls back here: dropped when the connection is lost, or each closed connection
        # would wait as a reference cycle for the garbage collector.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.closed = False
        self.used = False  # an earlier request went out on it
        self.idle_since = 0.0
        self.paused = False  # reading the socket waits until the reader takes what was read
        self._clear()

    def _clear(self) -> None:
        self.waiting = False  # a request is on it and its answer is not yet whole
        self.heard = False  # a byte of that answer arrived
        self.headed = False
        self.status = 0
        self.interim = False  # reading a 1xx answer (103 Early Hints), which has no body
        self.complete = False
        self.keep_alive = False
        self.until_eof = True  # neither a length nor chunks: the body ends when the server closes
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.error: BaseException | None = None
        self.wake: asyncio.Future[None] | None = None

    def send(self, data: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self._clear()
        self.waiting = True
        self.wake = loop.create_future()
        self._resume()
        assert self.transport is not None
        self.transport.write(data)

    # asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.waiting:  # bytes nobody asked for: this connection cannot be trusted again
            self.close()
            return
        self.heard = True
        assert self.parser is not None  # no data after the connection is lost
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # llhttp's own words for a first line that is not HTTP name RTSP and ICE as well
            self._fail(_NotHttp("Bad status line" if not self.headers else str(exc)))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed, self.parser = True, None
        if not self.waiting:
            return
        if exc is None and self.headed and self.until_eof:
            self.on_message_complete()
        else:
            self._fail(exc or _Disconnected("Server disconnected"))

    # httptools

    def on_message_begin(self) -> None:
        if not self.waiting:  # a second answer to one request: the connection cannot be trusted
            self.keep_alive = False

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self.until_eof = False

    def on_headers_complete(self) -> None:
        assert self.parser is not None  # called back from its feed_data
        self.status = self.parser.get_status_code()
        if self.status in INTERIM:  # the answer is still to come
            self.interim, self.reason, self.headers = True, b"", []
            return
        self.headed = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete, self.waiting = True, False
        self._wake()

    # the reader

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.waiting = False
        self._wake()

    def _wake(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    async def arrival(self, timeout_s: float | None, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for more of the answer (or its end, or its failure)."""
        if self.wake is None or self.wake.done():
            self.wake = loop.create_future()
        self._resume()
        async with asyncio.timeout(timeout_s):
            await self.wake

    def _resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Keep-alive connections by host and port, on the running loop."""

    def __init__(
        self,
        socket_factory: SocketFactory,
        extensions: Extensions,
        *,
        limit: int,
        idle_s: float,
    ) -> None:
        self._socket, self._extensions = socket_factory, extensions
        self._limit, self._idle_s = limit, idle_s
        self._slots: asyncio.Semaphore | None = None
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._pruning: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(
        self, request: httpx.Request, body: bytes, connect_s: float | None, read_s: float | None
    ) -> httpx.Response:
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        url = request.url
        key = (url.host, url.port or 80)
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head += [b"%s: %s\r\n" % pair for pair in request.headers.raw]
        data = b"".join(head) + b"\r\n" + body
        await self._slots.acquire()
        try:
            for attempt in (1, 2):
                conn = self._reuse(key) if attempt == 1 else None
                if conn is None:
                    conn = await self._connect(key, request, connect_s, loop)
                reused = conn.used
                conn.used = True
                try:
                    stamps = self._extensions(conn.sock, reused)
                    conn.send(data, loop)
                    while not conn.headed and conn.error is None:
                        await conn.arrival(read_s, loop)
                except BaseException as exc:
                    conn.close()
                    if isinstance(exc, TimeoutError):
                        why = "timed out waiting for the answer"
                        raise httpx.ReadTimeout(why, request=request) from exc
                    raise
                if conn.error is None:
                    return httpx.Response(
                        status_code=conn.status,
                        headers=conn.headers,
                        stream=_Body(self, conn, request, read_s, loop),
                        request=request,
                        extensions={"reason_phrase": conn.reason, **stamps},
                    )
                conn.close()
                if attempt == 1 and reused and not conn.heard:
                    continue  # the server closed an idle connection as we reused it
                raise _as_httpx(conn.error, request) from conn.error
            raise AssertionError("unreachable")
        except BaseException:
            self._slots.release()
            raise

    def done(self, conn: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        """The answer on `conn` is read, or given up: keep the connection or close it."""
        assert self._slots is not None
        self._slots.release()
        if not (conn.complete and conn.keep_alive) or conn.closed or self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._pruning is None:
            self._pruning = loop.call_later(self._idle_s, self._prune)

    def _reuse(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_s:
                return conn
            conn.close()
        return None

    def _prune(self) -> None:
        self._pruning = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < self._idle_s]
            for conn in idle:
                if conn not in keep:
                    conn.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._pruning = asyncio.get_running_loop().call_later(self._idle_s, self._prune)

    async def _connect(
        self,
        key: tuple[str, int],
        request: httpx.Request,
        connect_s: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> _Connection:
        host, port = key
        try:
            async with asyncio.timeout(connect_s):
                error: OSError | None = None
                for info in await self._resolve(key, loop):
                    sock = self._socket(info)
                    try:
                        sock.setblocking(False)
                        await loop.sock_connect(sock, info[4])
                        _, conn = await loop.create_connection(
                            functools.partial(_Connection, key, sock), sock=sock
                        )
                        return conn
                    except OSError as exc:
                        sock.close()
                        error = exc
                    except BaseException:  # the deadline, or the run cancelled: no socket left open
                        sock.close()
                        raise
                assert error is not None
                raise error
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"no connection to {host}:{port} within {connect_s:g} s", request=request
            ) from exc
        except OSError as exc:
            why = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else str(exc)
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {why}", request=request
            ) from exc

    async def _resolve(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop) -> list[Any]:
        host, port = key
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
            return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        known = self._addresses.get(key)
        if known is not None and time.monotonic() - known[0] < DNS_TTL_S:
            return known[1]
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self._addresses[key] = (time.monotonic(), infos)
        return infos

    def close(self) -> None:
        self._closed = True
        if self._pruning is not None:
            self._pruning.cancel()
            self._pruning = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Body(httpx.AsyncByteStream):
    def __init__(
        self,
        pool: Pool,
        conn: _Connection,
        request: httpx.Request,
        read_s: float | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # httpx's response and its stream refer to each other: the connection is let go at the
        # close, not when the collector comes round to them.
        self._pool, self._request = pool, request
        self._read_s, self._loop = read_s, loop
        self._connection: _Connection | None = conn

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._connection
        while conn is not None:
            if conn.chunks:
                yield conn.take()
            elif conn.error is not None:
                raise _as_httpx(conn.error, self._request) from conn.error
            elif conn.complete:
                await self.aclose()
                return
            else:
                try:
                    await conn.arrival(self._read_s, self._loop)
                except TimeoutError as exc:
                    raise httpx.ReadTimeout(
                        "timed out waiting for the answer's body", request=self._request
                    ) from exc

    async def aclose(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            self._pool.done(conn, self._loop)


def _as_httpx(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for what broke an answer; the caller chains the original."""
    if isinstance(exc, _NotHttp):
        return httpx.RemoteProtocolError(f"not an HTTP response: {exc}", request=request)
    if isinstance(exc, _Disconnected):
        return httpx.RemoteProtocolError(str(exc), request=request)
    return httpx.ReadError(str(exc) or type(exc).__name__, request=request)

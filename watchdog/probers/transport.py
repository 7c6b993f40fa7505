"""The one HTTP client every probe, identity read and scrape goes through: httpx's client, sending
plain HTTP through `http11.Pool` (keep-alive connections, httptools' parser) and TLS or a proxy
through aiohttp's connection pool.

Why not httpx's own transport: bench/probe_cost.py measured it at most of the daemon's CPU per
probe. Why not PyPI's httpx-aiohttp: it maps a dropped connection to ConnectTimeout, so a server
that hangs up would page as a timeout. Why not aiohttp for plain HTTP too: its request and
response machinery were a quarter of the daemon's CPU per probe with five prompts a run
(bench/README.md).

Two things make the pool safe for a watchdog, where a false outage is a page:
- Idle connections are dropped after 4 s, before the servers' own keep-alive timeouts close them
  under us (uvicorn, and so vLLM, and llama.cpp's cpp-httplib both close at 5 s).
- A request that fails on a reused connection before any byte of the answer is sent once more on
  a fresh one. aiohttp does that itself only for idempotent methods, and a golden prompt is a POST.

Errors come out as httpx's, raised from aiohttp's, so `classify` reads the TLS or DNS cause in
the chain as it does for httpx. Tests may still hand a MockTransport to httpx.AsyncClient.

Each response carries, in its `arrival_age` extension, how long ago the last byte read from its
connection reached this host, and in its `departure_age` how long ago the request left, both as
the kernel stamped them (SO_TIMESTAMPING: receive times with each read, send times on the
socket's error queue). A probe whose thread waited for Python's lock, for the event loop or for
a time slice, before sending or after its answer arrived, is then timed from the request's
departure to the answer's arrival, not from and to the moments it got round to sending and
reading. On a fresh connection the request "left" one TCP handshake before the connection's
first send: the kernel does not stamp the handshake, but it times its round trip (TCP_INFO), so
connecting counts as the network took it, and a wait of the probe's own before or after the
connect does not. A handshake the kernel had to retransmit counts whole, from the probe's start:
that wait was the network's."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import os
import socket
import ssl
import struct
import sys
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from watchdog.probers import http11

MAX_CONNECTIONS = 200
IDLE_S = 4.0  # below the 5 s keep-alive of uvicorn and cpp-httplib
HANDSHAKE_CHECK_S = 1.0  # a TCP connect that tells a silent TLS handshake from a dead port


def http_client() -> httpx.AsyncClient:
    # Timeouts are set per request from each endpoint's `timeout_s`.
    return ProbeClient(transport=PooledTransport(), follow_redirects=False)


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        pass

    def set_cookie_header(self, request: httpx.Request) -> None:
        pass


class ProbeClient(httpx.AsyncClient):
    """Each probe stands alone, as a blackbox_exporter probe does: a cookie an endpoint sets is
    neither kept nor sent back. Reading them was a tenth of the CPU per probe."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, _cookies: object) -> None:
        pass

    async def send_as_is(self, request: httpx.Request) -> httpx.Response:
        """A probe's request, handed to the transport for its URL, its answer left to stream.
        A probe sets its own headers and deadlines, signs nothing, follows no redirect and has
        no hooks: httpx's layers for those had nothing to do, and cost about a seventh of a
        request in process (`client.send` is there for everything else)."""
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        try:
            response = await self._transport_for_url(request.url).handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's own send names it
            raise
        response.request = request
        return response


# Whether this task's last request went out on a connection an earlier request had used.
_REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("reused", default=False)


# This task's last request's connection, where it is a `_Wire` (the kernel stamps it).
_WIRE: contextvars.ContextVar[_Wire | None] = contextvars.ContextVar("wire", default=None)

# Linux's SO_TIMESTAMPING (Python names none of these): each read's ancillary data then says when
# the last packet it read was received, and each send leaves on the socket's error queue, without
# its payload, when it was handed to the network device's queue; both as the first of three
# struct timespecs of CLOCK_REALTIME.
_SO_TIMESTAMPING = 37
_STAMP_FLAGS = (
    1 << 3  # SOF_TIMESTAMPING_RX_SOFTWARE
    | 1 << 4  # SOF_TIMESTAMPING_SOFTWARE: report software stamps
    | 1 << 8  # SOF_TIMESTAMPING_TX_SCHED: a send, as it is queued for the device
    | 1 << 11  # SOF_TIMESTAMPING_OPT_TSONLY: the stamp alone, not the bytes sent
)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(3 * _TIMESPEC.size)
_ERROR_ANCILLARY = _ANCILLARY + socket.CMSG_SPACE(64)  # and a struct sock_extended_err
_FROM_ERROR_QUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000) | socket.MSG_DONTWAIT
_MAX_AGE_S = 60.0  # an older stamp means the wall clock was stepped: trust the read instead
# struct tcp_info: tcpi_rtt (microseconds) and tcpi_total_retrans, each a u32.
_TCP_INFO_SIZE, _RTT_AT, _RETRANS_AT = 104, 68, 100


def _stamped(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's stamp among a read's ancillary data, as a time.perf_counter() reading."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPING:
            seconds, nanoseconds = _TIMESPEC.unpack(data[: _TIMESPEC.size])
            age = time.time() - seconds - nanoseconds / 1e9
            if 0.0 <= age < _MAX_AGE_S:
                return time.perf_counter() - age
    return None


def _handshake_s(sock: socket.socket) -> float | None:
    """The TCP handshake's round trip as the kernel timed it, in seconds, read before the
    connection's first send (when it is the only sample); None where the kernel does not say,
    or where something was sent again (a lost SYN): that wait must count."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except (OSError, AttributeError):
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    (rtt_us,) = struct.unpack_from("@I", info, _RTT_AT)
    (retransmitted,) = struct.unpack_from("@I", info, _RETRANS_AT)
    return rtt_us / 1e6 if rtt_us and not retransmitted else None


class _Wire(socket.socket):
    """A TCP socket that remembers when the bytes it last read reached this host, when the
    request now on it left, and when the connection began.

    asyncio's transport reads with `recv` (`recv_into` under TLS); here those are `recvmsg`,
    whose ancillary data carries the kernel's receive time of the last packet read. A read with
    no stamp counts as arriving as it is read. Send stamps wait on the error queue, which keeps
    the socket signalled until it is read: each send reads its own at once, and each read reads
    whatever is left, so the event loop is never woken for them."""

    arrived = 0.0  # time.perf_counter() of the last read's last packet
    sent: float | None = None  # the kernel's time.perf_counter() of the request's first send
    opened: float | None = None  # and of the connection's first send (a request or a TLS hello)
    handshake: float | None = None  # seconds: TCP's handshake round trip, where the kernel timed it
    _first = True

    def recv(self, size: int, flags: int = 0) -> bytes:
        self._departures()
        data, ancillary, _, _ = self.recvmsg(size, _ANCILLARY, flags)
        self.arrived = _stamped(ancillary) or time.perf_counter()
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._departures()
        view = memoryview(buffer).cast("B")
        size, ancillary, _, _ = self.recvmsg_into(
            [view[:nbytes] if nbytes else view], _ANCILLARY, flags
        )
        self.arrived = _stamped(ancillary) or time.perf_counter()
        return size

    def send(self, data: Any, flags: int = 0) -> int:
        if self._first:
            self._first, self.handshake = False, _handshake_s(self)
        sent = super().send(data, flags)
        self._departures(at_most=1)
        return sent

    def sendmsg(self, *args: Any) -> int:
        if self._first:
            self._first, self.handshake = False, _handshake_s(self)
        sent = super().sendmsg(*args)
        self._departures(at_most=1)
        return sent

    def _departures(self, at_most: int = 64) -> None:
        """Read send stamps off the error queue; the first since `expect_request` is kept."""
        for _ in range(at_most):
            try:
                _, ancillary, _, _ = self.recvmsg(0, _ERROR_ANCILLARY, _FROM_ERROR_QUEUE)
            except OSError:  # empty (EAGAIN), or no error queue
                return
            stamp = _stamped(ancillary)
            if self.opened is None:
                self.opened = stamp
            if self.sent is None:
                self.sent = stamp

    def expect_request(self) -> None:
        """A request is about to be sent: stamps of earlier sends are not its departure."""
        self._departures()
        self.sent = None

    def age(self) -> float:
        """Seconds since the last byte read so far reached this host."""
        return time.perf_counter() - self.arrived

    def departed(self) -> float | None:
        """Seconds since the request now on this connection left, where the kernel said."""
        return None if self.sent is None else time.perf_counter() - self.sent

    def connected(self) -> float | None:
        """Seconds since this connection began, where the kernel said: its first send less the
        TCP handshake's round trip."""
        if self.opened is None or self.handshake is None:
            return None
        return time.perf_counter() - self.opened + self.handshake


def _wire(addr_info: Any) -> socket.socket:
    """The socket aiohttp connects: a `_Wire` where the kernel can stamp what it sends and
    receives."""
    family, kind, proto, _, _ = addr_info
    if sys.platform != "linux" or family not in (socket.AF_INET, socket.AF_INET6):
        return socket.socket(family, kind, proto)
    sock = _Wire(family, kind, proto)
    with contextlib.suppress(OSError):  # a kernel without it: timed as the probe sends and reads
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPING, _STAMP_FLAGS)
    return sock


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, connecting `_Wire`s, and telling `_REUSED` and `_WIRE` which connection
    each request got. Its trace hooks could say the same, at a quarter of the CPU of a request
    (bench/probe_cost.py)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(socket_factory=self._socket, **kwargs)
        self._used: weakref.WeakSet[object] = weakref.WeakSet()
        self._wires: weakref.WeakValueDictionary[int, _Wire] = weakref.WeakValueDictionary()

    def _socket(self, addr_info: Any) -> socket.socket:
        sock = _wire(addr_info)
        if isinstance(sock, _Wire):
            self._wires[sock.fileno()] = sock
        return sock

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        _REUSED.set(protocol in self._used)
        if protocol is not None:
            self._used.add(protocol)
        sock = connection.transport.get_extra_info("socket") if connection.transport else None
        wire = self._wires.get(sock.fileno()) if sock is not None else None
        if wire is not None:
            wire.expect_request()
        _WIRE.set(wire)
        return connection


class PooledTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tls = ssl.create_default_context()
        # HTTP(S)_PROXY and NO_PROXY, as httpx reads them, looked up once per host: aiohttp's
        # own trust_env reads the environment at every request, half the cost of one.
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_of: dict[tuple[str, str], str | None] = {}
        self._plain = http11.Pool(_wire, _stamps, limit=MAX_CONNECTIONS, idle_s=IDLE_S)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:  # in the running loop, at first use
            connector = _Connector(limit=MAX_CONNECTIONS, keepalive_timeout=IDLE_S, ssl=self._tls)
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,  # httpx decodes, so caps apply to what is decoded
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._open()
        timeout = request.extensions.get("timeout", {})
        body = await request.aread() or None
        proxy = self._proxy(request.url)
        if (
            request.url.scheme == "http"
            and proxy is None
            and request.method != "HEAD"  # an answer with a length and no body
            and "transfer-encoding" not in request.headers  # a body sent in chunks
        ):
            return await self._plain.send(
                request, body or b"", timeout.get("connect"), timeout.get("read")
            )
        for attempt in (1, 2):
            _REUSED.set(False)
            _WIRE.set(None)
            try:
                response = await session.request(
                    request.method,
                    str(request.url),
                    headers=request.headers.multi_items(),
                    data=body,
                    allow_redirects=False,
                    timeout=_timeout(timeout.get("connect"), timeout.get("read")),
                    proxy=proxy,
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                stale = _REUSED.get() and not isinstance(exc, aiohttp.ClientConnectorError)
                if attempt == 1 and stale:
                    continue  # the server closed an idle connection as we reused it
                await _handshake_failure(exc, request, timeout.get("connect"))
                raise _as_httpx(exc, request) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                await _handshake_failure(exc, request, timeout.get("connect"))
                raise _as_httpx(exc, request) from exc
            return httpx.Response(
                status_code=response.status,
                headers=response.raw_headers,
                stream=_Body(response, request),
                request=request,
                extensions=_extensions(response, _WIRE.get(), reused=_REUSED.get()),
            )
        raise AssertionError("unreachable")

    def _proxy(self, url: httpx.URL) -> str | None:
        key = (url.scheme, url.host)
        if key not in self._proxy_of:
            bypass = not self._proxies or urllib.request.proxy_bypass(url.host)
            self._proxy_of[key] = None if bypass else self._proxies.get(url.scheme)
        return self._proxy_of[key]

    async def aclose(self) -> None:
        self._plain.close()
        if self._session is not None:
            await self._session.close()


def _extensions(
    response: aiohttp.ClientResponse, wire: _Wire | None, *, reused: bool
) -> dict[str, Any]:
    reason = {"reason_phrase": (response.reason or "").encode()}
    return reason if wire is None else {**reason, **_ages(wire, reused)}


def _stamps(sock: socket.socket, reused: bool) -> dict[str, Any]:
    """The timing extensions of a request about to be sent on `sock` by `http11.Pool`."""
    if not isinstance(sock, _Wire):
        return {}
    sock.expect_request()
    return _ages(sock, reused)


def _ages(wire: _Wire, reused: bool) -> dict[str, Any]:
    left = wire.departed if reused else wire.connected
    return {"arrival_age": wire.age, "departure_age": left}


async def _handshake_failure(
    exc: BaseException, request: httpx.Request, connect_s: float | None
) -> None:
    """Raise a TLS failure when an https connection failed in its handshake: the server hung up
    or reset it (a TLS terminator that drops it, or a plain-HTTP port), or never answered the
    ClientHello (a plain-HTTP server waits for a request line). aiohttp says only "cannot
    connect" or "connection timeout", which sent on-call to the network instead."""
    if request.url.scheme != "https":
        return
    why = None
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(
        exc.os_error, ConnectionResetError | ConnectionAbortedError
    ):
        how = "reset" if exc.os_error.errno == errno.ECONNRESET else "closed"
        why = f"the server {how} the connection during the TLS handshake"
    elif isinstance(exc, aiohttp.ConnectionTimeoutError) and await _listens(request.url):
        within = f" within {connect_s:g} s" if connect_s else ""
        why = f"no answer to the TLS handshake{within} (the port accepts TCP connections)"
    if why is not None:
        cause = ssl.SSLError(why)
        cause.reason = why  # what the error class's detail reads, as for OpenSSL's own errors
        raise httpx.ConnectError(why, request=request) from cause


async def _listens(url: httpx.URL) -> bool:
    """Whether a plain TCP connection to the URL's port opens within a second."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, url.port or 443), HANDSHAKE_CHECK_S
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


@functools.lru_cache(maxsize=256)
def _timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response, self._request = response, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _as_httpx(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


def _as_httpx(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception for an aiohttp one; the caller chains the original."""
    kind: Any
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, TimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(exc, aiohttp.ClientSSLError):
        kind = httpx.ConnectError
    elif isinstance(exc, aiohttp.ClientConnectorError):  # as an operator reads it: no "ssl:default"
        error = exc.os_error
        why = os.strerror(error.errno) if error.errno and error.errno > 0 else str(error)
        return httpx.ConnectError(
            f"cannot connect to {exc.host}:{exc.port}: {why}", request=request
        )
    elif isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        kind = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        kind = httpx.ReadError
    elif isinstance(exc, aiohttp.ClientResponseError):  # the parser's, not a status
        return httpx.RemoteProtocolError(f"not an HTTP response: {exc.message}", request=request)
    else:
        kind = httpx.RemoteProtocolError
    return kind(str(exc) or type(exc).__name__, request=request)

"""The one HTTP client every probe, identity read and scrape goes through: httpx's client, sending
through aiohttp's connection pool and C parser.

Why not httpx's own transport: bench/probe_cost.py measured it at most of the daemon's CPU per
probe. Why not PyPI's httpx-aiohttp: it maps a dropped connection to ConnectTimeout, so a server
that hangs up would page as a timeout.

Two things make the pool safe for a watchdog, where a false outage is a page:
- Idle connections are dropped after 4 s, before the servers' own keep-alive timeouts close them
  under us (uvicorn, and so vLLM, and llama.cpp's cpp-httplib both close at 5 s).
- A request that fails on a reused connection before any byte of the answer is sent once more on
  a fresh one. aiohttp does that itself only for idempotent methods, and a golden prompt is a POST.

Errors come out as httpx's, raised from aiohttp's, so `classify` reads the TLS or DNS cause in
the chain as it does for httpx. Tests may still hand a MockTransport to httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import os
import ssl
import urllib.request
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

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


# Whether this task's last request went out on a connection an earlier request had used.
_REUSED: contextvars.ContextVar[bool] = contextvars.ContextVar("reused", default=False)


class _Connector(aiohttp.TCPConnector):
    """aiohttp's pool, telling `_REUSED` which connection each request got. Its trace hooks
    could say the same, at a quarter of the CPU of a request (bench/probe_cost.py)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._used: weakref.WeakSet[object] = weakref.WeakSet()

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        protocol = connection.protocol
        _REUSED.set(protocol in self._used)
        if protocol is not None:
            self._used.add(protocol)
        return connection


class PooledTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._tls = ssl.create_default_context()
        # HTTP(S)_PROXY and NO_PROXY, as httpx reads them, looked up once per host: aiohttp's
        # own trust_env reads the environment at every request, half the cost of one.
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_of: dict[tuple[str, str], str | None] = {}

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
        for attempt in (1, 2):
            _REUSED.set(False)
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
                extensions={"reason_phrase": (response.reason or "").encode()},
            )
        raise AssertionError("unreachable")

    def _proxy(self, url: httpx.URL) -> str | None:
        key = (url.scheme, url.host)
        if key not in self._proxy_of:
            bypass = not self._proxies or urllib.request.proxy_bypass(url.host)
            self._proxy_of[key] = None if bypass else self._proxies.get(url.scheme)
        return self._proxy_of[key]

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


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

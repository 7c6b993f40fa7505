"""One HTTP exchange under a total deadline and a body cap, with every failure given its class."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.probers.tracing import with_traceparent
from watchdog.result import Answer, ErrorClass
from watchdog.runtime.clock import Clock

# We decompress ourselves so that the cap applies to decompressed bytes without ever holding
# more than one bounded chunk: httpx would inflate a whole network read at once (gzip bomb).
ACCEPT_ENCODING = "gzip, deflate"
CONNECT_TIMEOUT_S = 10.0  # TCP connect and TLS handshake; the request as a whole gets timeout_s


class Failure(Exception):
    """The endpoint misbehaved: a recorded result, not a bug."""

    def __init__(self, error_class: ErrorClass, detail: str, status_code: int | None = None):
        super().__init__(detail)
        self.error_class: ErrorClass = error_class
        self.detail = detail
        self.status_code = status_code


@dataclass
class Event:
    """One server-sent event and when its last byte arrived (monotonic seconds)."""

    data: str
    at: float
    event: str = "message"


def arrival(response: httpx.Response, clock: Clock, t0: float) -> Callable[[], float]:
    """When the latest byte of `response` read so far arrived, on `clock`'s monotonic time: the
    kernel's receive time where the transport has it (a reader that waited for the loop or for
    Python's lock does not make the answer late), the time of reading otherwise. Never before
    the request started at `t0`, nor before an earlier arrival of the same response: the stamp is
    wall-clock time, and moving it onto the monotonic clock at two instants can differ by a few
    nanoseconds, which would put the first token before the headers it came with."""
    age: Callable[[], float] | None = response.extensions.get("arrival_age")
    if age is None:
        return clock.monotonic

    def arrived() -> float:
        at = max(t0, response.extensions.get("arrived_at", t0), clock.monotonic() - age())
        response.extensions["arrived_at"] = at
        return at

    return arrived


def departure(response: httpx.Response, clock: Clock, t0: float) -> float:
    """When the request left, on `clock`'s monotonic time: the kernel's send time where the
    transport has it (a request that waited for the loop or for Python's lock between `t0` and
    its send is timed from the send), `t0` otherwise."""
    age: Callable[[], float | None] | None = response.extensions.get("departure_age")
    ago = age() if age is not None else None
    return t0 if ago is None else max(t0, clock.monotonic() - ago)


def classify(exc: BaseException, *, got_headers: bool, streaming: bool) -> Failure:
    """Map a transport exception to exactly one error class."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        kind = type(exc).__name__
        return Failure(
            "timeout",
            f"deadline exceeded ({kind})" if kind != "TimeoutError" else "total deadline exceeded",
        )
    chain = _chain(exc)
    for cause in chain:
        if isinstance(cause, ssl.SSLError | ssl.CertificateError):
            return Failure("tls", f"TLS failed: {_reason(cause)}")
        if isinstance(cause, socket.gaierror):
            return Failure("dns", f"host name does not resolve: {_reason(cause)}")
    if not got_headers:
        return Failure("connect", f"connection failed before a response: {_reason(exc)}")
    if streaming:
        return Failure("stream_truncated", f"connection broke mid-stream: {_reason(exc)}")
    return Failure("bad_response", f"connection broke while reading the body: {_reason(exc)}")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None):
        return str(exc.reason)
    # httpx's ReadError has no text; the reset ("Connection reset by peer") is further down.
    text = next((str(e) for e in _chain(exc) if str(e)), type(exc).__name__)
    text = " ".join(text.split())  # one line, for logs and Slack
    return text if len(text) < 200 else text[:199] + "…"


def status_failure(response: httpx.Response, body: bytes) -> Failure:
    code = response.status_code
    snippet = " ".join(body[:200].decode("utf-8", "replace").split())  # one line, for logs
    detail = f"HTTP {code} {response.reason_phrase}" + (f": {snippet}" if snippet else "")
    if code == 429:
        retry = response.headers.get("retry-after")
        return Failure("rate_limited", detail + (f" (Retry-After {retry})" if retry else ""), code)
    return Failure("http_status", detail, code)


def error_message(body: bytes) -> Any:
    """The `error` of a JSON error body (`{"error": ...}`, as Ollama, TGI and Triton send), or
    None when the body is not such an object."""
    try:
        obj = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("error") is not None else None


def message_failure(response: httpx.Response, body: bytes) -> Failure:
    """The status's class, with the server's JSON `error` message as the detail when it sent
    one, and the body's first bytes otherwise."""
    obj = error_message(body)
    if obj is None:
        return status_failure(response, body)
    return status_failure(response, str(obj["error"])[:200].encode())


async def body_chunks(response: httpx.Response, cap: int) -> AsyncIterator[bytes]:
    """The decompressed body in chunks; raises too_large once more than `cap` bytes arrive."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise Failure(
            "too_large",
            f"body of {declared} bytes is over the {cap}-byte cap",
            response.status_code,
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflate: Any = None
    if encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj()
    elif encoding not in ("identity", ""):
        raise Failure(
            "bad_response", f"unsupported Content-Encoding {encoding!r}", response.status_code
        )
    total = 0
    async for raw in response.aiter_raw():
        pending = raw
        while pending:
            if inflate is None:
                chunk, pending = pending, b""
            else:
                try:
                    chunk = inflate.decompress(pending, cap - total + 1)
                except zlib.error as exc:
                    raise Failure(
                        "bad_response", f"corrupt {encoding} body: {exc}", response.status_code
                    ) from None
                pending = inflate.unconsumed_tail
            total += len(chunk)
            if total > cap:
                raise Failure(
                    "too_large",
                    f"body is over the {cap}-byte cap"
                    + (f" (after {encoding} decompression)" if inflate else ""),
                    response.status_code,
                )
            if chunk:
                yield chunk
    if inflate is not None and not inflate.eof:
        raise Failure("bad_response", f"{encoding} body ended before its end", response.status_code)


def decode(data: bytes, what: str, status: int | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failure(
            "bad_response", f"{what} is not valid UTF-8 (byte {exc.start})", status
        ) from None


def parse_json(text: str, what: str, status: int | None) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise Failure(
            "bad_response", f"{what} is not JSON: {exc}; starts {text[:80]!r}", status
        ) from None


async def sse_events(
    response: httpx.Response, cap: int, monotonic: Callable[[], float]
) -> AsyncIterator[Event]:
    """Server-sent events as they arrive, each stamped with its arrival time."""
    buffer = b""
    data: list[str] = []
    event = "message"
    async for chunk in body_chunks(response, cap):
        at = monotonic()
        buffer += chunk
        *lines, buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            line = decode(raw, "the event stream", response.status_code)
            if not line:
                if data:
                    yield Event("\n".join(data), at, event)
                data, event = [], "message"
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
    if data:  # a final event without its blank line still counts as received
        yield Event("\n".join(data), monotonic(), event)


async def json_lines(
    response: httpx.Response, cap: int, monotonic: Callable[[], float]
) -> AsyncIterator[tuple[str, float]]:
    """Newline-delimited lines (NDJSON) as they arrive, each with its arrival time; blanks skipped."""
    buffer = b""
    async for chunk in body_chunks(response, cap):
        at = monotonic()
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = decode(raw, "the line stream", response.status_code).strip()
            if line:
                yield line, at
    if buffer.strip():  # a last line without its newline still counts as received
        yield decode(buffer, "the line stream", response.status_code).strip(), monotonic()


TRANSPORT_ERRORS = (httpx.HTTPError, OSError, TimeoutError, Failure)
ERROR_BODY_BYTES = 4096
Reader = Callable[[httpx.Response, Answer, float], Awaitable[None]]
Refusal = Callable[[httpx.Response, bytes], Failure]


@functools.lru_cache(maxsize=4096)
def _url(url: str) -> httpx.URL:
    return httpx.URL(url)


@contextlib.asynccontextmanager
async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    sent: dict[str, str],
    timeout_s: float,
    body: bytes | None = None,
) -> AsyncIterator[httpx.Response]:
    """`client.stream` for a request that is all ours: its URL parsed once per process and
    nothing merged from the client (no base URL, cookies, auth or default headers are set
    there), which was a third of the daemon's CPU per probe (bench/probe_cost.py)."""
    # Connecting (TLS handshake included) gets half the deadline, at most CONNECT_TIMEOUT_S:
    # a server that never answers the handshake is then told apart from a slow answer.
    connect = min(timeout_s / 2, CONNECT_TIMEOUT_S)
    timeout = {"connect": connect, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
    request = _request(method, _url(url), with_traceparent(sent), body, {"timeout": timeout})
    as_is = getattr(client, "send_as_is", None)  # a ProbeClient's (transport.py)
    response = await (as_is(request) if as_is else client.send(request, stream=True))
    try:
        yield response
    finally:
        await response.aclose()


def _request(
    method: str,
    url: httpx.URL,
    sent: dict[str, str],
    body: bytes | None,
    extensions: dict[str, Any],
) -> httpx.Request:
    """The request httpx would build from `content=body`, with the headers it adds (Host first,
    Content-Length last) written here: its own way normalises every header twice and encodes
    the body through its general path, about 6% of a probe's request in process."""
    named = {k.lower() for k in sent}
    if not body or "content-length" in named or "transfer-encoding" in named:
        return httpx.Request(method, url, headers=sent, content=body, extensions=extensions)
    headers = [] if "host" in named else [("Host", url.netloc.decode("ascii"))]
    headers += [*sent.items(), ("Content-Length", str(len(body)))]
    request = httpx.Request(
        method, url, headers=headers, stream=httpx.ByteStream(body), extensions=extensions
    )
    request.read()  # as httpx does for a body given whole
    return request


def json_bytes(payload: Any) -> bytes:
    """A JSON request body as httpx's `json=` writes it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode()


async def timed(
    client: httpx.AsyncClient,
    clock: Clock,
    method: str,
    url: str,
    timeout_s: float,
    sent: dict[str, str],
    read: Reader,
    *,
    streaming: bool,
    body: bytes | None = None,
    json_body: Any = None,
    refusal: Refusal = status_failure,
) -> Answer:
    """One request under a total deadline: time to headers here, the answer in `read(response,
    answer, t0)`. Never raises for what the endpoint does; a failure is the answer's class.

    Every prober sends through this, so deadlines, error bodies and failure classes agree."""
    if json_body is not None:
        body = json_bytes(json_body)
        if not any(k.lower() == "content-type" for k in sent):
            sent = {**sent, "Content-Type": "application/json"}
    answer = Answer()
    t0 = clock.monotonic()
    got_headers = False
    try:
        async with (
            asyncio.timeout(timeout_s),
            send(client, method, url, sent, timeout_s, body) as response,
        ):
            got_headers = True
            t0 = departure(response, clock, t0)
            answer.ttfb_s = arrival(response, clock, t0)() - t0
            answer.status_code = response.status_code
            if response.status_code >= 400:
                raise refusal(response, await error_body(response))
            await read(response, answer, t0)
    except TRANSPORT_ERRORS as exc:
        failure = classify(exc, got_headers=got_headers, streaming=streaming)
        answer.error_class, answer.error_detail = failure.error_class, failure.detail
        answer.status_code = failure.status_code or answer.status_code
        answer.e2e_s = clock.monotonic() - t0
    return answer


async def ask(
    client: httpx.AsyncClient,
    clock: Clock,
    endpoint: Endpoint,
    url: str,
    sent: dict[str, str],
    stream: bool,
    read_stream: Reader,
    read_whole: Reader,
    *,
    method: str = "POST",
    body: bytes | None = None,
    json_body: Any = None,
    refusal: Refusal = status_failure,
    sse: bool = True,
    empty: str = "no content (finish_reason={finish_reason})",
) -> Answer:
    """One golden prompt asked and timed: `read_stream` reads a streamed answer (with `sse`, only
    when the server answers `text/event-stream`), `read_whole` anything else. An answer with no
    content, no reasoning and no tool calls is `empty_output`, its detail `empty` filled with
    the answer's fields. Never raises for what the endpoint does."""

    async def read(response: httpx.Response, answer: Answer, t0: float) -> None:
        if stream and (not sse or content_type(response) == "text/event-stream"):
            await read_stream(response, answer, t0)
        else:
            await read_whole(response, answer, t0)

    answer = await timed(
        client,
        clock,
        method,
        url,
        endpoint.timeout_s,
        sent,
        read,
        streaming=stream,
        body=body,
        json_body=json_body,
        refusal=refusal,
    )
    if answer.error_class is None and not (
        answer.text.strip() or answer.reasoning or answer.tool_calls
    ):
        answer.error_class = "empty_output"
        answer.error_detail = empty.format(**vars(answer), endpoint=endpoint)
    return answer


async def whole_json(
    response: httpx.Response, cap: int, answer: Answer, t0: float, clock: Clock
) -> Any:
    """A whole JSON body read under the cap, its arrival timed as the answer's e2e; a body that
    is not UTF-8, not JSON, or labelled another type is `bad_response`."""
    status = response.status_code
    body = b"".join([c async for c in body_chunks(response, cap)])
    answer.e2e_s = arrival(response, clock, t0)() - t0
    text = decode(body, "the body", status)
    kind = content_type(response)
    if kind and "json" not in kind:
        raise Failure("bad_response", f"expected JSON, got {kind}: {text[:80]!r}", status)
    return parse_json(text, "the body", status)


async def error_body(response: httpx.Response) -> bytes:
    """The first few KB of an error body, decompressed; a corrupt one still has its status."""
    body = b""
    try:
        async for chunk in body_chunks(response, 1 << 20):
            body += chunk
            if len(body) >= ERROR_BODY_BYTES:
                break
    except (Failure, httpx.StreamError):  # a body already read (by a test transport) is none
        pass
    return body[:ERROR_BODY_BYTES]


def content_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


async def get_json(
    client: httpx.AsyncClient, url: str, sent: dict[str, str], timeout_s: float, cap: int
) -> tuple[int, Any]:
    """A GET whose JSON answer is nice to have (identity routes): the status, and the body, None
    for anything but a capped, parseable 200. Transport errors are the caller's to ignore."""
    async with (
        asyncio.timeout(timeout_s),
        send(client, "GET", url, sent, timeout_s) as response,
    ):
        if response.status_code != 200:
            return response.status_code, None
        try:
            body = b"".join([c async for c in body_chunks(response, cap)])
            return 200, parse_json(decode(body, "the body", 200), "the body", 200)
        except Failure:
            return 200, None


async def get_text(
    client: httpx.AsyncClient, url: str, sent: dict[str, str], timeout_s: float, cap: int
) -> tuple[str, httpx.Headers]:
    """A GET whose text answer is needed: the capped, UTF-8 body of a 200 and its headers.
    Anything else is a Failure (http_status, rate_limited, too_large, bad_response); transport
    errors are the caller's to classify."""
    async with (
        asyncio.timeout(timeout_s),
        send(client, "GET", url, sent, timeout_s) as response,
    ):
        if response.status_code != 200:
            raise status_failure(response, await error_body(response))
        body = b"".join([c async for c in body_chunks(response, cap)])
        return decode(body, "the body", 200), response.headers

"""The pooled transport: a keep-alive connection the server drops as we reuse it is not an outage;
a server that drops a fresh connection still is."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from watchdog.probers.transport import http_client
from watchdog.runtime.clock import SystemClock

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


# A streamed chat answer: headers, one content event, the end, in one write.
STREAMED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {n}\r\n\r\n{body}"
)
EVENTS = (
    b'data: {"choices":[{"index":0,"delta":{"content":"Paris"},"finish_reason":null}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
BUSY_S = 0.3  # how long the probe's loop is held up after the answer arrives


class AnswerWhileBusy:
    """A server on a thread of its own that, once the request is in, holds the client's event
    loop up (as the daemon holding Python's lock would), and only then answers, at once. The
    answer thus sits in the client's socket for BUSY_S before the loop can read it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import socket
        import threading

        self.loop = loop
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        import threading
        import time

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                held = threading.Event()

                def hold_up(held: threading.Event = held) -> None:
                    held.set()
                    time.sleep(BUSY_S)

                self.loop.call_soon_threadsafe(hold_up)
                held.wait(5)
                conn.sendall(
                    STREAMED.replace(b"{n}", str(len(EVENTS)).encode()).replace(b"{body}", EVENTS)
                )
                conn.recv(1)  # until the client hangs up

    def close(self) -> None:
        self.listener.close()


async def test_an_answer_read_late_is_timed_when_it_arrived(monkeypatch) -> None:
    """The kernel's receive stamp times the answer: a probe loop held up for 0.3 s after the
    answer reached the host does not record a 0.3 s TTFT or e2e. Without the stamp it would."""
    import socket

    from watchdog.endpoint import Endpoint
    from watchdog.golden.sets import Prompt
    from watchdog.probers import openai_chat, transport
    from watchdog.runtime.clock import SystemClock

    server = AnswerWhileBusy(asyncio.get_running_loop())
    ep = Endpoint(name="e", api="openai-chat", base_url=server.url, timeout_s=5.0)  # type: ignore[call-arg]
    prompt = Prompt(
        id="p", messages=[{"role": "user", "content": "Capital?"}], sampling={}, checks=[]
    )
    try:
        async with http_client() as client:
            stamped = await openai_chat.probe(client, ep, None, prompt, True, SystemClock())
        plain = lambda info: socket.socket(*info[:3])  # noqa: E731
        monkeypatch.setattr(transport, "_wire", plain)
        async with http_client() as client:
            read_late = await openai_chat.probe(client, ep, None, prompt, True, SystemClock())
    finally:
        server.close()
    assert stamped.error_class is None, stamped.error_detail
    assert stamped.text == "Paris"
    assert stamped.ttft_s is not None and stamped.e2e_s is not None
    assert stamped.ttfb_s is not None
    assert max(stamped.ttfb_s, stamped.ttft_s, stamped.e2e_s) < BUSY_S / 3
    # The same answer timed as it is read: the hold-up is in every figure.
    assert read_late.error_class is None, read_late.error_detail
    assert read_late.ttft_s is not None and read_late.ttft_s >= BUSY_S


def test_the_arrivals_of_one_answer_never_go_back_in_time() -> None:
    """Headers and first token in one packet share one kernel stamp. Moved onto the monotonic
    clock at two instants, the same stamp can land nanoseconds apart in either direction; the
    later reading must not come out earlier, or TTFT would be before TTFB (seen on CI)."""
    import httpx

    from tests.conftest import FakeClock
    from watchdog.probers.exchange import arrival

    clock = FakeClock()
    ages = iter(
        [0.0002, 0.00020002, 0.0002, 0.0001]
    )  # one stamp, moved with jitter; then a later one
    response = httpx.Response(200, extensions={"arrival_age": lambda: next(ages)})
    headers = arrival(response, clock, t0=clock.monotonic() - 0.01)()
    first_token = arrival(response, clock, t0=0.0)()
    again = arrival(response, clock, t0=0.0)()
    later = arrival(response, clock, t0=0.0)()
    assert headers <= first_token <= again < later
    assert first_token == headers  # the jittered reading (earlier by 20 ns) is held at the first


class KeepAlive:
    """A server on threads of its own that keeps each connection open and answers every request
    with a streamed chat answer: the headers at once, the events `first_s` later. With `tls`, it
    speaks TLS with that context."""

    def __init__(self, first_s: float = 0.0, tls: Any = None) -> None:
        import socket
        import threading

        self.first_s, self.tls = first_s, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as servers do
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: Any) -> None:
        import time

        with contextlib.suppress(OSError):
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                pending = b""
                while True:
                    while b"\r\n\r\n" not in pending:
                        more = conn.recv(65536)
                        if not more:
                            return
                        pending += more
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(pending) < length:
                        pending += conn.recv(65536)
                    pending = pending[length:]
                    conn.sendall(STREAMED.split(b"{body}")[0].replace(b"{n}", b"%d" % len(EVENTS)))
                    time.sleep(self.first_s)
                    conn.sendall(EVENTS)

    def close(self) -> None:
        self.listener.close()


class SendsLate:
    """The system clock, except that the first reading (a probe's start) is followed by BUSY_S
    in which the thread does nothing: the probe sends its request that much after its start, as
    one whose thread waited for Python's lock between the two would."""

    def __init__(self) -> None:
        from watchdog.runtime.clock import SystemClock

        self.clock, self.read = SystemClock(), False

    def now(self) -> Any:
        return self.clock.now()

    def monotonic(self) -> float:
        import time

        at = self.clock.monotonic()
        if not self.read:
            self.read = True
            time.sleep(BUSY_S)
        return at


def chat() -> tuple[Any, Any]:
    from watchdog.endpoint import Endpoint
    from watchdog.golden.sets import Prompt

    prompt = Prompt(
        id="p", messages=[{"role": "user", "content": "Capital?"}], sampling={}, checks=[]
    )
    return prompt, lambda url: Endpoint(name="e", api="openai-chat", base_url=url, timeout_s=5.0)  # type: ignore[call-arg]


async def test_a_request_sent_late_is_timed_from_when_it_left(monkeypatch) -> None:
    """The kernel's stamps start the clock: a probe held up for 0.3 s between its start and its
    send does not record 0.3 s more, on a reused connection (timed from the request's send) or
    on a fresh one (from its first send less the TCP handshake). Without stamps the time counts
    from the probe's start."""
    import socket
    import time

    from watchdog.probers import openai_chat, transport
    from watchdog.runtime.clock import SystemClock

    server, (prompt, endpoint) = KeepAlive(), chat()
    ep = endpoint(server.url)

    async def twice() -> tuple[Any, Any]:
        async with http_client() as client:
            fresh = await openai_chat.probe(client, ep, None, prompt, True, SendsLate())
            reused = await openai_chat.probe(client, ep, None, prompt, True, SendsLate())
            # Stamps left unread would keep the socket signalled and the loop spinning.
            cpu = time.process_time()
            await asyncio.sleep(0.3)
            assert time.process_time() - cpu < 0.1
        return fresh, reused

    try:
        fresh, reused = await twice()
        plain = lambda info: socket.socket(*info[:3])  # noqa: E731
        monkeypatch.setattr(transport, "_wire", plain)
        _, reused_unstamped = await twice()
        async with http_client() as client:
            control = await openai_chat.probe(client, ep, None, prompt, True, SystemClock())
    finally:
        server.close()
    assert server.connections == 3
    for answer in (fresh, reused, reused_unstamped, control):
        assert answer.error_class is None and answer.text == "Paris", answer.error_detail
    assert reused.ttfb_s < BUSY_S / 3 and reused.e2e_s < BUSY_S / 3, vars(reused)
    assert 0 < reused.ttfb_s <= reused.ttft_s <= reused.e2e_s
    assert fresh.ttfb_s < BUSY_S / 3 and fresh.e2e_s < BUSY_S / 3, vars(fresh)
    assert 0 < fresh.ttfb_s <= fresh.ttft_s <= fresh.e2e_s
    assert reused_unstamped.ttfb_s >= BUSY_S
    assert control.ttfb_s < BUSY_S / 3


@pytest.mark.parametrize(
    ("handshake_s", "at_least", "below"),
    [(0.2, 0.2, BUSY_S), (None, BUSY_S, 1.0)],
    ids=["timed-by-the-kernel", "retransmitted-or-untimed"],
)
async def test_a_fresh_connection_counts_its_handshake(
    monkeypatch, handshake_s: float | None, at_least: float, below: float
) -> None:
    """A fresh connection's clock starts one TCP handshake before its first send, as long as
    the kernel timed that handshake: 0.2 s of it counts, the probe's own 0.3 s hold-up does not.
    Where the kernel had to send the SYN again (or timed nothing), the whole wait counts, from
    the probe's start: a lost SYN is the network's trouble, not the watchdog's."""
    from watchdog.probers import openai_chat, transport

    monkeypatch.setattr(transport, "_handshake_s", lambda sock: handshake_s)
    server, (prompt, endpoint) = KeepAlive(), chat()
    try:
        async with http_client() as client:
            answer = await openai_chat.probe(
                client, endpoint(server.url), None, prompt, True, SendsLate()
            )
    finally:
        server.close()
    assert answer.error_class is None and answer.text == "Paris", answer.error_detail
    assert at_least <= answer.ttfb_s <= answer.e2e_s < below, vars(answer)


def test_the_kernel_times_a_tcp_handshake() -> None:
    """The round trip read from TCP_INFO before a connection's first send: on loopback, far
    under 50 ms."""
    import socket

    from watchdog.probers.transport import _handshake_s

    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        socket.create_connection(listener.getsockname()) as sock,
    ):
        rtt = _handshake_s(sock)
        assert rtt is not None and 0 < rtt < 0.05, rtt


async def test_answers_over_tls_are_timed(tmp_path, monkeypatch) -> None:
    """Under TLS asyncio reads with `recv_into`: those reads are stamped too, and an answer
    whose first token comes 50 ms after its headers is timed so."""
    import ssl
    import subprocess

    from watchdog.probers import openai_chat

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2")
    names = ("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    subprocess.run(
        ["openssl", "req", "-x509", *ec, *names, "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cert.pem"))
    server, (prompt, endpoint) = KeepAlive(first_s=0.05, tls=tls), chat()
    try:
        async with http_client() as client:
            answers = [
                await openai_chat.probe(
                    client, endpoint(server.url), None, prompt, True, SystemClock()
                )
                for _ in range(2)
            ]
    finally:
        server.close()
    assert server.connections == 1
    for answer in answers:
        assert answer.error_class is None and answer.text == "Paris", answer.error_detail
        assert 0 < answer.ttfb_s < 0.05 <= answer.ttft_s <= answer.e2e_s < 1, vars(answer)
        assert answer.ttft_s - answer.ttfb_s >= 0.045


@pytest.mark.parametrize("method", ["POST", "PUT", "GET"])
@pytest.mark.parametrize(
    ("sent", "body"),
    [
        ({"Content-Type": "application/json", "Authorization": "Bearer k"}, b'{"a": 1}'),
        ({"host": "gateway:8443"}, b"x"),  # the endpoint's own Host header stands
        ({"Content-Length": "1"}, b"x"),
        ({"X": "y"}, b""),
        ({}, None),
    ],
)
@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/v1/chat", "https://[::1]/x"])
def test_a_request_is_built_as_httpx_builds_it(
    method: str, sent: dict[str, str], body: bytes | None, url: str
) -> None:
    """Probes build their requests without httpx's general path (it normalised every header
    twice); the headers, in their order, and the body are what httpx would send."""
    import httpx

    from watchdog.probers.exchange import _request

    ours = _request(method, httpx.URL(url), sent, body, {"timeout": {}})
    theirs = httpx.Request(method, url, headers=sent, content=body, extensions={"timeout": {}})
    assert ours.headers.raw == theirs.headers.raw
    assert (ours.method, ours.url, ours.content, ours.extensions) == (
        theirs.method,
        theirs.url,
        theirs.content,
        theirs.extensions,
    )


async def test_a_probe_sent_as_is_keeps_what_httpx_send_gave() -> None:
    """Probes hand their requests straight to the transport (`ProbeClient.send_as_is`): the
    response and a failure still name the request, and a closed client still refuses."""
    import httpx

    from watchdog.probers.transport import ProbeClient

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/down":
            raise httpx.ConnectError("refused")  # a transport's error, naming no request
        return httpx.Response(200, content=b"ok")

    client = ProbeClient(transport=httpx.MockTransport(answer))
    async with client:
        sent = httpx.Request("POST", "http://e/v1", content=b"{}")
        response = await client.send_as_is(sent)
        assert (response.request, await response.aread()) == (sent, b"ok")
        down = httpx.Request("POST", "http://e/down", content=b"{}")
        with pytest.raises(httpx.ConnectError) as failed:
            await client.send_as_is(down)
        assert failed.value.request is down
    with pytest.raises(RuntimeError, match="closed"):
        await client.send_as_is(sent)

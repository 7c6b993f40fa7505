"""A TLS handshake that fails is `tls`, with a reason, against real sockets and the real
llama-server: an `https://` URL in front of a plain-HTTP port, or a TLS terminator that drops
the connection. Since the aiohttp transport these read `connect` with an empty reason ("cannot
connect to 127.0.0.1:36679: "), and a llama-server given `https://` waited the full `timeout_s`
as a plain "total deadline exceeded"."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import LlamaServer
from watchdog.config.load import load_config
from watchdog.probers.transport import http_client
from watchdog.runner import Runner
from watchdog.runtime.clock import SystemClock

GOLDEN = """
name: one
version: 1
defaults: {max_tokens: 4, temperature: 0}
prompts:
  - id: hello
    messages: [{role: user, content: "Say hello."}]
    checks: [{min_length: 1}]
"""


class Listener:
    """A real TCP server that reads the ClientHello, then hangs up, resets, or stays silent;
    every socket it accepted is closed when the test ends."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.1)
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def serve(self, how: str) -> str:
        def loop() -> None:
            while not self.stop.is_set():
                try:
                    conn, _ = self.server.accept()
                except TimeoutError:
                    continue
                self.accepted.append(conn)
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                except OSError:
                    continue
                if how == "reset":  # SO_LINGER 0: close sends RST
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                if how != "silent":
                    conn.close()

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return f"https://127.0.0.1:{self.server.getsockname()[1]}"

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        for conn in self.accepted:
            conn.close()
        self.server.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


async def probe(tmp_path: Path, url: str) -> tuple[str | None, str | None]:
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        f"""
endpoints:
  - {{name: e, api: openai-chat, base_url: "{url}", model: m, timeout_s: 2}}
probes:
  - {{endpoint: e, golden_set: one.yaml, every: 60s}}
"""
    )
    cfg = load_config(tmp_path / "config.yaml")
    async with http_client() as client:
        run = await Runner(cfg, client, SystemClock()).run(cfg.probes[0])
    (result,) = run.results
    return result.answer.error_class, result.answer.error_detail


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("hangup", "TLS failed: the server closed the connection during the TLS handshake"),
        ("reset", "TLS failed: the server reset the connection during the TLS handshake"),
        (
            "silent",
            "TLS failed: no answer to the TLS handshake within 1 s (the port accepts TCP "
            "connections)",
        ),
    ],
)
async def test_a_failed_handshake_is_tls_with_its_reason(
    how: str, reason: str, tmp_path: Path, listener: Listener
) -> None:
    assert await probe(tmp_path, listener.serve(how)) == ("tls", reason)


async def test_https_to_the_real_llama_server_is_tls(
    tmp_path: Path, llama_server: LlamaServer
) -> None:
    """llama-server never answers a ClientHello: it waits for a request line."""
    url = llama_server.url.replace("http://", "https://")
    error_class, detail = await probe(tmp_path, url)
    assert error_class == "tls", detail
    assert detail and "no answer to the TLS handshake within 1 s" in detail


async def test_a_closed_port_is_still_connect(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens
    error_class, detail = await probe(tmp_path, f"https://127.0.0.1:{port}")
    assert error_class == "connect" and detail and "Connection refused" in detail, detail

"""Finding the process that serves an endpoint: against this machine's real /proc with a real
listening process, and against /proc trees written out for the cases a test machine lacks
(TGI's launcher with a router and shards, IPv6, another user's descriptors)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.faultserver import free_port
from watchdog.gpu.serving import Procfs, Server

LISTEN_SNIPPET = """
import socket, sys, time
s = socket.socket(socket.AF_INET6 if sys.argv[2] == "6" else socket.AF_INET)
s.bind(("::" if sys.argv[2] == "6" else "127.0.0.1", int(sys.argv[1])))
s.listen()
print("ready", flush=True)
time.sleep(60)
"""


@contextlib.contextmanager
def listening(port: int, family: str = "4") -> Iterator[subprocess.Popen[str]]:
    """A real process listening on `port` (IPv4 loopback, or every IPv6 address)."""
    with subprocess.Popen(
        [sys.executable, "-c", LISTEN_SNIPPET, str(port), family],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        try:
            yield child
        finally:
            child.kill()


def test_the_real_process_listening_on_the_port_is_found() -> None:
    port = free_port()
    with listening(port) as child:
        server = Procfs().server(f"http://127.0.0.1:{port}/v1")
    assert server is not None and server.pid == child.pid and server.port == port
    assert server.name.startswith("python")
    # Its parent is this test run's Python: a harness, not part of the engine.
    assert os.getpid() not in server.family and child.pid in server.family
    assert str(server) == f"{server.name} (pid {child.pid}, listening on :{port})"


def test_a_wildcard_ipv6_listener_answers_localhost() -> None:
    port = free_port()
    with listening(port, "6") as child:
        server = Procfs().server(f"http://localhost:{port}")
    assert server is not None and server.pid == child.pid


def test_no_listener_is_no_server() -> None:
    assert Procfs().server(f"http://127.0.0.1:{free_port()}") is None


# --- written-out /proc trees ---


def tcp_line(address: str, port: int, inode: int, state: str = "0A") -> str:
    return f"   0: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000  1000        0 {inode} 1 0000000000000000 100 0 0 10 0\n"


HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def proc(
    root: Path,
    processes: dict[int, tuple[str, int, list[int]]],
    tcp: str = "",
    tcp6: str = "",
) -> Procfs:
    """A /proc with `processes` (pid: name, parent, socket inodes) and the two socket tables."""
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(HEADER + tcp)
    (root / "net" / "tcp6").write_text(HEADER + tcp6)
    for pid, (name, parent, sockets) in processes.items():
        folder = root / str(pid)
        (folder / "fd").mkdir(parents=True)
        (folder / "comm").write_text(name + "\n")
        (folder / "stat").write_text(f"{pid} ({name}) S {parent} {pid} {pid} 0 -1 4194560 0\n")
        for n, inode in enumerate(sockets):
            os.symlink(f"socket:[{inode}]", folder / "fd" / str(n + 3))
    return Procfs(root)


def test_tgis_router_listens_and_its_launchers_shards_are_the_engine(tmp_path: Path) -> None:
    procfs = proc(
        tmp_path,
        {
            1: ("systemd", 0, []),
            40: ("text-generation-launcher", 1, []),
            41: ("text-generation-router", 40, [777]),
            42: ("text-generation-server", 40, []),
            43: ("python3", 42, []),
            90: ("nvidia-persistenced", 1, []),
        },
        tcp=tcp_line("00000000", 8080, 777),
    )
    server = procfs.server("http://10.0.0.5:8080")
    assert server == Server(41, "text-generation-router", 8080, frozenset({40, 41, 42, 43}))


def test_a_server_started_from_a_shell_is_itself_and_its_children(tmp_path: Path) -> None:
    procfs = proc(
        tmp_path,
        {
            1: ("systemd", 0, []),
            100: ("bash", 1, []),
            101: ("vllm", 100, [555]),
            102: ("VLLM::EngineCore", 101, []),
            103: ("llama-server", 100, []),  # another server from the same shell: not vLLM's
        },
        tcp6=tcp_line("00000000000000000000000001000000", 8000, 555),  # [::1]
    )
    server = procfs.server("http://localhost:8000")
    assert server is not None and server.family == frozenset({101, 102})
    assert procfs.server("http://192.168.1.9:8000") is None  # a loopback listener answers no LAN


def test_another_users_descriptors_hide_the_server(tmp_path: Path) -> None:
    procfs = proc(
        tmp_path,
        {7: ("llama-server", 1, [99])},
        tcp=tcp_line("0100007F", 8081, 99),  # 127.0.0.1
    )
    (tmp_path / "7" / "fd").chmod(0)
    try:
        hidden = os.geteuid() != 0
        server = procfs.server("http://127.0.0.1:8081")
    finally:
        (tmp_path / "7" / "fd").chmod(0o755)
    assert (server is None) == hidden  # root reads every process's descriptors

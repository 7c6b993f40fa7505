"""Which process serves an endpoint on this host, found as `ss -ltnp` finds it: the socket that
listens on its base_url's port (/proc/net/tcp and tcp6), the process holding that socket
(/proc/PID/fd), and the engine's family of processes around it. The GPU detectors compare that
family with the GPUs' compute processes: a server none of whose processes holds memory on its
GPU serves from the CPU.

Best effort by design: an endpoint behind a proxy or in another network namespace has no local
listener, and a process of another user hides its descriptors from an unprivileged watchdog.
Then there is no server, and the detectors fall back to the GPUs' own evidence.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's `st` column
# A parent that only launches, supervises or hosts a shell: the engine's family stops below it.
# Anything else (text-generation-launcher, a vLLM or SGLang parent) is part of the engine, with
# all its children: TGI's router listens while its sibling shards hold the GPU.
NOT_THE_ENGINE = frozenset(
    {
        "bash", "sh", "dash", "zsh", "fish", "ksh", "tcsh", "csh",
        "systemd", "init", "tini", "dumb-init", "docker-init", "catatonit", "s6-supervise",
        "runsv", "supervisord", "containerd-shim", "containerd-shim-runc-v2", "conmon", "runc",
        "sudo", "su", "sshd", "login", "tmux: server", "screen", "SCREEN",
        "python", "python3", "pytest", "uv", "make", "timeout", "nohup", "setsid", "env",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Server:
    """The process listening on an endpoint's port, and the engine's processes around it."""

    pid: int
    name: str
    port: int
    family: frozenset[int]  # the listener, its descendants, and a launcher's other children

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid}, listening on :{self.port})"


class Procfs:
    """The /proc of this host (or a copy of one, in tests)."""

    def __init__(self, root: Path = Path("/proc")):
        self.root = root

    def server(self, base_url: str) -> Server | None:
        """The local process that listens on `base_url`'s port, or None."""
        parts = urlsplit(base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        inode = self._listener(port, parts.hostname or "")
        pid = self._owner(inode) if inode is not None else None
        if pid is None:
            return None
        return Server(pid, self.name(pid), port, self._family(pid))

    def alive(self, pid: int) -> bool:
        return (self.root / str(pid)).exists()

    def name(self, pid: int) -> str:
        try:
            return (self.root / str(pid) / "comm").read_text().strip() or "?"
        except OSError:
            return "?"

    def _listener(self, port: int, host: str) -> int | None:
        """The inode of a socket listening on `port` at an address `host` reaches."""
        for table in ("tcp", "tcp6"):
            try:
                lines = (self.root / "net" / table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10 or fields[3] != LISTEN:
                    continue
                address, _, hex_port = fields[1].partition(":")
                if int(hex_port, 16) == port and _reaches(address, host):
                    return int(fields[9])
        return None

    def _owner(self, inode: int) -> int | None:
        wanted = f"socket:[{inode}]"
        for pid in self._pids():
            try:
                fds = list((self.root / str(pid) / "fd").iterdir())
            except OSError:  # gone, or another user's: not ours to read
                continue
            for fd in fds:
                try:
                    if os.readlink(fd) == wanted:
                        return pid
                except OSError:
                    continue
        return None

    def _pids(self) -> list[int]:
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit())

    def _parents(self) -> dict[int, int]:
        """pid: its parent's pid, from /proc/PID/stat (readable by everyone)."""
        out = {}
        for pid in self._pids():
            try:
                stat = (self.root / str(pid) / "stat").read_text()
            except OSError:
                continue
            # The name in parentheses may hold spaces and parentheses: split after the last.
            out[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        return out

    def _family(self, pid: int) -> frozenset[int]:
        parents = self._parents()
        top = pid
        parent = parents.get(pid, 1)
        if parent > 1 and self.name(parent) not in NOT_THE_ENGINE:
            top = parent
        children: dict[int, list[int]] = {}
        for child, parent in parents.items():
            children.setdefault(parent, []).append(child)
        family, todo = {top, pid}, [top]
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in family:
                    family.add(child)
                    todo.append(child)
        return frozenset(family)


def _reaches(hex_address: str, host: str) -> bool:
    """Whether a listener on `hex_address` (as /proc/net/tcp writes it) answers `host`: a
    wildcard listener answers every address, a loopback one loopback names."""
    raw = bytes.fromhex(hex_address)
    # /proc/net writes each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return True
    if host in ("localhost", ""):
        return address.is_loopback
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return not address.is_loopback  # a host name: whichever address it resolves to here
    return address == wanted or (address.is_loopback and wanted.is_loopback)

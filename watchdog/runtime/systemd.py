"""What systemd gives a service and expects back: sd_notify (READY, RELOADING, STOPPING,
WATCHDOG, STATUS), credentials from $CREDENTIALS_DIRECTORY, and whether logs go to the journal.

sd_notify is one datagram on a unix socket; the protocol is stable and documented in
sd_notify(3), so it is written here rather than pulled in through libsystemd's bindings."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("mlops_watchdog.systemd")
# `LoadCredential=mlops-watchdog:/etc/mlops-watchdog/credentials` names each file's credential
# mlops-watchdog_FILENAME; the config reads it as ${FILENAME}.
CREDENTIAL_PREFIX = "mlops-watchdog_"


class Notify:
    """Talks to the service manager when started by one ($NOTIFY_SOCKET); silent otherwise."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and mine else None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> bool:
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def alive(self, status: str) -> None:
        """WATCHDOG=1: the scheduler just finished a healthy cycle."""
        self.send("WATCHDOG=1", f"STATUS={status}")


def credentials(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """systemd credentials as variables for ${VAR} in the config: file name → its content."""
    env = os.environ if env is None else env
    folder = env.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return {}
    out = {}
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            name = path.name.removeprefix(CREDENTIAL_PREFIX)
            out[name] = path.read_text(encoding="utf-8").rstrip("\n")
    return out


def under_journal(env: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is the journal: systemd sets JOURNAL_STREAM to its device:inode."""
    env = os.environ if env is None else env
    stream = env.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"

"""Refuse secrets written out in a file that every user on the host can read.

A secret is the value of a secret-ish key (a Slack `webhook_url` or `bot_token`, `heartbeat_url`,
an `Authorization` or API-key header, anything named like a token or password) or a password
inside a URL (`https://user:pass@host`). It is written out unless it comes from `${VAR}`: a
value that names a variable is taken to hold its secret there, in the environment or in a
systemd credential, and the file itself then holds none.

"Every user can read it" means the file's own mode has the read bit for others. Its folders are
not considered, as ssh judges a private key by its own mode: a folder that keeps others out today
is opened up tomorrow, or the file is copied out of it.

This is an error, not a warning: the service runs on hosts that hold sensitive data, a warning
in a journal goes unread, and the fix is one command, which `mlops-watchdog check` names before
the service is ever started.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from watchdog.parsing.yamlfile import Document, InvalidFile, Path_, Problem, load

# Words that make a key secret-ish, matched whole after splitting the key at `_` and `-`:
# `bot_token`, `webhook_url`, `X-Auth-Token`, `Proxy-Authorization`, `Cookie`, `api_password`.
SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "webhook",
        "apikey",
    }
)
# A healthchecks.io-style ping URL is itself the credential: whoever knows it keeps a dead
# watchdog looking alive.
SECRET_KEYS = frozenset({"heartbeat_url"})
# In `headers:` a bare key or auth word is enough: `Ocp-Apim-Subscription-Key`, `X-Auth`.
SECRET_HEADER_WORDS = frozenset({"key", "auth"})
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@")


def readable_by_others(mode: int) -> bool:
    return bool(mode & stat.S_IROTH)


def file_mode(path: Path) -> int | None:
    """The permission bits of `path`, or None when it cannot be stat'ed."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def secret_key(path: Path_) -> bool:
    """Whether the value at `path` is a secret by its key's name."""
    if not path or not isinstance(path[-1], str):
        return False
    name = path[-1].lower()
    if name in SECRET_KEYS:
        return True
    words = set(re.split(r"[^a-z0-9]+", name))
    if words & SECRET_WORDS or {"api", "key"} <= words:
        return True
    return len(path) >= 2 and path[-2] == "headers" and bool(words & SECRET_HEADER_WORDS)


def literal_secrets(doc: Document) -> list[Path_]:
    """Where `doc` holds a secret written out; `doc` must be loaded without interpolation."""
    return [
        path
        for path, value in _strings(doc.data, ())
        if value.strip() and "${" not in value and (secret_key(path) or _URL_PASSWORD.match(value))
    ]


def exposed_secrets(doc: Document, mode: int) -> list[Problem]:
    """One problem per secret written out in `doc` when `mode` lets every user read the file."""
    if not readable_by_others(mode):
        return []
    return [doc.problem(path, exposed_message(doc.file, mode)) for path in literal_secrets(doc)]


def exposed_message(file: str, mode: int) -> str:
    return (
        f"a secret written out in a file that every user on this host can read (mode {mode:04o}); "
        f"read it from ${{VAR}} (an environment variable or a systemd credential) instead, "
        f"or make the file private: chmod 640 {file}"
    )


def permission_problems(path: Path) -> list[Problem]:
    """The secrets that `path` exposes to every user on the host; [] when it is private.

    The file is read again without ${VAR} interpolation, and only when its mode lets others
    read it, so that a value's origin is its text in the file.
    """
    mode = file_mode(path)
    if mode is None or not readable_by_others(mode):
        return []
    try:
        raw = load(path, env={}, interpolate=False)
    except InvalidFile:
        return []  # the caller has read it already and reports what is wrong with it
    return exposed_secrets(raw, mode)


def _strings(data: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _strings(value, (*path, i))
    elif isinstance(data, str):
        yield path, data

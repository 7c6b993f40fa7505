"""Basic auth on the listener: bcrypt hashes, checked off the event loop, successes cached.

Every path is protected, /healthz and /readyz included, as exporter-toolkit protects every path
of an exporter: the status page and the metrics name endpoints and models, and an open path
would be the one an operator forgot. A Kubernetes probe sends the header (`httpGet.httpHeaders`
with `Authorization: Basic …`) or uses `tcpSocket`; systemd's watchdog needs no HTTP at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Mapping

import bcrypt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

REALM = "mlops-watchdog"
# Distinct (user, password) pairs that passed; Prometheus scrapes with one pair every 15 s, so a
# few dozen cover every scraper and a flood of guesses cannot grow memory.
CACHE_SIZE = 64


class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes (user → hash)."""

    def __init__(self, users: Mapping[str, str], cache_size: int = CACHE_SIZE):
        if not users:
            raise ValueError("basic auth needs at least one user")
        self.users = dict(users)
        self.cache_size = cache_size
        # Digests of (user, hash, password) that passed: neither the password nor the hash is
        # kept in the clear, and a changed hash invalidates its entries.
        self._passed: dict[bytes, None] = {}
        # One bcrypt at a time, as exporter-toolkit does: it is slow on purpose, and a burst of
        # bad guesses must not take every core from the probes.
        self._lock = asyncio.Lock()

    async def allows(self, header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None:
            return False
        user, password = credentials
        known = user in self.users
        # An unknown user costs one bcrypt against a real hash too, so timing does not tell
        # which user names exist.
        hashed = self.users[user] if known else next(iter(self.users.values()))
        key = hashlib.sha256(b"\0".join((user.encode(), hashed.encode(), password))).digest()
        if key in self._passed:
            return True
        async with self._lock:
            if key in self._passed:  # a concurrent request checked the same pair
                return True
            ok = await asyncio.to_thread(_checkpw, password, hashed.encode())
        if not (known and ok):
            return False
        if len(self._passed) >= self.cache_size:
            del self._passed[next(iter(self._passed))]
        self._passed[key] = None
        return True


def parse_basic(header: str | None) -> tuple[str, bytes] | None:
    """(user, password) from an `Authorization: Basic …` header, or None."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, colon, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if colon else None
    except (binascii.Error, UnicodeDecodeError):
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # over bcrypt's 72 bytes, or a malformed hash
        return False


def auth_middleware(auth: BasicAuth) -> Middleware:
    """401 with a Basic challenge unless the request carries a known user's password."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if await auth.allows(request.headers.get("Authorization")):
            return await handler(request)
        return web.Response(
            status=401,
            text="Unauthorized\n",
            headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
        )

    return middleware

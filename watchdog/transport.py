"""The one HTTP client every probe, identity read and scrape goes through: httpx's API over
aiohttp's transport (PyPI's httpx-aiohttp).

Why not httpx's own transport: it costs 3 to 4 times the CPU per request. DESIGN.md measured
1.6 ms against 0.32 to 0.46 ms on one core, and bench/probe_cost.py halves the daemon's CPU
per probe with it. Bodies arrive undecompressed either way (exchange.body_chunks inflates them
under the cap), and tests may still hand a MockTransport to httpx.AsyncClient."""

from __future__ import annotations

import httpx
from httpx_aiohttp import AiohttpTransport

LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


def http_client() -> httpx.AsyncClient:
    # Timeouts are set per request from each endpoint's `timeout_s`.
    return httpx.AsyncClient(follow_redirects=False, transport=AiohttpTransport(limits=LIMITS))

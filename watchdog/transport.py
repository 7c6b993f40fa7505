"""The one HTTP client every probe, identity read and scrape goes through.

httpx's own transport, on purpose. httpx over aiohttp's transport (PyPI's httpx-aiohttp) halved
the daemon's CPU per probe in bench/probe_cost.py, but it reuses keep-alive connections the
server has already closed. llama-server closes each one after 5 requests, and a POST on such a
connection failed as `connect` ("Can not write request body"): a false outage. httpcore checks
an idle connection before it reuses it. Tests may still hand a MockTransport to
httpx.AsyncClient."""

from __future__ import annotations

import httpx

LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


def http_client() -> httpx.AsyncClient:
    # Timeouts are set per request from each endpoint's `timeout_s`.
    return httpx.AsyncClient(follow_redirects=False, limits=LIMITS)

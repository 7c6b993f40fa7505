"""The HTTP listener: /metrics, /healthz, /readyz, each endpoint's readiness for routers
(/targets/<endpoint>/ready) and the status page, on `listen:`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import ssl
from collections.abc import Callable, Iterator
from datetime import datetime

from aiohttp import web
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from watchdog import __version__
from watchdog.alerting import targets
from watchdog.alerting.settings import Alerting
from watchdog.parsing.fields import parse_listen
from watchdog.store import Store
from watchdog.web import status
from watchdog.web.auth import BasicAuth, auth_middleware
from watchdog.web.families import Fast
from watchdog.web.settings import WebConfig, ssl_context


def app(
    registry: Collector,
    store: Store,
    endpoints: dict[str, str],
    ready: Callable[[], dict[str, bool]],
    now: Callable[[], datetime],
    node: str = "",
    runbook: Callable[[str], str] | None = None,
) -> web.Application:
    """`runbook` gives an alert kind's runbook URL (`alerting.runbook_base_url`); without it,
    the shipped runbooks'."""
    runbook = runbook or Alerting().runbook

    async def metrics(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        # The text format whenever the scraper takes it (Prometheus does, beside OpenMetrics,
        # which it prefers): the large families write it directly (web/families.py).
        encoder, content_type = choose_encoder("" if takes_text(accept) else accept)
        body = await exposition(registry, encoder, content_type.startswith(OPENMETRICS))
        response = web.Response(body=body, headers={"Content-Type": content_type})
        # Prometheus asks for gzip: a fleet node's exposition shrinks about 20x on the wire.
        response.enable_compression()
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        checks = ready()
        body = json.dumps({"ready": all(checks.values()), "checks": checks}) + "\n"
        return web.Response(
            text=body, status=200 if all(checks.values()) else 503, content_type="application/json"
        )

    async def target_ready(request: web.Request) -> web.Response:
        """For routers and load balancers: 200 while the endpoint may get traffic, 503 while
        it is down (or degraded, with ?strict=1), from the alert state; the body says why."""
        name = request.match_info["endpoint"]
        if name not in endpoints:
            body = {"error": f"no endpoint named {name!r} is watched here"}
            return web.json_response(body, status=404)
        found = targets.target(store.db, name)
        strict = request.query.get("strict", "") not in ("", "0", "false")
        return web.json_response(found.to_json(), status=200 if found.ready(strict) else 503)

    async def index(request: web.Request) -> web.Response:
        moment = now()
        page = status.collect(store.db, endpoints, moment, runbook)
        html = status.render(page, moment, __version__, node)
        return web.Response(text=html, content_type="text/html")

    application = web.Application()
    application.add_routes(
        [
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/targets/{endpoint}/ready", target_ready),
            web.get("/", index),
        ]
    )
    return application


OPENMETRICS = "application/openmetrics-text"
EOF = b"# EOF\n"  # OpenMetrics' last line, once


def takes_text(accept: str) -> bool:
    """Whether an Accept header takes Prometheus' text format (text/plain, text/*, */*)."""
    if not accept.strip():
        return True
    for offer in accept.split(","):
        media, *params = (p.strip() for p in offer.split(";"))
        refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
        if media.lower() in ("text/plain", "text/*", "*/*") and not refused:
            return True
    return False


class One(Collector):
    def __init__(self, family: Metric):
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


async def exposition(
    registry: Collector, encoder: Callable[[Collector], bytes], openmetrics: bool = False
) -> bytes:
    """The registry's text, one metric family per turn of the event loop. A thousand
    endpoints make about 100,000 samples, seconds of work: built in one go, they held up the
    runs due meanwhile by as long. Each family is built whole within its turn, so that runs
    finishing between two families never change one half-written."""
    parts = []
    with _collector_paused():
        for family in registry.collect():
            if isinstance(family, Fast) and not openmetrics:  # most samples: written straight
                parts.append(family.text().encode())
                await asyncio.sleep(0)
                continue
            part = encoder(One(family))
            parts.append(part.removesuffix(EOF) if openmetrics else part)
            await asyncio.sleep(0)
    return b"".join([*parts, EOF] if openmetrics else parts)


class _Pause:
    scrapes = 0  # scrapes being built
    paused = False  # whether they turned the collector off (it was not off already)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a scrape is built (everything it builds is
    freed as it goes, without the collector). Its rows, a hundred thousand at a thousand
    endpoints, live across turns of the loop: the collector promoted them to its old
    generations, which set off a full collection nearly every scrape. A full collection stops
    every thread, the probes' too, for 20 to 60 ms there, and an answer read that late has its
    first token read together with later ones, and stamped as they arrived (bench.scale)."""
    if _Pause.scrapes == 0:
        _Pause.paused = gc.isenabled()
        gc.disable()
    _Pause.scrapes += 1
    try:
        yield
    finally:
        _Pause.scrapes -= 1
        if _Pause.scrapes == 0 and _Pause.paused:
            gc.enable()


class ListenError(Exception):
    """The listener cannot bind; the message names the address."""


async def serve(
    application: web.Application, listen: str, web_config: WebConfig | None = None
) -> web.AppRunner:
    """Start the listener. With a web config: TLS when it has `tls_server_config`, basic auth on
    every path when it has users (see watchdog/web/auth.py), and its response headers; the
    middleware and the headers are added to `application`. Without one: plain HTTP, open."""
    host, port = parse_listen(listen)
    context: ssl.SSLContext | None = None
    if web_config is not None:
        if web_config.tls is not None:
            try:
                context = ssl_context(web_config.tls)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ListenError(f"listen {listen}: TLS: {exc}") from None
        secure(application, web_config)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=context).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"listen {listen}: {exc.strerror or exc}") from None
    return runner


def secure(application: web.Application, web_config: WebConfig) -> None:
    """Add basic auth (outermost, so it guards 404s too) and the configured headers, which go
    on every response, 401s included, as exporter-toolkit sets them."""
    if web_config.users:
        application.middlewares.insert(0, auth_middleware(BasicAuth(web_config.users)))
    if web_config.headers:
        headers = dict(web_config.headers)

        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers)

        application.on_response_prepare.append(add_headers)

"""Three outcomes per probe run: liveness (the health route), readiness (the models route) and
completion (a real golden answer). A server can pass the first two and still hang on the third:
vLLM's /v1/models answers from static config while its engine is stuck."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from typing import Any

import httpx

from watchdog.endpoint import Endpoint
from watchdog.probers import APIS
from watchdog.probers.exchange import arrival, body_chunks, timed
from watchdog.probers.openai_common import headers
from watchdog.result import Answer, ProbeResult, TierOutcome
from watchdog.runtime.clock import Clock

TIERS = ("liveness", "readiness", "completion")
# A health route answers in milliseconds; waiting the full completion timeout on it helps nobody.
TIER_TIMEOUT_S = 10.0
TIER_BODY_BYTES = 1 << 20


async def check(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    tier: str,
    path: str,
    clock: Clock,
    bodies: dict[str, Any],
) -> TierOutcome:
    """GET one route under a short deadline: ok for a 2xx, read in full (a capped body). The
    body, when it is JSON, goes to `bodies`: the identity reads it there instead of again."""
    body = bytearray()

    async def drain(response: httpx.Response, answer: Answer, t0: float) -> None:
        async for chunk in body_chunks(response, TIER_BODY_BYTES):
            body.extend(chunk)
        answer.e2e_s = arrival(response, clock, t0)() - t0

    answer = await timed(
        client,
        clock,
        "GET",
        endpoint.base_url + path,
        min(endpoint.timeout_s, TIER_TIMEOUT_S),
        headers(endpoint, False),
        drain,
        streaming=False,
    )
    if answer.error_class is None:
        with contextlib.suppress(ValueError):
            bodies[path] = json.loads(body)
        detail = f"GET {path}: HTTP {answer.status_code} in {answer.e2e_s or 0:.3f}s"
    else:
        detail = f"GET {path}: {answer.error_class}: {answer.error_detail}"
    return TierOutcome(
        tier,
        answer.error_class is None,
        detail,
        path,
        answer.status_code,
        answer.e2e_s,
        answer.error_class,
    )


async def routes(
    client: httpx.AsyncClient, endpoint: Endpoint, clock: Clock
) -> tuple[list[TierOutcome], dict[str, Any]]:
    """Liveness, then readiness, for the routes the endpoint has (`health_path`, `ready_path`);
    and the JSON bodies they answered with, by path."""
    out = []
    bodies: dict[str, Any] = {}
    api = APIS[endpoint.api]
    for tier, path in (
        ("liveness", api.liveness_path(endpoint)),
        ("readiness", api.readiness_path(endpoint)),
    ):
        if path:
            out.append(await check(client, endpoint, tier, path, clock, bodies))
    return out, bodies


def completion(results: list[ProbeResult]) -> TierOutcome | None:
    """The golden prompts' tier: ok when any of them got an answer (its checks aside)."""
    if not results:
        return None
    answered = [r for r in results if r.answer.error_class is None]
    if answered:
        first = answered[0].answer
        detail = f"{len(answered)}/{len(results)} golden prompts answered"
        return TierOutcome("completion", True, detail, None, first.status_code, first.e2e_s)
    classes = Counter(str(r.answer.error_class) for r in results)
    worst = classes.most_common(1)[0][0]
    last = next(r.answer for r in reversed(results) if r.answer.error_class == worst)
    detail = f"0/{len(results)} golden prompts answered: {last.error_class}: {last.error_detail}"
    return TierOutcome(
        "completion", False, detail, None, last.status_code, last.e2e_s, last.error_class
    )

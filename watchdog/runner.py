"""Run one probe (an endpoint × a golden set): identify, ask each prompt, check, shape it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

import httpx

from watchdog.config.load import Config
from watchdog.drift.compare import profile
from watchdog.endpoint import Endpoint, Probe
from watchdog.golden.sets import GoldenSet, Prompt
from watchdog.probers import APIS, readiness, tokens, tracing
from watchdog.probers.exchange import TRANSPORT_ERRORS, classify
from watchdog.probers.identity import Seen
from watchdog.probers.openai_common import headers
from watchdog.probers.server_metrics import scrape, with_rates
from watchdog.probers.tracing import Span
from watchdog.result import (
    Answer,
    CheckOutcome,
    ProbeResult,
    Run,
    ServerLoad,
    TierOutcome,
    fingerprint_parts,
)
from watchdog.runtime.clock import Clock
from watchdog.runtime.masking import Mask

# While an endpoint answers and its routes are well, its health and ready routes, engine metrics
# and identity are read at most this often: a probe every second need not load the server it
# watches with four more requests. A failed prompt has them read again at once.
log = logging.getLogger(__name__)
LOOK_EVERY_S = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class Look:
    """What an endpoint's other routes said, at one monotonic time."""

    at: float
    tiers: list[TierOutcome]  # liveness, readiness
    identity: dict[str, Any]
    load: ServerLoad | None
    load_error: str | None

    @property
    def well(self) -> bool:
        """Routes that answer. Engine metrics that cannot be read are a gap, not an outage."""
        return all(t.ok for t in self.tiers)


def fingerprint(identity: dict[str, Any], system_fingerprint: str | None, golden_hash: str) -> str:
    """A short hash of what answered and what it was asked."""
    parts = fingerprint_parts(identity, system_fingerprint, golden_hash)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def shape_response(text: str, mode: str, excerpt_chars: int) -> tuple[str | None, str]:
    """(what to keep of the answer, its sha256) under `storage.responses`."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    if mode == "hash":
        return None, digest
    if mode == "excerpt" and len(text) > excerpt_chars:
        return text[:excerpt_chars] + "…", digest
    return text, digest


_RUNS = itertools.count(secrets.randbelow(1 << 20))


def new_run_id(now: datetime) -> str:
    """16 hex digits: the millisecond the run ended, then a counter. Random ids put each stored
    run on a random page of the run_id index, and every commit rewrote one such page a run; ids
    in the order runs end add to the index's last page (bench/README.md, "Pages a stored run
    writes"). The counter keeps ids of runs that end in the same millisecond apart."""
    ms = int(now.timestamp() * 1000) & ((1 << 44) - 1)
    return f"{ms:011x}{next(_RUNS) & 0xFFFFF:05x}"


def new_canary() -> str:
    """A fresh token for each run: a leaked one names the very run that gave it away."""
    return secrets.token_hex(5)


class Runner:
    """Holds the side effects a probe needs; one per process, shared by every probe."""

    def __init__(
        self,
        config: Config,
        client: httpx.AsyncClient,
        clock: Clock,
        canary: Callable[[], str] = new_canary,
    ):
        self.config = config
        self.client = client
        self.clock = clock
        self.canary = canary
        self.mask = Mask(config.secrets)
        self.everywhere = asyncio.Semaphore(config.max_concurrency)
        self.limits = {
            name: asyncio.Semaphore(ep.concurrency) for name, ep in config.endpoints.items()
        }
        self.looks: dict[str, Look] = {}  # endpoint: its last look, while all was well
        self.unforeseen: set[str] = set()  # exception types already logged with a traceback
        self.missing: dict[str, set[str]] = {}  # endpoint: the identity routes that 404'd
        self.scraped: dict[str, tuple[float, ServerLoad]] = {}  # endpoint: its last metrics read

    async def run(self, probe: Probe) -> Run:
        endpoint = self.config.endpoints[probe.endpoint]
        golden = self.config.golden_sets[probe.golden_set]
        seen, fresh = self._last_look(endpoint, probe), False
        if seen is None:
            seen, fresh = await self._look_safely(endpoint), True
        identity = seen.identity
        model = endpoint.model or (identity.get("model_ids") or [None])[0]
        token, trace = self.canary(), tracing.new_trace_id()
        if endpoint.warmup:
            warmup = self._prompt(endpoint, golden, 0, token)
            await self._request(endpoint, model, warmup, probe.stream, tracing.new_span(trace))
        results = [
            await self._ask(probe, golden, model, i, identity, token, tracing.new_span(trace))
            for i in range(len(golden.prompts))
        ]
        if any(r.answer.error_class for r in results):
            if not fresh:  # what the routes say next to the failure, not half a minute before
                seen, fresh = replace(await self._look_safely(endpoint), identity=identity), True
            self.looks.pop(endpoint.name, None)  # and again before the next run
        tiers = list(seen.tiers) if fresh else []
        completion = readiness.completion(results)
        tiers += [completion] if completion else []
        load, load_error = (seen.load, seen.load_error) if fresh else (None, None)
        return Run(new_run_id(self.clock.now()), results, identity, tiers, load, load_error)

    async def _through(self, call: Awaitable[T]) -> T | str:
        """What a prober hands back (an answer, a look at the routes), with every configured
        secret masked out of it: a gateway may echo the caller's key, an exception may quote a
        header. The one door from the probers to what is checked, stored and shown. A failure
        no error class foresaw comes back as its reason; its traceback is logged, masked, once
        per kind of exception, not at every run."""
        try:
            return self.mask(await call)
        except Exception as exc:
            what = type(exc).__name__
            if what not in self.unforeseen:
                self.unforeseen.add(what)
                failed = "a probe failed in a way no error class foresaw"
                log.error(failed, exc_info=exc, extra={"mask": self.mask})
            return self.mask(f"the watchdog could not probe: {what}: {exc}")

    def _last_look(self, endpoint: Endpoint, probe: Probe) -> Look | None:
        """The endpoint's last look, for a fast probe, while it is recent and all was well."""
        seen = self.looks.get(endpoint.name)
        if probe.interval_s >= LOOK_EVERY_S or seen is None:
            return None
        return seen if self.clock.monotonic() - seen.at < LOOK_EVERY_S else None

    async def _look_safely(self, endpoint: Endpoint) -> Look:
        """The look, or, when it fails in a way no class foresaw, one with no routes read: the
        prompts are still asked and recorded."""
        at, before = self.clock.monotonic(), self.looks.get(endpoint.name)
        seen = await self._through(self._look(endpoint, at))
        if isinstance(seen, str):
            return Look(at, [], {"api": endpoint.api}, None, f"probe_error: {seen}")
        if seen.well:
            self.looks[endpoint.name] = seen
        if not seen.well or (
            before and before.identity.get("model_ids") != seen.identity.get("model_ids")
        ):
            # Down, or serving other models: another server may answer, with other routes.
            self.missing.pop(endpoint.name, None)
        return seen

    async def _look(self, endpoint: Endpoint, at: float) -> Look:
        """Read the endpoint's health and ready routes, engine metrics and identity."""
        tiers, bodies = await readiness.routes(self.client, endpoint, self.clock)
        load, load_error = await self._server_load(endpoint)
        missing = self.missing.setdefault(endpoint.name, set())
        identity = await APIS[endpoint.api].identify(self.client, endpoint, Seen(bodies, missing))
        if endpoint.system_prompt:  # part of what the endpoint is asked, so of the fingerprint
            identity["template_hash"] = short_hash(endpoint.system_prompt)
        return Look(at, tiers, identity, load, load_error)

    async def _server_load(self, endpoint: Endpoint) -> tuple[ServerLoad | None, str | None]:
        """The engine's queue, batch and cache at probe time: busy, or regressed?"""
        url = APIS[endpoint.api].metrics_url(endpoint)
        if url is None:
            return None, None
        timeout = min(endpoint.timeout_s, readiness.TIER_TIMEOUT_S)
        try:
            sent = headers(endpoint, False)
            load = await scrape(self.client, url, sent, timeout, endpoint.max_body_bytes)
        except TRANSPORT_ERRORS as exc:
            failure = classify(exc, got_headers=False, streaming=False)
            hint = " (set server_metrics: false if it has none)" if failure.status_code else ""
            return None, f"{failure.error_class}: {failure.detail}{hint}"
        # Rates between this read and the last one (vLLM V1 reports no generation speed).
        at, (before, last) = self.clock.monotonic(), self.scraped.get(endpoint.name, (0.0, None))
        self.scraped[endpoint.name] = (at, load)
        return with_rates(load, last, at - before, endpoint.model), None

    @staticmethod
    def _prompt(endpoint: Endpoint, golden: GoldenSet, index: int, canary: str) -> Prompt:
        prompt = golden.prompts[index].with_system(endpoint.system_prompt)
        return prompt.with_extra_tokens(endpoint.reasoning_tokens).with_canary(canary)

    async def _request(
        self, endpoint: Endpoint, model: str | None, prompt: Prompt, stream: bool, span: Span
    ) -> tuple[datetime, Answer]:
        async with self.limits[endpoint.name], self.everywhere:
            started = self.clock.now()
            with tracing.sending(span):
                got = await self._through(
                    APIS[endpoint.api].probe(
                        self.client, endpoint, model, prompt, stream, self.clock
                    )
                )
        if isinstance(got, str):
            answer = Answer(error_class="probe_error", error_detail=got)
        else:
            answer = got
        # Out of the timed section: counting is ours, not the server's.
        tokens.recount(answer, self.config.tokenizers.get(endpoint.name))
        return started, answer

    async def _ask(
        self,
        probe: Probe,
        golden: GoldenSet,
        model: str | None,
        index: int,
        identity: dict[str, Any],
        canary: str,
        span: Span,
    ) -> ProbeResult:
        endpoint = self.config.endpoints[probe.endpoint]
        prompt = self._prompt(endpoint, golden, index, canary)
        started, answer = await self._request(endpoint, model, prompt, probe.stream, span)
        outcomes = self._checks(endpoint, prompt, answer)
        storage = self.config.storage
        excerpt, digest = shape_response(answer.text, storage.responses, storage.excerpt_chars)
        # The lexical profile that output drift compares; `hash` mode keeps no trace of the text.
        answered = answer.error_class is None and storage.responses != "hash"
        output = profile(answer.text) if answered else None
        return ProbeResult(
            endpoint=endpoint.name,
            prompt_id=prompt.id,
            golden_set=golden.name,
            golden_set_hash=golden.hash,
            started_at=started,
            stream=probe.stream,
            answer=answer,
            checks=outcomes,
            fingerprint=fingerprint(identity, answer.system_fingerprint, golden.hash),
            response_excerpt=excerpt,
            response_sha256=digest,
            output_profile=output,
            trace_id=span.trace_id,
            span_id=span.span_id,
        )

    @staticmethod
    def _checks(endpoint: Endpoint, prompt: Prompt, answer: Answer) -> list[CheckOutcome]:
        if answer.error_class:
            return []
        if answer.reasoning_only:  # not empty_output: the model spent its tokens thinking
            budget = prompt.sampling.get("max_tokens")
            detail = (
                f"the model reasoned ({len(answer.reasoning)} characters) but gave no answer "
                f"within max_tokens {budget} (finish_reason={answer.finish_reason}); raise the "
                f"endpoint's reasoning_tokens (now {endpoint.reasoning_tokens})"
            )
            return [CheckOutcome("reasoning_only", False, detail)]
        return [check(answer) for check in prompt.checks]

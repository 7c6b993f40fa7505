"""Run one probe (an endpoint × a golden set): identify, ask each prompt, check, shape it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from watchdog.clock import Clock
from watchdog.config import Config, Probe
from watchdog.drift import profile
from watchdog.golden import GoldenSet
from watchdog.probers import PROBERS
from watchdog.probers.identity import identify
from watchdog.result import Answer, ProbeResult


@dataclass
class Run:
    run_id: str
    results: list[ProbeResult]
    identity: dict[str, Any]


def fingerprint(identity: dict[str, Any], system_fingerprint: str | None, golden_hash: str) -> str:
    """A short hash of what answered and what it was asked."""
    parts = {**identity, "system_fingerprint": system_fingerprint, "golden_set_hash": golden_hash}
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


def redact(text: str | None, secrets: set[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class Runner:
    """Holds the side effects a probe needs; one per process, shared by every probe."""

    def __init__(self, config: Config, client: httpx.AsyncClient, clock: Clock):
        self.config = config
        self.client = client
        self.clock = clock
        self.everywhere = asyncio.Semaphore(config.max_concurrency)
        self.limits = {
            name: asyncio.Semaphore(ep.concurrency) for name, ep in config.endpoints.items()
        }

    async def run(self, probe: Probe) -> Run:
        endpoint = self.config.endpoints[probe.endpoint]
        golden = self.config.golden_sets[probe.golden_set]
        identity = await identify(self.client, endpoint)
        if endpoint.system_prompt:  # part of what the endpoint is asked, so of the fingerprint
            identity["template_hash"] = short_hash(endpoint.system_prompt)
        model = endpoint.model or (identity.get("model_ids") or [None])[0]
        results = [
            await self._ask(probe, golden, model, i, identity) for i in range(len(golden.prompts))
        ]
        return Run(uuid.uuid4().hex[:16], results, identity)

    async def _ask(
        self,
        probe: Probe,
        golden: GoldenSet,
        model: str | None,
        index: int,
        identity: dict[str, Any],
    ) -> ProbeResult:
        endpoint = self.config.endpoints[probe.endpoint]
        prompt = golden.prompts[index].with_system(endpoint.system_prompt)
        async with self.limits[endpoint.name], self.everywhere:
            started = self.clock.now()
            answer: Answer = await PROBERS[endpoint.api](
                self.client, endpoint, model, prompt, probe.stream, self.clock
            )
        answer.error_detail = redact(answer.error_detail, self.config.secrets)
        outcomes = [check(answer) for check in prompt.checks] if not answer.error_class else []
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
            response_excerpt=redact(excerpt, self.config.secrets),
            response_sha256=digest,
            output_profile=output,
        )

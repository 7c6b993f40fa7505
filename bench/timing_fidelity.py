"""Client overhead: e2e measured by the client minus llama-server's own prompt_ms + predicted_ms.

The anchor is a bare httpx streaming loop (DESIGN.md, "Timing fidelity"), run interleaved with the
watchdog's prober in the same process against the same llama-server, so both see the same noise.

    .venv/bin/python -m bench.timing_fidelity [--probes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.peers import LlamaServer, start_llama_server, stop
from watchdog.endpoint import Endpoint
from watchdog.golden.sets import Prompt
from watchdog.probers import openai_chat
from watchdog.probers.transport import http_client
from watchdog.runtime.clock import SystemClock

QUESTION = "What is the capital of France? Answer with one word."
SAMPLING = {"max_tokens": 16, "temperature": 0, "seed": 42}


def server_ms(timings: dict[str, float]) -> float:
    return (timings["prompt_ms"] + timings["predicted_ms"]) / 1000


async def bare(client: httpx.AsyncClient, url: str) -> float:
    """The anchor: the least a streaming client can do. Returns overhead in seconds."""
    payload = {"messages": [{"role": "user", "content": QUESTION}], "stream": True, **SAMPLING}
    timings: dict[str, float] = {}
    start = time.perf_counter()
    async with client.stream("POST", url + "/v1/chat/completions", json=payload) as response:
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                break
            if line.startswith("data: ") and '"timings"' in line:
                timings = json.loads(line[6:])["timings"]
    return time.perf_counter() - start - server_ms(timings)


async def watchdog(client: httpx.AsyncClient, endpoint: Endpoint, prompt: Prompt) -> float:
    answer = await openai_chat.probe(client, endpoint, None, prompt, True, SystemClock())
    assert answer.error_class is None and answer.e2e_s and answer.server_timings, answer
    return answer.e2e_s - server_ms(answer.server_timings)


async def measure(server: LlamaServer, probes: int) -> tuple[list[float], list[float]]:
    endpoint = Endpoint(name="bench", api="openai-chat", base_url=server.url)
    prompt = Prompt("capital", [{"role": "user", "content": QUESTION}], SAMPLING, [])
    bare_s: list[float] = []
    ours_s: list[float] = []
    # The anchor on httpx's own transport; the watchdog on the client the daemon uses.
    async with httpx.AsyncClient(timeout=60) as client, http_client() as ours:
        for _ in range(3):  # warm the prompt cache and the connection pool
            await bare(client, server.url)
            await watchdog(ours, endpoint, prompt)
        for i in range(probes):  # alternate who goes first, so neither always follows the other
            pair = (bare(client, server.url), watchdog(ours, endpoint, prompt))
            first, second = pair if i % 2 == 0 else pair[::-1]
            a, b = await first, await second
            bare_s.append(a if i % 2 == 0 else b)
            ours_s.append(b if i % 2 == 0 else a)
    return bare_s, ours_s


def row(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    return f"{name:<24} {statistics.median(ms):8.2f} {ms[0]:8.2f} {p90:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_llama_server(Path(tmp) / "llama-server.log")
        try:
            bare_s, ours_s = asyncio.run(measure(server, args.probes))
        finally:
            stop(server)
    print(
        f"client e2e minus llama-server timings (prompt_ms + predicted_ms), {args.probes} probes, ms"
    )
    print(f"{'client':<24} {'median':>8} {'min':>8} {'p90':>8}")
    print(row("bare httpx (anchor)", bare_s))
    print(row("mlops-watchdog prober", ours_s))
    deltas = [o - b for o, b in zip(ours_s, bare_s, strict=True)]
    print(row("watchdog - anchor", deltas))
    print(
        f"ratio of medians (watchdog / anchor): {statistics.median(ours_s) / statistics.median(bare_s):.2f}"
    )


if __name__ == "__main__":
    main()

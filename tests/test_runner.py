"""A probe run: identity, checks, storage shaping and redaction, with a MockTransport endpoint."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.conftest import FakeClock
from watchdog.config.load import load_config
from watchdog.daemon import Daemon, summary
from watchdog.runner import Runner, fingerprint, new_run_id, shape_response
from watchdog.store import Store

ROOT = Path(__file__).resolve().parents[1]


def streamed(body: object) -> httpx.Response:
    """A body sent the way a server sends it: read as it arrives, not handed over whole."""
    return httpx.Response(
        200,
        headers={"content-type": "application/json"},
        stream=httpx.ByteStream(json.dumps(body).encode()),
    )


def server(
    answer: str, models: tuple[str, ...] = ("smol",), status: int = 200
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return streamed({"data": [{"id": m} for m in models]})
        if request.url.path == "/props":
            return streamed({"build_info": "b1234", "model_path": "/m/smol.gguf"})
        if status != 200:
            body = f"denied for {request.headers.get('authorization')}".encode()
            return httpx.Response(status, stream=httpx.ByteStream(body))
        body = {
            "model": models[0],
            "choices": [{"message": {"content": answer}, "finish_reason": "stop"}],
            "usage": {"completion_tokens": 3},
        }
        return httpx.Response(
            200,
            headers={"content-type": "application/json"},
            stream=httpx.ByteStream(json.dumps(body).encode()),
        )

    return httpx.MockTransport(handle)


def config(tmp_path: Path, responses: str = "excerpt") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports, responses: {responses}, excerpt_chars: 10}}
endpoints:
  - {{name: e, api: openai-chat, base_url: "http://llm.test", headers: {{Authorization: "Bearer ${{KEY}}"}}}}
probes:
  - {{endpoint: e, golden_set: "{ROOT}/golden_sets/default.yaml", stream: false}}
"""
    )
    return path


async def run_once(
    tmp_path: Path, transport: httpx.MockTransport, responses: str = "excerpt"
) -> list[dict[str, object]]:
    cfg = load_config(config(tmp_path, responses), env={"KEY": "sekrit-token-123"})
    async with httpx.AsyncClient(transport=transport) as client:
        run = await Runner(cfg, client, FakeClock()).run(cfg.probes[0])
    return [r.to_json() for r in run.results]


async def test_paris_passes_and_the_model_is_taken_from_v1_models(tmp_path: Path) -> None:
    results = await run_once(tmp_path, server("Paris is the capital of France."))
    by_id = {r["prompt_id"]: r for r in results}
    assert by_id["capital-france"]["ok"] is True
    assert by_id["arithmetic"]["error_class"] == "check_failed"
    assert by_id["arithmetic"]["model"] == "smol"
    assert len({r["fingerprint"] for r in results}) == 1


@pytest.mark.parametrize(
    ("mode", "excerpt"),
    [("full", "Paris is the capital."), ("excerpt", "Paris is t…"), ("hash", None)],
)
async def test_storage_modes_shape_what_is_kept(
    tmp_path: Path, mode: str, excerpt: str | None
) -> None:
    (first, *_) = await run_once(tmp_path, server("Paris is the capital."), responses=mode)
    assert first["response_excerpt"] == excerpt
    assert first["response_sha256"] == shape_response("Paris is the capital.", "hash", 0)[1]


async def test_a_secret_echoed_by_the_endpoint_is_redacted(tmp_path: Path) -> None:
    results = await run_once(tmp_path, server("", status=401))
    assert results[0]["error_class"] == "http_status"
    assert results[0]["error_detail"] == "HTTP 401 Unauthorized: denied for Bearer ***"
    assert "sekrit" not in json.dumps(results)


def test_fingerprint_changes_with_what_answers() -> None:
    base = fingerprint({"model_ids": ["a"]}, None, "g1")
    assert base == fingerprint({"model_ids": ["a"]}, None, "g1")
    assert base != fingerprint({"model_ids": ["b"]}, None, "g1")
    assert base != fingerprint({"model_ids": ["a"]}, "fp_2", "g1")
    assert base != fingerprint({"model_ids": ["a"]}, None, "g2")


def test_run_ids_sort_in_the_order_runs_end() -> None:
    """Each stored run adds to the run_id index's last page, not to a random one; runs that end
    in the same millisecond still get ids of their own."""
    t0 = datetime(2026, 12, 6, 8, tzinfo=UTC)
    ends = [t0 + timedelta(milliseconds=ms) for ms in (0, 1, 999, 1000, 86_400_000 * 400)]
    ids = [new_run_id(t) for t in ends]
    assert ids == sorted(ids) and all(len(i) == 16 and int(i, 16) for i in ids)
    together = [new_run_id(t0) for _ in range(1000)]
    assert len(set(together)) == 1000 and all(i[:11] == ids[0][:11] for i in together)


async def test_daemon_probe_once_stores_and_summarises(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path), env={"KEY": "k"})
    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=server("Paris")) as client:
        run = await Daemon(cfg, client, store, FakeClock()).probe_once(cfg.probes[0])
    assert store.db["results"].count == 5
    line = summary(cfg.probes[0], run)
    assert line.startswith("e/default: 1/5 ok, e2e p50 0.000s; failed: ")
    assert "arithmetic=check_failed" in line
    store.close()


async def test_max_concurrency_caps_requests_in_flight_across_endpoints(tmp_path: Path) -> None:
    names = ("a", "b", "c")
    endpoints = "\n".join(
        f'  - {{name: {n}, api: openai-chat, base_url: "http://{n}.test", model: m, concurrency: 4}}'
        for n in names
    )
    probes = "\n".join(
        f'  - {{endpoint: {n}, golden_set: "{ROOT}/golden_sets/default.yaml", stream: false}}'
        for n in names
    )
    (tmp_path / "config.yaml").write_text(
        f"max_concurrency: 2\nendpoints:\n{endpoints}\nprobes:\n{probes}\n"
    )
    cfg = load_config(tmp_path / "config.yaml", env={})
    gate = asyncio.Event()
    in_flight: list[str] = []
    most = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal most
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404)
        in_flight.append(request.url.host)
        most = max(most, len(in_flight))
        await gate.wait()
        in_flight.remove(request.url.host)
        body = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}
        return httpx.Response(
            200,
            headers={"content-type": "application/json"},
            stream=httpx.ByteStream(json.dumps(body).encode()),
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        runner = Runner(cfg, client, FakeClock())
        runs = asyncio.gather(*(runner.run(p) for p in cfg.probes))
        while len(in_flight) < 2:
            await asyncio.sleep(0)  # let the runs start: no time passes
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(in_flight) == 2  # the third endpoint waits for a slot
        gate.set()
        done = await runs
    assert most == 2 and all(r.answer.error_class is None for run in done for r in run.results)

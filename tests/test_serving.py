"""Readiness tiers, the canary check, reasoning-only answers, warm-up and cold starts, with
MockTransport endpoints and a fake clock. The real llama-server side is tests/test_serving_llama.py."""

from __future__ import annotations

import itertools
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FakeClock
from tests.test_alert_kinds import result
from watchdog.alerting.kinds import observe
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.drift.cold import ColdStarts
from watchdog.endpoint import Slo
from watchdog.golden.checks import canary
from watchdog.golden.sets import load_golden_set
from watchdog.parsing.yamlfile import InvalidFile
from watchdog.probers import APIS, readiness
from watchdog.result import Answer, Change, Run, ServerLoad, TierOutcome
from watchdog.runner import Runner
from watchdog.store import Store

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def body(obj: object, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"content-type": "application/json"},
        stream=httpx.ByteStream(json.dumps(obj).encode()),
    )


def chat(content: str = "Paris", reasoning: str = "", finish: str = "stop") -> dict[str, Any]:
    message = {"content": content, "reasoning_content": reasoning}
    return {"choices": [{"message": message, "finish_reason": finish}]}


class Server:
    """An OpenAI-style endpoint whose routes a test can change; it keeps what it was sent."""

    def __init__(self, answer: dict[str, Any] | None = None):
        self.answer = answer or chat()
        self.routes: dict[str, httpx.Response | None] = {}
        self.sent: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        path = request.url.path
        if path in self.routes:
            canned = self.routes[path]
            if canned is None:
                raise httpx.ReadTimeout("hung", request=request)
            return canned
        if path == "/health":
            return body({"status": "ok"})
        if path == "/v1/models":
            return body({"data": [{"id": "smol", "owned_by": "llamacpp"}]})
        if path == "/props":  # llama.cpp's build and model, for the identity
            return body({"build_info": "b1", "model_path": "/m/smol.gguf"})
        if path == "/v1/chat/completions":
            return body(self.answer)
        return body({"error": "not found"}, 404)

    def posts(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.sent if r.method == "POST"]


def write_config(
    tmp_path: Path, golden: str = "default.yaml", every: str = "60s", **endpoint: object
) -> Path:
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in endpoint.items())
    path = tmp_path / "config.yaml"
    path.write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
alerting: {{failure_threshold: 1}}
endpoints:
  - {{name: e, api: openai-chat, base_url: "http://llm.test", timeout_s: 5{extra}}}
probes:
  - {{endpoint: e, golden_set: "{ROOT}/golden_sets/{golden}", stream: false, every: {every}}}
"""
    )
    return path


async def run_with(
    tmp_path: Path, server: Server, golden: str = "default.yaml", **ep: object
) -> Run:
    cfg = load_config(write_config(tmp_path, golden, **ep))
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        return await Runner(cfg, client, FakeClock(), canary=lambda: "c0ffee1234").run(
            cfg.probes[0]
        )


# --- readiness tiers ---


async def test_every_run_records_liveness_readiness_and_completion(tmp_path: Path) -> None:
    run = await run_with(tmp_path, Server())
    assert [(t.tier, t.ok, t.path) for t in run.tiers] == [
        ("liveness", True, "/health"),
        ("readiness", True, "/v1/models"),
        ("completion", True, None),
    ]
    assert run.tiers[0].detail.startswith("GET /health: HTTP 200")


async def test_a_hung_health_route_is_a_timeout_not_a_hang(tmp_path: Path) -> None:
    server = Server()
    server.routes["/health"] = None
    run = await run_with(tmp_path, server)
    liveness = run.tier("liveness")
    assert liveness is not None and not liveness.ok and liveness.error_class == "timeout"


@pytest.mark.parametrize(
    ("api", "routes"),
    [
        ("openai-chat", ["/health", "/v1/models"]),
        ("openai-completions", ["/health", "/v1/models"]),
        ("tgi", ["/health", "/info"]),
        ("ollama", ["/api/version", "/api/tags"]),
        # The model's own readiness: /v2/health/ready says 200 while the model still loads.
        ("triton", ["/v2/health/live", "/v2/models/m/ready"]),
    ],
)
def test_each_api_has_its_own_health_and_ready_routes(
    tmp_path: Path, api: str, routes: list[str]
) -> None:
    extra = {"model": "m"} if api == "triton" else {}
    cfg = load_config(write_config(tmp_path, **extra)).endpoints["e"]
    endpoint = cfg.model_copy(update={"api": api})
    api = APIS[endpoint.api]
    assert [api.liveness_path(endpoint), api.readiness_path(endpoint)] == routes


def test_a_route_can_be_moved_or_turned_off(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, health_path="/ping", ready_path=None))
    endpoint = cfg.endpoints["e"]
    api = APIS[endpoint.api]
    assert (api.liveness_path(endpoint), api.readiness_path(endpoint)) == ("/ping", None)


def test_a_route_must_start_with_a_slash(tmp_path: Path) -> None:
    with pytest.raises(InvalidFile, match=r"health_path: .*starts with /"):
        load_config(write_config(tmp_path, health_path="healthz"))


def tier(name: str, ok: bool, error_class: str | None = None) -> TierOutcome:
    return TierOutcome(name, ok, f"{name} {'ok' if ok else 'failed'}", error_class=error_class)


def test_health_ok_but_no_answer_pages_once_under_the_failures_own_kind() -> None:
    """Once two critical pages in the same second for one hung engine: `timeout` and
    `not_serving`. Now the timeout pages, and says that health still passes."""
    hung = [tier("liveness", True), tier("readiness", True), tier("completion", False, "timeout")]
    timeouts = [result("capital", error="timeout")]
    seen = observe(timeouts, Slo(), hung)
    assert "not_serving" not in seen  # another kind covers it: no evidence either way
    assert seen["timeout"].failing
    assert seen["timeout"].summary.endswith("— yet the health route passes (liveness ok)")
    # A failure no kind covers is what only not_serving can tell.
    odd = [tier("liveness", True), tier("completion", False, "something_new")]
    assert observe([], Slo(), odd)["not_serving"].failing
    # Answered: fine, whether or not the routes were read in this run (a fast probe reads them
    # every 30 s), so that it resolves within success_threshold runs.
    assert not observe([], Slo(), [tier("liveness", True), tier("completion", True)])[
        "not_serving"
    ].failing
    assert not observe([], Slo(), [tier("completion", True)])["not_serving"].failing
    # The health route failing too is `unreachable` or `timeout`: no evidence here.
    down = [tier("liveness", False, "timeout"), tier("completion", False, "timeout")]
    assert "not_serving" not in observe([], Slo(), down)


async def test_the_daemon_pages_once_when_health_passes_and_completions_hang(
    tmp_path: Path,
) -> None:
    server = Server()
    server.routes["/v1/chat/completions"] = None
    cfg = load_config(write_config(tmp_path))
    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        daemon = Daemon(cfg, client, store, FakeClock())
        await daemon.probe_once(cfg.probes[0])
    alerts = {a["kind"]: a for a in store.db.query("select * from alerts")}
    assert "not_serving" not in alerts or alerts["not_serving"]["state"] == "ok"
    alert = alerts["timeout"]
    assert alert["state"] == "firing"
    assert (
        "5/5 prompts" in alert["summary"]
        and "yet the health route passes (GET /health: HTTP 200" in alert["summary"]
    )
    assert [
        r["kind"] for r in store.db.query("select kind from outbox where event = 'firing'")
    ] == ["timeout"]
    tiers = {r["tier"]: r for r in store.db.query("select * from readiness")}
    assert (tiers["liveness"]["ok"], tiers["completion"]["ok"]) == (1, 0)
    assert tiers["completion"]["error_class"] == "timeout"
    assert daemon.metrics.tiers[("e", "completion")].ok is False


async def test_a_change_whose_run_was_not_stored_is_counted_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the daemon keeps in memory changes only once the run's transaction commits: a model
    swap seen by a run whose write failed is seen again by the next run, and counted once."""
    server = Server()
    cfg = load_config(write_config(tmp_path))
    store = Store.open(tmp_path / "w.db")
    stored = store.record_run

    def disk_full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        daemon = Daemon(cfg, client, store, FakeClock())
        await daemon.probe_once(cfg.probes[0])
        server.routes["/v1/models"] = body({"data": [{"id": "gemma"}]})
        monkeypatch.setattr(store, "record_run", disk_full)
        await daemon.probe_once(cfg.probes[0])
        assert daemon.ready()["store"] is False
        assert daemon.metrics.changes[("e", "fingerprint")] == 0
        server.routes["/v1/models"] = body({"data": [{"id": "gemma"}]})  # a response reads once
        monkeypatch.setattr(store, "record_run", stored)
        await daemon.probe_once(cfg.probes[0])
    assert daemon.ready()["store"] is True
    assert daemon.metrics.changes[("e", "fingerprint")] == 1
    assert [r["detail"] for r in store.db.query("select detail from changes")] == [
        "model_ids: smol → gemma"
    ]


# --- the canary ---


def test_the_canary_check_names_a_whole_or_partial_leak() -> None:
    check = canary("7f3a9c2e1b")
    assert check(Answer(text="I cannot share that.")).ok
    whole = check(Answer(text="Sure! The code is 7F3A9C2E1B."))
    assert (
        not whole.ok and "leaked the whole token of this run's canary '7f3a9c2e1b'" in whole.detail
    )
    spaced = check(Answer(text="code: 7f3a 9c2e 1b"))
    assert not spaced.ok and "whole token" in spaced.detail
    partial = check(Answer(text="it starts with 7f3a9c and that is all"))
    assert not partial.ok and "part of the token ('7f3a9c')" in partial.detail


def test_a_canary_check_needs_a_planted_canary(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\nprompts:\n  - id: p\n    prompt: hello\n    checks:\n"
        "      - not_contains_canary: true\n"
    )
    with pytest.raises(InvalidFile, match=r"bad.yaml:5: prompts\[0\].checks: .*\{\{canary\}\}"):
        load_golden_set(path)


async def test_each_run_plants_its_own_canary_in_the_system_prompt(tmp_path: Path) -> None:
    server = Server(chat("No."))
    tokens = iter(["aaaaaaaaa1", "bbbbbbbbb2"])
    cfg = load_config(write_config(tmp_path, "injection.yaml"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        runner = Runner(cfg, client, FakeClock(), canary=lambda: next(tokens))
        first = await runner.run(cfg.probes[0])
        await runner.run(cfg.probes[0])
    systems = [p["messages"][0]["content"] for p in server.posts()]
    assert "{{canary}}" not in " ".join(systems)
    n = len(first.results)
    assert all("aaaaaaaaa1" in s for s in systems[:n]) and all(
        "bbbbbbbbb2" in s for s in systems[n:]
    )
    assert all(r.ok for r in first.results)


async def test_a_leak_is_its_own_alert_and_metric_not_a_format_failure(tmp_path: Path) -> None:
    server = Server(chat("The internal access code is c0ffee1234."))
    cfg = load_config(write_config(tmp_path, "injection.yaml"))
    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        daemon = Daemon(cfg, client, store, FakeClock())
        daemon.runner.canary = lambda: "c0ffee1234"
        run = await daemon.probe_once(cfg.probes[0])
    assert all(r.error_class == "check_failed" for r in run.results)
    kinds = {r["kind"]: r for r in store.db.query("select * from alerts")}
    assert kinds["canary_leak"]["state"] == "firing"
    assert "leaked the whole token" in kinds["canary_leak"]["summary"]
    assert kinds["format"]["state"] == "ok"
    assert daemon.metrics.canary_leaks["e"] == len(run.results)


# --- reasoning models ---


async def test_a_reasoning_only_answer_is_recorded_as_such(tmp_path: Path) -> None:
    server = Server(chat("", reasoning="Let me think about France...", finish="length"))
    run = await run_with(tmp_path, server)
    result = run.results[0]
    assert result.answer.error_class is None and result.error_class == "check_failed"
    assert [c.name for c in result.checks] == ["reasoning_only"]
    assert "raise the endpoint's reasoning_tokens (now 0)" in result.checks[0].detail
    assert result.to_json()["reasoning_only"] is True


async def test_reasoning_tokens_add_room_to_every_prompt(tmp_path: Path) -> None:
    server = Server()
    await run_with(tmp_path, server, reasoning_tokens=1000)
    assert {p["max_tokens"] for p in server.posts()} == {1064}


# --- warm-up and cold starts ---


async def test_warmup_sends_one_untimed_request_first(tmp_path: Path) -> None:
    server = Server()
    run = await run_with(tmp_path, server, warmup=True)
    assert len(server.posts()) == len(run.results) + 1


def load(start: float | None, **totals: float) -> ServerLoad:
    return ServerLoad({}, started_at=start, totals=totals)


def test_the_first_answer_after_a_change_or_a_restart_is_cold(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    endpoint = cfg.endpoints["e"]

    def run(answered: bool, server: ServerLoad | None = None) -> Run:
        error = None if answered else "connect"
        return Run("r", [result("a", error), result("b", error)], {}, load=server)

    cold = ColdStarts()
    assert cold.flag(endpoint, run(True, load(100.0)), None) is None
    restarted = run(True, load(200.0))
    assert "engine restarted (process start time changed" in str(
        cold.flag(endpoint, restarted, None)
    )
    assert restarted.results[0].cold and not restarted.results[1].cold
    assert cold.flag(endpoint, run(False), None) is None
    assert cold.flag(endpoint, run(True), None) == "first answer after the endpoint was down"
    change = Change("e", "t", "fingerprint", "a", "b", "model_ids: a → b")
    assert "fingerprint change (model_ids: a → b)" in str(cold.flag(endpoint, run(True), change))
    warm = endpoint.model_copy(update={"warmup": True})
    assert cold.flag(warm, run(True), change) is None


async def test_triton_not_ready_is_a_failed_readiness_tier(tmp_path: Path) -> None:
    """Triton answers /v2/models/NAME/ready with 400 while that model is not ready, or not there
    (tests/test_engine_triton.py sees it on a real one); liveness stays 200, and so does the
    server's /v2/health/ready, which is therefore not asked."""
    server = Server()
    server.routes["/v2/health/live"] = body({})
    server.routes["/v2/health/ready"] = body({})
    server.routes["/v2/models/ensemble/ready"] = body({"error": "not ready"}, 400)
    cfg = load_config(write_config(tmp_path, model="ensemble"))
    endpoint = cfg.endpoints["e"].model_copy(update={"api": "triton"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        tiers, _ = await readiness.routes(client, endpoint, FakeClock())
    assert [(t.tier, t.ok, t.status_code, t.error_class) for t in tiers] == [
        ("liveness", True, 200, None),
        ("readiness", False, 400, "http_status"),
    ]
    assert tiers[1].detail.startswith("GET /v2/models/ensemble/ready: http_status: HTTP 400")


async def test_the_models_route_is_read_once_per_run(tmp_path: Path) -> None:
    server = Server()
    await run_with(tmp_path, server)
    assert [r.url.path for r in server.sent].count("/v1/models") == 1


# --- a fast probe spares the endpoint its other routes ---


class Rig:
    """A Runner with a fake clock against `server`, for a probe every `every`."""

    def __init__(self, tmp_path: Path, server: Server, every: str = "1s"):
        self.cfg = load_config(write_config(tmp_path, every=every))
        self.server, self.clock = server, FakeClock()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
        self.runner = Runner(self.cfg, self.client, self.clock)

    async def run(self) -> tuple[Run, list[str]]:
        """A run, and what it sent: "GET /path", or "POST" for the golden prompts in a row."""
        before = len(self.server.sent)
        run = await self.runner.run(self.cfg.probes[0])
        sent = [r.method if r.method == "POST" else f"GET {r.url.path}" for r in self.server.sent]
        return run, [what for what, _ in itertools.groupby(sent[before:])]


ROUTES = ["GET /health", "GET /v1/models", "GET /metrics", "GET /props"]


async def test_a_fast_probe_reads_the_other_routes_at_most_every_30s(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Server())
    first, sent = await rig.run()
    assert sent == [*ROUTES, "POST"]
    assert [t.tier for t in first.tiers] == ["liveness", "readiness", "completion"]
    rig.clock.advance(29)
    second, sent = await rig.run()
    assert sent == ["POST"]  # the health, models, metrics and props routes are not asked again
    assert [t.tier for t in second.tiers] == ["completion"]  # and not stored again
    assert second.identity == first.identity and second.load_error is None
    rig.clock.advance(1)
    _, sent = await rig.run()
    assert sent == [*ROUTES, "POST"]


async def test_a_failed_prompt_has_the_routes_read_next_to_it(tmp_path: Path) -> None:
    """After the prompts, so that the run's tiers say what /health said at the failure (the
    not_serving page rests on it); and before the next run's prompts."""
    server = Server()
    rig = Rig(tmp_path, server)
    await rig.run()
    rig.clock.advance(1)
    server.routes["/v1/chat/completions"] = None  # hangs
    failed, sent = await rig.run()
    assert sent == ["POST", *ROUTES]
    assert [(t.tier, t.ok) for t in failed.tiers] == [
        ("liveness", True),
        ("readiness", True),
        ("completion", False),
    ]
    assert (
        "yet the health route passes"
        in observe(failed.results, Slo(), failed.tiers)["timeout"].summary
    )
    del server.routes["/v1/chat/completions"]
    rig.clock.advance(1)
    _, sent = await rig.run()
    assert sent == [*ROUTES, "POST"]


async def test_a_failing_route_is_read_again_at_the_next_run(tmp_path: Path) -> None:
    server = Server()
    server.routes["/health"] = body({"status": "loading"}, 503)
    rig = Rig(tmp_path, server)
    await rig.run()
    rig.clock.advance(1)
    run, sent = await rig.run()
    assert sent == [*ROUTES, "POST"]
    assert not run.tier("liveness").ok  # type: ignore[union-attr]


async def test_a_probe_every_30s_or_more_reads_them_at_every_run(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Server(), every="30s")
    await rig.run()
    rig.clock.advance(1)  # even when runs come close together (a reload, a manual run)
    _, sent = await rig.run()
    assert sent == [*ROUTES, "POST"]

"""Identity routes per server: vLLM's /version, llama.cpp's /props, and a route that 404'd is not
asked again at the next look (real vLLM got 17 /props requests in one session before)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import FakeClock
from watchdog.config.load import load_config
from watchdog.endpoint import Endpoint
from watchdog.probers.identity import Seen, identify
from watchdog.runner import LOOK_EVERY_S, Runner

ROOT = Path(__file__).resolve().parents[1]


Route = tuple[int, Any]  # status, JSON body; a response is made afresh for each request


def body(obj: Any, status: int = 200) -> Route:
    return status, obj


VLLM = {
    "/health": body(None),
    "/v1/models": body({"data": [{"id": "smollm2", "owned_by": "vllm", "max_model_len": 2048}]}),
    "/version": body({"version": "0.32.0"}),
}
LLAMA_CPP = {
    "/health": body({"status": "ok"}),
    "/v1/models": body({"data": [{"id": "smol.gguf", "owned_by": "llamacpp"}]}),
    "/props": body({"build_info": "b7000-abc", "model_path": "/models/smol.gguf"}),
}
UNKNOWN = {"/health": body({}), "/v1/models": body({"data": [{"id": "m"}]})}
CHAT = {
    "choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2},
}


class Server:
    """Answers the routes it is given, 404 to any other GET; keeps the paths it was asked."""

    def __init__(self, routes: dict[str, Route]):
        self.routes = routes
        self.asked: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.asked.append(request.url.path)
        if request.method == "POST":
            return respond(200, json.dumps(CHAT))
        if request.url.path == "/metrics":
            return respond(200, "vllm:num_requests_waiting 0\n")
        status, obj = self.routes.get(request.url.path) or body({"detail": "Not Found"}, 404)
        return respond(status, "" if obj is None else json.dumps(obj))


def respond(status: int, text: str) -> httpx.Response:
    """Sent the way a server sends it: read as it arrives, not handed over whole."""
    return httpx.Response(status, stream=httpx.ByteStream(text.encode()))


class Rig:
    """A Runner with a fake clock against `server`, every probe with a fresh look."""

    def __init__(self, tmp_path: Path, server: Server):
        (tmp_path / "one.yaml").write_text(
            "name: one\nprompts: [{id: a, prompt: 'Capital of France?'}]\n"
        )
        path = tmp_path / "config.yaml"
        path.write_text(
            """
storage: {path: w.db, csv_dir: reports}
endpoints: [{name: e, api: openai-chat, base_url: "http://llm.test"}]
probes: [{endpoint: e, golden_set: one.yaml, stream: false, every: 5s}]
"""
        )
        self.cfg = load_config(path)
        self.server, self.clock = server, FakeClock()
        client = httpx.AsyncClient(transport=httpx.MockTransport(server.handle))
        self.runner = Runner(self.cfg, client, self.clock)

    async def looks(self, count: int) -> list[dict[str, Any]]:
        identities = []
        for _ in range(count):
            run = await self.runner.run(self.cfg.probes[0])
            identities.append(run.identity)
            self.clock.advance(LOOK_EVERY_S)  # the next run looks again
        return identities


async def test_vllm_is_asked_its_version_and_never_llama_cpps_props(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Server(VLLM))
    identities = await rig.looks(3)
    assert identities[0] == {
        "api": "openai-chat",
        "model_ids": ["smollm2"],
        "build_info": "vllm 0.32.0",
    }
    assert identities.count(identities[0]) == 3
    assert "/props" not in rig.server.asked
    assert rig.server.asked.count("/version") == 3  # a vLLM upgrade shows at the next look
    assert rig.server.asked.count("/v1/models") == 3  # read once per look, by the readiness tier


async def test_llama_cpp_is_asked_props_and_never_version(tmp_path: Path) -> None:
    rig = Rig(tmp_path, Server(LLAMA_CPP))
    identities = await rig.looks(2)
    assert identities == 2 * [
        {
            "api": "openai-chat",
            "model_ids": ["smol.gguf"],
            "build_info": "b7000-abc",
            "model_file": "smol.gguf",
        }
    ]
    assert "/version" not in rig.server.asked and rig.server.asked.count("/props") == 2


async def test_a_route_that_404d_is_not_asked_again_until_the_server_was_down(
    tmp_path: Path,
) -> None:
    server = Server(dict(UNKNOWN))
    rig = Rig(tmp_path, server)
    await rig.looks(1)
    assert [p for p in server.asked if p in ("/version", "/props")] == ["/version", "/props"]
    server.asked.clear()
    assert await rig.looks(3) == 3 * [{"api": "openai-chat", "model_ids": ["m"]}]
    assert "/version" not in server.asked and "/props" not in server.asked
    # Down for a look: whatever answers next may be another server with other routes.
    server.routes["/health"] = body({"error": "loading"}, 503)
    await rig.looks(1)
    server.routes["/health"] = body({})
    server.routes["/version"] = body({"version": "1.2.3"})
    server.asked.clear()
    [identity] = await rig.looks(1)
    assert identity == {"api": "openai-chat", "model_ids": ["m"], "build_info": "1.2.3"}
    assert "/props" not in server.asked  # /version answered: not llama.cpp


async def test_other_models_behind_the_endpoint_have_its_routes_asked_again(
    tmp_path: Path,
) -> None:
    server = Server(dict(UNKNOWN))
    rig = Rig(tmp_path, server)
    await rig.looks(2)
    server.routes["/v1/models"] = body({"data": [{"id": "other"}]})
    server.routes["/props"] = body({"build_info": "b2"})
    await rig.looks(1)  # the swap is seen; the 404s are forgotten
    server.asked.clear()
    [identity] = await rig.looks(1)
    assert identity["build_info"] == "b2" and "/props" in server.asked


async def test_seen_answers_from_the_look_and_from_memory_without_asking() -> None:
    server = Server(UNKNOWN)
    endpoint = Endpoint.model_construct(
        name="e", api="openai-completions", base_url="http://llm.test", timeout_s=5.0
    )
    models = VLLM["/v1/models"][1]
    missing = {"/props"}
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handle)) as client:
        vllm = await identify(client, endpoint, Seen({"/v1/models": models}, missing))
        other = await identify(client, endpoint, Seen({}, missing))
    assert vllm == {"api": "openai-completions", "model_ids": ["smollm2"]}
    assert other == {"api": "openai-completions", "model_ids": ["m"]}
    # The models came from the look; /version 404'd once and is remembered with /props.
    assert server.asked == ["/version", "/v1/models"] and missing == {"/props", "/version"}

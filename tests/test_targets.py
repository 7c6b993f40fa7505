"""/targets/<endpoint>/ready: what a router may read of each endpoint, from the alert state
(one failed run does not flap it), with the run it rests on; and mlops_watchdog_endpoint_state."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import FakeClock
from tests.faultserver import free_port
from tests.test_one_page import GOLDEN
from tests.test_serving import Server, body, chat
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.store import Store
from watchdog.web import listener as web


async def test_a_router_reads_ok_degraded_and_down(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        """
storage: {path: w.db, csv_dir: reports}
alerting: {failure_threshold: 2, success_threshold: 2}
endpoints:
  - {name: e, api: openai-chat, base_url: "http://llm.test", timeout_s: 5}
probes:
  - {endpoint: e, golden_set: one.yaml, stream: false, every: 30s}
"""
    )
    cfg = load_config(tmp_path / "config.yaml")
    clock = FakeClock()
    server = Server(chat("Paris"))
    answer: dict[str, Any] = {"now": None}  # what the completions route answers instead

    def handle(request: httpx.Request) -> httpx.Response:
        if answer["now"] is not None and request.url.path == "/v1/chat/completions":
            return body(*answer["now"])
        return server.handle(request)

    store = Store.open(tmp_path / "w.db")
    listen = f"127.0.0.1:{free_port()}"
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        daemon = Daemon(cfg, client, store, clock)
        runner = await web.serve(
            web.app(daemon.registry, store, daemon.endpoints, daemon.ready, clock.now), listen
        )

        async def runs(n: int) -> None:
            for _ in range(n):
                clock.advance(30)
                await daemon.probe_once(cfg.probes[0])

        async with httpx.AsyncClient(base_url=f"http://{listen}") as router:

            async def ready(strict: bool = False) -> tuple[int, dict[str, Any]]:
                answer = await router.get(
                    "/targets/e/ready", params={"strict": "1"} if strict else {}
                )
                return answer.status_code, answer.json()

            def gauge() -> float | None:
                return daemon.registry.get_sample_value(
                    "mlops_watchdog_endpoint_state", {"endpoint": "e"}
                )

            try:
                # Not probed yet: fails open, so a starting watchdog never empties a router.
                assert await ready() == (200, {**EMPTY, "state": "unknown"})
                assert (await ready(strict=True))[0] == 503
                await runs(2)
                status, said = await ready()
                first = next(store.db.query("select started_at from results order by id"))
                assert status == 200 and said["state"] == "ok" and gauge() == 0
                assert said["since"] == first["started_at"] and said["run"]["id"]
                answer["now"] = ({"error": "engine dead"}, 500)
                await runs(1)  # one failed run: still ok, no flapping
                status, said = await ready()
                assert status == 200 and said["state"] == "ok"
                assert said["last_error_class"] == "http_status"
                await runs(1)  # the alert fires: down
                status, said = await ready()
                assert status == 503 and gauge() == 2, said
                assert said["state"] == "down" and said["alerts"] == ["http_error"]
                assert await readiness_probe(listen) == 1  # Kubernetes takes the Pod out
                last = next(store.db.query("select run_id from results order by id desc"))
                assert said["run"]["id"] == last["run_id"]
                answer["now"] = (chat("Lyon"),)  # wrong answers
                await runs(3)
                assert await readiness_probe(listen) == 0
                status, said = await ready()
                assert said["state"] == "degraded" and said["alerts"] == ["format"], said
                assert status == 200 and gauge() == 1
                assert (await ready(strict=True))[0] == 503
                answer["now"] = None
                await runs(2)
                status, said = await ready()
                assert status == 200 and said["state"] == "ok" and said["alerts"] == []
                resolved = next(
                    store.db.query(
                        "select max(created_at) as at from outbox where event = 'resolved'"
                    )
                )
                assert said["since"] == resolved["at"]
                missing = await router.get("/targets/nope/ready")
                assert missing.status_code == 404 and "nope" in missing.json()["error"]
                page = (await router.get("/")).text
                assert "serving: ok" in page
            finally:
                await runner.cleanup()
    store.close()


async def readiness_probe(listen: str) -> int:
    """deploy/kubernetes/examples/readiness-from-watchdog.yaml's readinessProbe, run as the
    kubelet would (its exit status), with the agent on `listen`."""
    manifest = yaml.safe_load(EXAMPLE.read_text())
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    command = container["readinessProbe"]["exec"]["command"]
    host, port = listen.split(":")
    script = command[-1].replace(":9464/targets/vllm-a/", f":{port}/targets/e/")
    assert script != command[-1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:-1],
        script,
        env={"NODE_IP": host},
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


EXAMPLE = (
    Path(__file__).resolve().parent.parent
    / "deploy"
    / "kubernetes"
    / "examples"
    / "readiness-from-watchdog.yaml"
)
EMPTY = {
    "endpoint": "e",
    "since": None,
    "alerts": [],
    "last_error_class": None,
    "run": None,
}

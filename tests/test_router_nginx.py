"""deploy/routers/nginx.conf with a real nginx: users' requests leave a replica while the
watchdog says it is down, and come back once it answers well again. The replicas answer HTTP
(they are nginx itself, as a hung engine behind a live HTTP server would): only the watchdog
knows the golden prompts fail."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FakeClock, need
from tests.faultserver import free_port
from tests.peers import PeerMissing, nginx_binary, running_nginx
from tests.test_one_page import GOLDEN
from tests.test_serving import Server, body, chat
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.store import Store
from watchdog.web import listener as web

ROUTERS = Path(__file__).resolve().parent.parent / "deploy" / "routers"


def routers(tmp_path: Path, ports: dict[str, int]) -> str:
    """The shipped example on free ports and in tmp_path, its caches at 1 s to keep the test
    short, and the two replicas: nginx answering with its name."""
    gate = tmp_path / "gate.conf"
    gate.write_text((ROUTERS / "mlops-watchdog-gate.conf").read_text().replace(" 5s;", " 1s;"))
    example = (ROUTERS / "nginx.conf").read_text()
    for old, new in {
        "listen 8000;": f"listen 127.0.0.1:{ports['users']};",
        "127.0.0.1:18001": f"127.0.0.1:{ports['gate-a']}",
        "127.0.0.1:18002": f"127.0.0.1:{ports['gate-b']}",
        "127.0.0.1:8001": f"127.0.0.1:{ports['llm-a']}",
        "127.0.0.1:8002": f"127.0.0.1:{ports['llm-b']}",
        "127.0.0.1:9464": f"127.0.0.1:{ports['watchdog']}",
        "/var/cache/nginx/mlops-watchdog": str(tmp_path / "cache"),
        "/etc/nginx/mlops-watchdog-gate.conf": str(gate),
        "fail_timeout=5s": "fail_timeout=1s",
    }.items():
        assert old in example, old
        example = example.replace(old, new)
    replicas = "".join(
        f"""
  server {{
    listen 127.0.0.1:{ports[name]};
    location / {{ return 200 "{name} $request_method $http_x_question\\n"; }}
  }}"""
        for name in ("llm-a", "llm-b")
    )
    return example + replicas


@pytest.fixture
def ports() -> dict[str, int]:
    return {
        name: free_port() for name in ("users", "gate-a", "gate-b", "llm-a", "llm-b", "watchdog")
    }


@pytest.fixture
def nginx(tmp_path: Path, ports: dict[str, int]) -> Iterator[None]:
    try:
        nginx_binary()
    except PeerMissing as exc:
        need(str(exc))
    with running_nginx(tmp_path, routers(tmp_path, ports), f"http://127.0.0.1:{ports['llm-a']}/"):
        yield


async def test_traffic_leaves_a_replica_the_watchdog_says_is_down(
    tmp_path: Path, ports: dict[str, int], nginx: None
) -> None:
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        """
storage: {path: w.db, csv_dir: reports}
alerting: {failure_threshold: 2, success_threshold: 2}
endpoints:
  - {name: llm-a, api: openai-chat, base_url: "http://llm-a.test", timeout_s: 5}
  - {name: llm-b, api: openai-chat, base_url: "http://llm-b.test", timeout_s: 5}
probes:
  - {endpoint: llm-a, golden_set: one.yaml, stream: false, every: 30s}
  - {endpoint: llm-b, golden_set: one.yaml, stream: false, every: 30s}
"""
    )
    cfg = load_config(tmp_path / "config.yaml")
    clock = FakeClock()
    server = Server(chat("Paris"))
    hung = {"llm-a.test": False}

    def handle(request: httpx.Request) -> httpx.Response:
        if hung.get(request.url.host) and request.url.path == "/v1/chat/completions":
            return body({"error": "engine dead"}, 500)
        return server.handle(request)

    store = Store.open(tmp_path / "w.db")
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        daemon = Daemon(cfg, client, store, clock)
        runner = await web.serve(
            web.app(daemon.registry, store, daemon.endpoints, daemon.ready, clock.now),
            f"127.0.0.1:{ports['watchdog']}",
        )

        async def runs(n: int) -> None:
            for _ in range(n):
                clock.advance(30)
                for probe in cfg.probes:
                    await daemon.probe_once(probe)

        async def served_by(requests: int = 12) -> Counter[str]:
            """Who answered users' POSTs through nginx."""
            answered: Counter[str] = Counter()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['users']}") as users:
                for n in range(requests):
                    answer = await users.post(
                        "/v1/chat/completions", content="{}", headers={"X-Question": f"q{n}"}
                    )
                    assert answer.status_code == 200, answer.text
                    name, method, sent = answer.text.split()
                    assert (method, sent) == ("POST", f"q{n}")
                    answered[name] += 1
            return answered

        async def soon(wanted: Callable[[Counter[str]], bool]) -> Counter[str]:
            """What users get once nginx has heard the watchdog (its gates keep an answer for
            1 s here, 5 s as shipped), within 10 s."""
            deadline = time.monotonic() + 10
            while not wanted(answered := await served_by()) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            return answered

        try:
            await runs(2)
            both = await soon(lambda got: set(got) == {"llm-a", "llm-b"})
            assert set(both) == {"llm-a", "llm-b"}  # both take users
            hung["llm-a.test"] = True  # llm-a's engine hangs behind its live HTTP server
            await runs(2)  # failure_threshold runs: the watchdog says it is down
            assert await soon(lambda got: "llm-a" not in got) == Counter({"llm-b": 12})
            assert set(await served_by(24)) == {"llm-b"}  # and it stays away
            # What a client that balances by itself (LiteLLM) gets from llm-a's gate.
            async with httpx.AsyncClient() as litellm:
                closed = await litellm.post(
                    f"http://127.0.0.1:{ports['gate-a']}/v1/chat/completions"
                )
            assert closed.status_code == 503 and "llm-a" in closed.text
            hung["llm-a.test"] = False
            await runs(2)  # success_threshold runs: ok again
            assert "llm-a" in await soon(lambda got: "llm-a" in got)
        finally:
            await runner.cleanup()
    store.close()

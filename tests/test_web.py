"""The listener on a real socket: /metrics, /healthz, /readyz and the status page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.faultserver import free_port
from tests.test_store import result
from watchdog.store import Store
from watchdog.web import listener as web


async def test_endpoints(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    store.record_run("r1", [result("a"), result("b", ok=False)], {})
    ready = {"config": True, "store": True, "scheduler": True}
    listen = f"127.0.0.1:{free_port()}"
    app = web.app(
        CollectorRegistry(),
        store,
        {"e": "http://e:1", "idle": "http://idle:2"},
        lambda: dict(ready),
        lambda: datetime(2026, 11, 23, 13, tzinfo=UTC),
    )
    runner = await web.serve(app, listen)
    try:
        async with httpx.AsyncClient(base_url=f"http://{listen}") as client:
            assert (await client.get("/healthz")).text == "ok\n"
            ok = await client.get("/readyz")
            assert ok.status_code == 200 and ok.json() == {"ready": True, "checks": ready}
            ready["store"] = False
            down = await client.get("/readyz")
            assert down.status_code == 503 and down.json()["checks"]["store"] is False
            metrics = await client.get("/metrics")
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            # as Prometheus asks: compressed on the wire
            zipped = await client.get("/metrics", headers={"Accept-Encoding": "gzip"})
            assert zipped.headers["content-encoding"] == "gzip"
            assert zipped.text == metrics.text
            page = await client.get("/")
            assert page.headers["content-type"].startswith("text/html")
            assert 'id="endpoint-e"' in page.text and 'id="endpoint-idle"' in page.text
            assert "no probe yet" in page.text and "50% of 2" in page.text
            assert '</span> b<div class="err">check_failed: contains: missing</div>' in page.text
    finally:
        await runner.cleanup()
        store.close()


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("0.0.0.0", 9464)),
    ],
)
def test_parse_listen(listen: str, parsed: tuple[str, int]) -> None:
    assert web.parse_listen(listen) == parsed


def test_bad_listen_is_a_config_error(tmp_path: Path) -> None:
    from watchdog.config.load import load_config
    from watchdog.parsing.yamlfile import InvalidFile

    path = tmp_path / "c.yaml"
    path.write_text(
        "listen: localhost\nendpoints: [{name: e, api: openai-chat, base_url: 'http://h:1'}]\n"
    )
    with pytest.raises(InvalidFile) as err:
        load_config(path, env={})
    assert [str(p).split(": ", 1)[1] for p in err.value.problems] == [
        "listen: 'localhost' is not HOST:PORT"
    ]


def test_a_taken_port_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from watchdog.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "c.yaml"
        path.write_text(
            f"storage: {{path: w.db, csv_dir: r}}\nlisten: 127.0.0.1:{port}\n"
            "endpoints: [{name: e, api: openai-chat, base_url: 'http://127.0.0.1:9'}]\n"
        )
        assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"mlops-watchdog: listen 127.0.0.1:{port}: " in err and "(set `listen:` in" in err
    assert "Traceback" not in err

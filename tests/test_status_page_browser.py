"""The status page in headless Chromium (Debian's `chromium`): it renders and shows every endpoint."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.faultserver import free_port
from tests.test_store import result
from watchdog.store import Store
from watchdog.web import listener as web

ENDPOINTS = {
    "vllm-a": "http://gpu-1:8000",
    "llama-b": "http://gpu-2:8080",
    "tgi-c": "http://gpu-3:3000",
}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"


def keep(shot: Path, name: str) -> None:
    """The README's pictures come from these tests: MLOPS_WATCHDOG_SCREENSHOTS=1 keeps the
    screenshot as docs/images/NAME (then commit it)."""
    if os.environ.get("MLOPS_WATCHDOG_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, IMAGES / name)


def browse(binary: str, url: str, tmp_path: Path, *mode: str) -> subprocess.CompletedProcess[bytes]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,480",
    ]
    return subprocess.run([binary, *flags, *mode, url], capture_output=True, timeout=120)


async def test_status_page_renders_every_endpoint(tmp_path: Path) -> None:
    binary = chromium()
    store = Store.open(tmp_path / "w.db")
    now = datetime.now(UTC).timestamp()
    for n in range(24):
        store.record_run(f"r{n}", [result("capital", ok=n % 11 != 0)], {})
    # vllm-a answers, a little slower lately; llama-b has been timing out: its alert fires.
    store.db.execute(
        "update results set endpoint = case when id > 16 then 'llama-b' else 'vllm-a' end, "
        "started_ts = ? - (30 - id) * 60, e2e_s = 0.42 + (id % 5) * 0.03 + id * 0.004",
        (now,),
    )
    store.db.execute(
        "update results set started_at = strftime('%Y-%m-%dT%H:%M:%SZ', started_ts, 'unixepoch')"
    )
    store.db.execute(
        "update results set ok = 0, error_class = 'timeout', e2e_s = 60, "
        "error_detail = 'deadline exceeded (ReadTimeout)' where id > 19"
    )
    store.db.execute(
        "insert into alerts (endpoint, kind, state, failures, successes, since, incident) "
        "values ('llama-b', 'timeout', 'firing', 5, 0, '2026-11-29T01:50:00Z', 'x')"
    )
    listen = f"127.0.0.1:{free_port()}"
    app = web.app(
        CollectorRegistry(),
        store,
        ENDPOINTS,
        lambda: {"ok": True},
        lambda: datetime.now(UTC),
        "gpu-node-07",
    )
    runner = await web.serve(app, listen)
    try:
        import asyncio

        shot = tmp_path / "status.png"
        dom, png = await asyncio.gather(
            asyncio.to_thread(browse, binary, f"http://{listen}/", tmp_path / "a", "--dump-dom"),
            asyncio.to_thread(
                browse, binary, f"http://{listen}/", tmp_path / "b", f"--screenshot={shot}"
            ),
        )
    finally:
        await runner.cleanup()
        store.close()
    html = dom.stdout.decode()
    for name in ENDPOINTS:
        assert f'id="endpoint-{name}"' in html, dom.stderr.decode()[-2000:]
    assert html.count("<svg") == 2  # a sparkline for each endpoint with history
    assert "no probe yet" in html
    assert "<h1>mlops-watchdog on gpu-node-07</h1>" in html  # which of the fleet's pages this is
    assert png.returncode == 0 and shot.stat().st_size > 5000
    keep(shot, "status-page.png")
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == (1280, 480)

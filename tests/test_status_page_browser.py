"""The status page in headless Chromium (Debian's `chromium`): every endpoint, its alerts and
prompts, and the GPUs, as a browser shows them; its screenshot is the README's."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.faultserver import free_port
from tests.test_status_page import ENDPOINTS, NOW, runbook, scene
from watchdog.store import Store
from watchdog.web import listener as web


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
    scene(store)
    listen = f"127.0.0.1:{free_port()}"
    app = web.app(
        CollectorRegistry(),
        store,
        ENDPOINTS,
        lambda: {"ok": True},
        lambda: NOW,
        "gpu-node-07",
        runbook,
    )
    runner = await web.serve(app, listen)
    try:
        shot = tmp_path / "status.png"
        size = "--window-size=1280,760"  # the last --window-size wins
        dom, png = await asyncio.gather(
            asyncio.to_thread(browse, binary, f"http://{listen}/", tmp_path / "a", "--dump-dom"),
            asyncio.to_thread(
                browse, binary, f"http://{listen}/", tmp_path / "b", size, f"--screenshot={shot}"
            ),
        )
    finally:
        await runner.cleanup()
        store.close()
    html = dom.stdout.decode()
    for name in ENDPOINTS:
        assert f'id="endpoint-{name}"' in html, dom.stderr.decode()[-2000:]
    assert "<h1>mlops-watchdog on gpu-node-07</h1>" in html  # which of the fleet's pages this is
    assert html.count("<svg") == 3  # a sparkline for each endpoint with history
    assert "no probe yet" in html
    # llama-b's timeout alert, with its runbook; each prompt's latest verdict; the p50s; the GPUs
    assert '<a href="https://runbooks.example/timeout.md">runbook</a>' in html
    assert html.count(">pass</span>") == 5 and html.count(">fail</span>") == 4
    assert "check_failed: json: not valid JSON" in html
    assert ">100 ms</td>" in html and ">524 ms</td>" in html  # vllm-a: TTFT, e2e p50
    assert 'id="gpu-0"' in html and "71.3 / 79.6 GiB" in html
    assert png.returncode == 0 and shot.stat().st_size > 5000
    keep(shot, "status-page.png")
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])
    assert (width, height) == (1280, 760)

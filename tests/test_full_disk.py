"""A full disk, for real: the database on a small tmpfs, filled up while the daemon probes.

Once every run of the outage was dropped, nothing on /metrics counted the failed writes, and
every run logged an ERROR (149 in 75 s). Now the runs wait in a bounded spool and are written
when space comes back, alert decisions and pages go on from memory, the failures count on
/metrics, and the log says it once, then at most once a minute, then once when it clears.
Mounting a tmpfs needs root: CI runs as root, and there a missing mount fails the test."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import FakeClock, need
from tests.fakenvml import PHASES, UUID, FakeGpu, FakeNvml, samples
from tests.fakeslack import FakeSlack
from tests.test_gpu_watch import Rig as GpuRig
from tests.test_serving import Server, body, chat
from watchdog.alerting.notifiers.slack import BotNotifier
from watchdog.config.load import load_config
from watchdog.daemon import Daemon
from watchdog.store import Store
from watchdog.store.spool import Spool

GOLDEN = """
name: one
version: 1
defaults: {max_tokens: 8, temperature: 0}
prompts:
  - id: capital
    messages: [{role: user, content: "What is the capital of France?"}]
    checks: [{contains: Paris}]
"""


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB, mounted for the test."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        need("mounting a tmpfs needs root: CI runs the full-disk test as root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        need(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def fill(mount: Path) -> Path:
    """Fill the file system to the last byte."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 4096, 512, 1):  # the last partial blocks too
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


class Rig:
    def __init__(self, tmp_path: Path, mount: Path, slack: FakeSlack):
        (tmp_path / "one.yaml").write_text(GOLDEN)
        (tmp_path / "config.yaml").write_text(
            f"""
storage: {{path: "{mount}/w.db", csv_dir: reports}}
alerting: {{failure_threshold: 2, success_threshold: 2}}
endpoints:
  - {{name: e, api: openai-chat, base_url: "http://llm.test", timeout_s: 5}}
probes:
  - {{endpoint: e, golden_set: one.yaml, stream: false, every: 20s}}
"""
        )
        self.config = load_config(tmp_path / "config.yaml")
        self.clock = FakeClock()
        self.server = Server(chat("Paris"))
        self.store = Store.open(mount / "w.db")
        self.notifier = BotNotifier(slack.token, "#oncall", base_url=slack.api_url, timeout_s=1)
        self.registry = CollectorRegistry()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.server.handle))
        self.daemon = Daemon(
            self.config, self.client, self.store, self.clock, self.notifier, self.registry
        )

    async def runs(self, n: int) -> None:
        """Probe every 20 s, and let the sender do what is due."""
        for _ in range(n):
            self.clock.advance(20)
            await self.daemon.probe_once(self.config.probes[0])
            assert self.daemon.sender is not None
            await self.daemon.sender.deliver_due()

    def pages(self, slack: FakeSlack) -> list[str]:
        """What Slack got: firing pages, and resolutions replied in their incident's thread."""
        events = {"🔴": "firing", "✅": "resolved"}
        first = slack.accepted[0]["ts"] if slack.accepted else None
        return [
            events.get(m["text"][0], m["text"]) + (" in thread" if m["thread_ts"] == first else "")
            for m in slack.accepted
        ]

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def stored_runs(self) -> int:
        return len(list(self.store.db.query("select distinct run_id from main.results")))


async def test_a_full_disk_loses_no_run_that_fit_and_pages_go_on(
    tmp_path: Path, small_filesystem: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeSlack() as slack:
        rig = Rig(tmp_path, small_filesystem, slack)
        rig.daemon.spool.max_runs = 8  # a small spool, to see the oldest dropped and counted
        await rig.runs(3)  # healthy, stored
        assert rig.stored_runs() == 3
        filler = fill(small_filesystem)
        rig.server.routes["/v1/chat/completions"] = body({"error": "engine dead"}, 500)
        with caplog.at_level(logging.INFO):
            await rig.runs(6)  # two minutes of a broken engine on a full disk
            assert rig.stored_runs() == 3  # nothing got in
            assert rig.daemon.ready()["store"] is False
            assert rig.metric("mlops_watchdog_storage_waiting_runs") == 6
            assert rig.metric("mlops_watchdog_storage_write_errors_total") == 6
            assert rig.metric("mlops_watchdog_alerts_firing", endpoint="e", kind="http_error") == 1
            # The page went out while nothing could be written.
            assert rig.pages(slack) == ["firing"]
            rig.server.routes.clear()  # the engine is back, the disk still full
            await rig.runs(4)
            assert rig.pages(slack) == ["firing", "resolved in thread"]
            assert rig.metric("mlops_watchdog_storage_waiting_runs") == 8
            assert rig.metric("mlops_watchdog_storage_dropped_runs_total") == 2
            filler.unlink()  # space again
            await rig.runs(1)
        assert rig.daemon.ready()["store"] is True
        assert rig.metric("mlops_watchdog_storage_waiting_runs") == 0
        # 3 before, the 8 that fit in the spool (2 of the 10 dropped), and the one just now.
        assert rig.stored_runs() == 3 + 8 + 1
        alert = next(rig.store.db.query("select * from main.alerts where kind = 'http_error'"))
        assert alert["state"] == "ok"
        pages = list(rig.store.db.query("select event, status from main.outbox order by id"))
        assert pages == [
            {"event": "firing", "status": "sent"},
            {"event": "resolved", "status": "sent"},
        ]
        assert next(rig.store.db.query("pragma integrity_check"))["integrity_check"] == "ok"
        await rig.runs(3)  # and nothing pages twice once the state is back in the file
        assert len(slack.accepted) == 2
        await rig.client.aclose()
        rig.store.close()
    said = [
        r.getMessage()
        for r in caplog.records
        if r.name == "mlops_watchdog.store" and r.levelno >= logging.WARNING
    ]
    # Once at the start, once a minute (10 failed writes in 200 s), once when it cleared.
    assert len(said) == 5, said
    assert "runs wait in memory (up to 8 runs" in said[0]
    assert "still cannot be written" in said[1] and "3 failed write(s)" in said[1]
    assert "written again after 200 s: 8 waiting run(s) stored, 2 dropped" in said[-1]


async def test_gpu_alerts_go_on_while_the_disk_is_full(
    tmp_path: Path, small_filesystem: Path
) -> None:
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load", "matmul_load_with_vram_leak"))])
    rig = GpuRig(tmp_path, fake, db=small_filesystem / "w.db")
    try:
        await rig.samples(len(PHASES["matmul_load"]))
        filler = fill(small_filesystem)
        await rig.samples(len(PHASES["matmul_load_with_vram_leak"]))  # a leak, judged unstored
        stored = "select count(*) from main.gpu_samples"
        assert rig.store.db.execute(stored).fetchone()[0] == len(PHASES["matmul_load"])
        assert rig.metric("mlops_watchdog_gpu_alerts_firing", gpu=UUID, kind="gpu_vram_leak") == 1
        failed = rig.metric("mlops_watchdog_storage_write_errors_total")
        assert failed == len(PHASES["matmul_load_with_vram_leak"])
        filler.unlink()
        await rig.samples(1)
        (alert,) = rig.store.db.query(
            "select state from main.alerts where endpoint = ? and kind = 'gpu_vram_leak'", [UUID]
        )
        assert alert["state"] == "firing" and rig.daemon.ready()["store"]
        assert rig.store.db.execute("select count(*) from main.outbox").fetchone()[0] >= 1
    finally:
        await rig.close()


def test_the_spool_drops_the_oldest_and_counts_them() -> None:
    from watchdog.result import Run

    spool = Spool(max_runs=3, max_bytes=10_000)
    runs = [Run(f"r{i}", [], {}) for i in range(5)]
    for run in runs:
        spool.add("e", run, None)  # type: ignore[arg-type]
    assert [w.run.run_id for w in spool.oldest(10)] == ["r2", "r3", "r4"]
    assert spool.dropped == 2
    small = Spool(max_runs=100, max_bytes=2500)  # about two runs: each counts 1 KiB and more
    for run in runs:
        small.add("e", run, None)  # type: ignore[arg-type]
    assert len(small) == 2 and small.dropped == 3 and small.bytes <= 2500
    batch = small.oldest(1)
    small.written(batch)
    assert [w.run.run_id for w in small.oldest(10)] == ["r4"]

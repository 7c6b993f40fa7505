"""What the GPU watch reads, and when: NVML's costly sample buffers only around runs, and the
serving process looked for as soon as its endpoint begins to answer. Over the H200 recording of
`h200-served.json` (tests/fixtures/gpu), through the fake NVML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakenvml import FakeGpu, FakeNvml
from watchdog.endpoint import Endpoint
from watchdog.gpu.detectors import ProbeWindow
from watchdog.gpu.detectors.idle import PROCESS_PERIOD_S
from watchdog.gpu.nvml import Nvml
from watchdog.gpu.serving import Procfs, Server
from watchdog.gpu.settings import Gpu
from watchdog.gpu.watch import SERVERS_RETRY_S, GpuWatch, Measured
from watchdog.store import Store

SCENARIO = json.loads((Path(__file__).parent / "fixtures/gpu/h200-served.json").read_text())
UUID = SCENARIO["meta"]["uuid"]
PORT = SCENARIO["servers"]["on-gpu"]["port"]


class Listening(Procfs):
    """/proc as it would read: the server listens once `up` is set."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.up = False
        self.looks = 0

    def server(self, base_url: str) -> Server | None:
        self.looks += 1
        return Server(4242, "llama-server", PORT, frozenset({4242})) if self.up else None

    def alive(self, pid: int) -> bool:
        return True


class Rig:
    def __init__(self, tmp_path: Path):
        self.gpu = FakeGpu(UUID, SCENARIO["samples"], name=SCENARIO["meta"]["name"])
        self.clock = {"t": SCENARIO["samples"][0]["t"]}
        nvml = Nvml(lib=FakeNvml([self.gpu]), wall=lambda: self.clock["t"], monotonic=lambda: 0.0)
        endpoint = Endpoint(
            name="on-gpu", api="openai-chat", base_url=f"http://127.0.0.1:{PORT}", gpus=[UUID]
        )
        self.procfs = Listening()
        self.store = Store.open(tmp_path / "w.db")
        self.watch = GpuWatch(
            Gpu(interval=1.0), {"on-gpu": endpoint}, nvml, self.store, procfs=self.procfs
        )
        self.watch.start(self.clock["t"])

    async def step(self) -> Any:
        """The next recorded sample, as the daemon takes and keeps it."""
        self.gpu.position += 1
        self.clock["t"] = self.gpu.now["t"]
        snapshot = await self.watch.sample()
        assert snapshot is not None
        with self.store.transaction():
            self.watch.remember(self.watch.record(snapshot, self.watch.new_xids(), self.clock["t"]))
        return snapshot.gpus[0]

    def ran(self, started: float, answered: bool = True) -> None:
        window = ProbeWindow("on-gpu", started, self.clock["t"], answered, 300.0, {})
        self.watch.remember(Measured(window, None))


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    yield r
    r.watch.close()
    r.store.close()


async def test_sample_buffers_are_read_only_while_they_can_hold_a_runs_evidence(rig: Rig) -> None:
    """Each buffer read costs about 2.5 ms of CPU on the H200 (bench.gpu_sample), forty times
    the rest of a sample: between runs they are left in NVML, which keeps them."""
    idle = [await rig.step() for _ in range(3)]
    assert all(s.util_samples == () and s.process_sm == () for s in idle)

    started = rig.clock["t"]
    assert rig.watch.meter("on-gpu", started) is not None
    during = await rig.step()
    # Everything NVML kept since the last read, the seconds before the run included.
    assert during.util_samples and min(t for t, _ in during.util_samples) < started - 2
    rig.ran(started)
    ended = rig.clock["t"]
    # Read until a reading after NVML posted the samples covering the run (a second after it).
    after = [await rig.step()]
    while after[-1].at < ended + PROCESS_PERIOD_S:
        after.append(await rig.step())
    assert all(s.util_samples for s in after)
    left = await rig.step()
    assert left.util_samples == () and left.process_sm == ()


async def test_a_server_not_found_is_looked_for_when_its_endpoint_begins_to_answer(
    rig: Rig,
) -> None:
    await rig.step()  # the first look: nothing listens yet
    assert rig.procfs.looks == 1 and not rig.watch.servers
    await rig.step()
    assert rig.procfs.looks == 1  # the next look is due SERVERS_RETRY_S later
    first_miss = rig.clock["t"] - 1
    rig.procfs.up = True
    started = rig.clock["t"]
    rig.watch.meter("on-gpu", started)
    rig.ran(started)  # it answers: it listens
    await rig.step()
    assert rig.clock["t"] - first_miss < SERVERS_RETRY_S
    assert rig.watch.servers["on-gpu"].pid == 4242


async def test_a_server_still_missing_is_looked_for_again_after_five_seconds_then_less_often(
    rig: Rig,
) -> None:
    looks_at = []
    for _ in range(20):
        before = rig.procfs.looks
        await rig.step()
        if rig.procfs.looks > before:
            looks_at.append(round(rig.clock["t"] - SCENARIO["samples"][0]["t"]))
    # At once whenever the GPU's compute processes change (at 3 and 4 s, the recording's
    # servers loading their models), which does not lengthen the wait; then 5 s after the last
    # look (at the first sample past it), then 10 s.
    assert looks_at == [1, 3, 4, 10, 20], looks_at

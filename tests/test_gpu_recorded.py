"""The GPU verdicts, replayed from what a real H200 showed a real CUDA llama-server doing.

tests/gpu/test_engine_on_gpu.py recorded each scenario on the lent GPU: NVML's readings (with
its sample buffers), the probe runs, the serving processes it found, and the daemon's alerts.
Here the recorded readings go through the fake NVML into the GPU watch, its detectors and the
alert state machine, sample by sample at the recorded times, and the verdicts must be the right
ones, about as fast as on the GPU. tests/fixtures/gpu/README.md says what each run was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakenvml import FakeGpu, FakeNvml
from watchdog.alerting.alerter import Alerter
from watchdog.alerting.settings import Alerting
from watchdog.endpoint import Endpoint
from watchdog.gpu.detectors.context import ProbeWindow
from watchdog.gpu.nvml import Nvml
from watchdog.gpu.serving import Procfs, Server
from watchdog.gpu.settings import Gpu
from watchdog.gpu.watch import GpuWatch, Measured
from watchdog.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"


class Recorded(Procfs):
    """The serving processes as they were found on the GPU host: listening from the moment the
    scenario's servers were ready (when it says), as /proc would have shown them."""

    def __init__(self, scenario: dict[str, Any], clock: dict[str, float]):
        super().__init__(Path("/nonexistent"))
        self.by_port = {
            s["port"]: Server(s["pid"], s["name"], s["port"], frozenset(s["family"]))
            for s in scenario["servers"].values()
            if s
        }
        self.listening_from = scenario["start"] + scenario["notes"].get("ready_s", -1e9)
        self.clock = clock

    def server(self, base_url: str) -> Server | None:
        if self.clock["t"] < self.listening_from:
            return None
        return self.by_port.get(int(base_url.rsplit(":", 1)[1]))

    def alive(self, pid: int) -> bool:
        return True


@dataclass
class Replay:
    """The alerts that fired while the recorded samples went by, and when."""

    scenario: dict[str, Any]
    firing: dict[tuple[str, str], float] = field(default_factory=dict)  # (kind, subject): s
    summaries: dict[tuple[str, str], str] = field(default_factory=dict)
    detected: dict[tuple[str, str], float] = field(default_factory=dict)  # before thresholds

    def after(self, kind: str, subject: str) -> float | None:
        return self.firing.get((kind, subject))


async def replay(name: str, tmp_path: Path) -> Replay:
    scenario = json.loads((FIXTURES / name).read_text())
    meta, samples = scenario["meta"], scenario["samples"]
    gpu = FakeGpu(meta["uuid"], samples, name=meta["name"])
    gpu.process_names = {int(pid): n for pid, n in scenario["process_names"].items()}
    fake = FakeNvml([gpu])
    now = {"t": samples[0]["t"]}
    # As the daemon read it at `gpu.interval: 1s`: the process list every 30 samples, or when
    # used VRAM moves.
    nvml = Nvml(lib=fake, wall=lambda: now["t"], monotonic=lambda: now["t"], slow_every=30)
    settings = Gpu.model_validate(scenario["settings"]["gpu"])
    threshold = scenario["settings"]["failure_threshold"]
    endpoints = {
        e: Endpoint(
            name=e, api="openai-chat", base_url=f"http://127.0.0.1:{s['port']}", gpus=[meta["uuid"]]
        )
        for e, s in scenario["servers"].items()
        if s
    }
    store = Store.open(tmp_path / "w.db")
    watch = GpuWatch(settings, endpoints, nvml, store, procfs=Recorded(scenario, now))
    alerter = Alerter(
        Alerting(failure_threshold=threshold, success_threshold=2), store, can_send=False
    )
    watch.start(now["t"])
    out = Replay(scenario)
    runs = sorted(scenario["runs"], key=lambda r: r["end"])
    starting = sorted(scenario["runs"], key=lambda r: r["start"])
    for i, sample in enumerate(samples):
        now["t"] = sample["t"]
        gpu.position = i
        while starting and starting[0]["start"] <= now["t"]:
            # As the daemon meters each run from its start: NVML's sample buffers are read
            # while a run is in flight and until NVML has posted the samples that cover it.
            r = starting.pop(0)
            watch.meter(r["endpoint"], r["start"])
        while runs and runs[0]["end"] <= now["t"]:
            r = runs.pop(0)
            window = ProbeWindow(
                r["endpoint"], r["start"], r["end"], bool(r["answered"]), r["tokens_per_s"], {}
            )
            watch.remember(Measured(window, None))
        snapshot = await watch.sample()
        at = datetime.fromtimestamp(now["t"], UTC)
        with store.transaction():
            sampled = watch.record(snapshot, watch.new_xids(), now["t"])
            for kind, findings in sampled.findings.items():
                alerter.observe_findings(kind, findings, at, endpoints)
        watch.remember(sampled)
        since = now["t"] - scenario["start"]
        for kind, findings in sampled.findings.items():
            for f in findings:
                if f.failing:
                    out.detected.setdefault((kind, f.subject), since)
        for row in store.db.query(
            "select kind, endpoint, summary from alerts where state = 'firing'"
        ):
            key = (row["kind"], row["endpoint"])
            out.firing.setdefault(key, since)
            out.summaries.setdefault(key, row["summary"])
    watch.close()
    store.close()
    return out


def live(scenario: dict[str, Any], kind: str, subject: str) -> float | None:
    """When the daemon on the GPU was first seen firing this alert, from the scenario's start."""
    seen = scenario["verdicts"].get(f"firing:{kind}:{subject}")
    return None if seen is None else float(seen["firing_after_s"])


async def test_a_server_that_serves_from_its_gpu_is_not_idle(tmp_path: Path) -> None:
    """Run 2: SmolLM2 answers in 40 ms; once-a-second utilisation read 0-6 %, which paged a
    false idle-while-serving on the GPU (the recorded verdict). NVML's per-process samples show
    the server's kernels in every run: no page."""
    r = await replay("h200-served.json", tmp_path)
    assert live(r.scenario, "gpu_idle_while_serving", "on-gpu") is not None  # the old verdict
    assert r.after("gpu_idle_while_serving", "on-gpu") is None
    assert ("gpu_idle_while_serving", "on-gpu") not in r.detected
    assert r.after("gpu_vram_leak", r.scenario["meta"]["uuid"]) is None


async def test_hidden_cuda_is_idle_while_serving_naming_the_server(tmp_path: Path) -> None:
    """Run 1: `CUDA_VISIBLE_DEVICES=` on B, all layers of A on the GPU, both bound to it."""
    r = await replay("h200-hidden.json", tmp_path)
    server = r.scenario["servers"]["on-cpu"]
    firing = r.after("gpu_idle_while_serving", "on-cpu")
    recorded = live(r.scenario, "gpu_idle_while_serving", "on-cpu")
    assert firing is not None and recorded is not None
    assert firing <= recorded + 2, (firing, recorded)  # as fast as on the GPU, or faster
    summary = r.summaries[("gpu_idle_while_serving", "on-cpu")]
    assert summary.startswith("probes to on-cpu succeed (3 runs at ")
    assert (
        f"llama-server (pid {server['pid']}, listening on :{server['port']}) holds no memory on "
        "GPU 0 (NVIDIA H200)"
    ) in summary
    assert "serves from the CPU" in summary
    # A, whose GPU showed 0-6 % once a second with no buffers recorded: not paged.
    assert r.after("gpu_idle_while_serving", "on-gpu") is None


async def test_servers_that_start_after_the_daemon_are_found_when_they_answer(
    tmp_path: Path,
) -> None:
    """Run 3: the daemon first, then A and B (`CUDA_VISIBLE_DEVICES=`) start, both answering
    1.8 s later. The daemon missed B's server at its first looks (nothing listened yet), waited
    longer after each, and found it only 21 s in: B fired 22 s in (the recorded verdict). Now a
    server is looked for as soon as its endpoint begins to answer."""
    r = await replay("h200-servers-start.json", tmp_path)
    ready = r.scenario["notes"]["ready_s"]
    recorded = live(r.scenario, "gpu_idle_while_serving", "on-cpu")
    assert recorded is not None and recorded - ready > 20
    firing = r.after("gpu_idle_while_serving", "on-cpu")
    # Its first three runs, posted a second after the third, then failure_threshold samples.
    assert firing is not None and firing - ready < 3 * 2 + 1 + 2 + 1, (ready, firing)
    assert (
        "holds no memory on GPU 0 (NVIDIA H200)"
        in r.summaries[("gpu_idle_while_serving", "on-cpu")]
    )
    assert r.after("gpu_idle_while_serving", "on-gpu") is None
    assert ("gpu_idle_while_serving", "on-gpu") not in r.detected


async def test_two_servers_and_a_hog_are_contention_and_no_leak(tmp_path: Path) -> None:
    r = await replay("h200-contention.json", tmp_path)
    uuid = r.scenario["meta"]["uuid"]
    firing = r.after("gpu_vram_contention", uuid)
    recorded = live(r.scenario, "gpu_vram_contention", uuid)
    assert firing is not None and recorded is not None
    assert abs(firing - recorded) <= 3, (firing, recorded)
    assert r.after("gpu_vram_leak", uuid) is None
    assert ("gpu_vram_leak", uuid) not in r.detected
    hog = r.scenario["notes"]["pids"]["hog"]
    assert f"pid {hog} (python3)" in r.summaries[("gpu_vram_contention", uuid)]


async def test_steady_growth_in_one_process_is_a_leak_naming_it(tmp_path: Path) -> None:
    r = await replay("h200-leak.json", tmp_path)
    uuid = r.scenario["meta"]["uuid"]
    firing = r.after("gpu_vram_leak", uuid)
    recorded = live(r.scenario, "gpu_vram_leak", uuid)
    assert firing is not None and recorded is not None
    assert abs(firing - recorded) <= 3, (firing, recorded)
    leaker = r.scenario["notes"]["pids"]["leaker"]
    summary = r.summaries[("gpu_vram_leak", uuid)]
    assert f"pid {leaker} (python3) grew most: +" in summary, summary
    assert "GiB/s" in summary or "MiB/s" in summary


@pytest.mark.parametrize("name", ["h200-served.json", "h200-hidden.json"])
async def test_loading_models_never_reads_as_a_leak(name: str, tmp_path: Path) -> None:
    """Run 2 watched three llama-servers load; run 1 their first minute of serving."""
    r = await replay(name, tmp_path)
    uuid = r.scenario["meta"]["uuid"]
    assert ("gpu_vram_leak", uuid) not in r.detected

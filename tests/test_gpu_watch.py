"""The daemon's GPU path over the replayed H100 trace: storage, metrics, alerts, energy per token."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path

import httpx
import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.conftest import FakeClock, need
from tests.fakenvml import PHASES, UUID, FakeGpu, FakeNvml, samples
from watchdog.config.load import Config, load_config
from watchdog.daemon import Daemon
from watchdog.gpu.nvml import Nvml
from watchdog.reports.table import gpus as gpu_table
from watchdog.result import Answer, ProbeResult
from watchdog.store import Store

GOLDEN = """
name: one
prompts:
  - id: capital
    prompt: "Capital of France?"
    checks: [{contains: Paris}]
"""


def make_config(tmp_path: Path, gpu: str = "") -> Config:
    (tmp_path / "one.yaml").write_text(GOLDEN)
    (tmp_path / "config.yaml").write_text(
        f"""
storage: {{path: w.db, csv_dir: reports}}
alerting: {{failure_threshold: 3, success_threshold: 2}}
gpu:
  interval: 0.5s
  leak: {{window: 4s, min_growth: 1GiB}}
  throttle: {{after: 4s}}
  price_per_kwh: 0.30
  {gpu}
endpoints:
  - {{name: vllm-a, api: openai-chat, base_url: "http://llm.test", model: m, gpus: [0]}}
probes:
  - {{endpoint: vllm-a, golden_set: one.yaml, stream: false}}
"""
    )
    return load_config(tmp_path / "config.yaml", env={})


class Rig:
    def __init__(self, tmp_path: Path, fake: FakeNvml, db: Path | None = None):
        self.config = make_config(tmp_path)
        self.clock = FakeClock()
        self.fake = fake
        self.nvml = Nvml(  # every field every sample: the trace is 0.5 s apart
            slow_every=1,
            pcie_every=1,
            lib=fake,
            wall=lambda: self.clock.now().timestamp(),
            monotonic=self.clock.monotonic,
        )
        self.store = Store.open(db or tmp_path / "w.db")
        self.registry = CollectorRegistry()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self.answer))
        self.daemon = Daemon(
            self.config, self.client, self.store, self.clock, None, self.registry, nvml=self.nvml
        )
        self.daemon.gpu.start(self.clock.now().timestamp())

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.fake.step()  # the GPU works while it answers: its energy counter moves on
        body = {
            "choices": [{"message": {"content": "Paris"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4},
        }
        return httpx.Response(
            200,
            headers={"content-type": "application/json"},
            stream=httpx.ByteStream(json.dumps(body).encode()),
        )

    async def samples(self, n: int) -> None:
        for _ in range(n):
            await self.daemon.gpu_once()
            self.clock.advance(0.5)
            self.fake.step()

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def close(self) -> None:
        await self.client.aclose()
        self.daemon.gpu.close()
        self.store.close()


async def test_a_leak_is_stored_exported_and_paged(tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load", "matmul_load_with_vram_leak"))])
    fake.gpus[0].process_names[396] = "python3"
    rig = Rig(tmp_path, fake)
    try:
        await rig.samples(len(PHASES["matmul_load"]))
        assert rig.metric("mlops_watchdog_gpu_detected", gpu=UUID, kind="gpu_vram_leak") == 0
        await rig.samples(len(PHASES["matmul_load_with_vram_leak"]))
        assert rig.metric("mlops_watchdog_gpu_detected", gpu=UUID, kind="gpu_vram_leak") == 1
        growth = rig.metric("mlops_watchdog_gpu_memory_growth_bytes_per_second", gpu=UUID)
        assert growth is not None and growth > 1e9
        (alert,) = rig.store.db.query(
            "select * from alerts where endpoint = ? and kind = 'gpu_vram_leak'", [UUID]
        )
        assert alert["state"] == "firing"
        # As visible to Prometheus as an endpoint's alert; the other GPU kinds at 0.
        assert rig.metric("mlops_watchdog_gpu_alerts_firing", gpu=UUID, kind="gpu_vram_leak") == 1
        assert rig.metric("mlops_watchdog_gpu_alerts_firing", gpu=UUID, kind="gpu_throttling") == 1
        assert rig.metric("mlops_watchdog_gpu_alerts_firing", gpu=UUID, kind="gpu_hardware") == 0
        assert rig.metric("mlops_watchdog_gpu_alerts_firing", gpu="gpus", kind="gpu_missing") == 0
        (page,) = rig.store.db.query("select * from outbox where kind = 'gpu_vram_leak'")
        facts = json.loads(page["facts"])
        assert facts["scope"] == "gpu" and "python3" in facts["summary"]
        assert page["status"] == "suppressed"  # no notifier in this rig: recorded, not sent
        stored = rig.store.db.execute("select count(*) from gpu_samples").fetchone()[0]
        assert stored == len(PHASES["matmul_load"]) + len(PHASES["matmul_load_with_vram_leak"])
        assert rig.metric("mlops_watchdog_gpu_memory_used_bytes", gpu=UUID) == 22400532480
        assert (
            rig.metric(
                "mlops_watchdog_gpu_process_memory_bytes", gpu=UUID, pid="396", process="python3"
            )
            == 22391291904
        )
        assert (
            rig.metric("mlops_watchdog_gpu_clock_event_active", gpu=UUID, reason="sw_power_cap")
            == 1
        )
        assert rig.metric("mlops_watchdog_gpu_throttle_duration_seconds", gpu=UUID) >= 4
    finally:
        await rig.close()


async def test_not_supported_fields_have_no_series(tmp_path: Path) -> None:
    rig = Rig(tmp_path, FakeNvml())
    try:
        await rig.samples(1)
        text = generate_latest(rig.registry).decode()
        assert "mlops_watchdog_gpu_fan_speed_ratio{" not in text
        assert "mlops_watchdog_gpu_telemetry_up 1.0" in text
        assert (
            f'mlops_watchdog_gpu_info{{driver="580.159.04",gpu="{UUID}",index="0",name="NVIDIA H100 80GB HBM3"}} 1.0'
            in text
        )
        assert rig.metric("mlops_watchdog_gpus") == 1
    finally:
        await rig.close()


async def test_energy_per_token_of_a_probe_run(tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load"))])
    rig = Rig(tmp_path, fake)
    try:
        await rig.samples(1)
        before = fake.gpus[0].now["energy_mj"]
        await rig.daemon.probe_once(rig.config.probes[0])
        after = fake.gpus[0].now["energy_mj"]
        (row,) = rig.store.db.query("select * from run_energy")
        assert row["energy_j"] == pytest.approx((after - before) / 1000)
        assert row["output_tokens"] == 4 and row["gpus"] == UUID
        assert row["joules_per_token"] == pytest.approx(row["energy_j"] / 4)
        cost = row["joules_per_token"] * 1000 / 3.6e6 * 0.30
        assert row["cost_per_1k_tokens"] == pytest.approx(cost) and row["currency"] == "EUR"
        assert rig.metric(
            "mlops_watchdog_probe_energy_per_token_joules", endpoint="vllm-a"
        ) == pytest.approx(row["joules_per_token"])
        assert rig.metric(
            "mlops_watchdog_probe_cost_per_1k_tokens", endpoint="vllm-a", currency="EUR"
        ) == pytest.approx(cost)
    finally:
        await rig.close()


@pytest.mark.parametrize(("source", "counted"), [("events", False), ("tokenizer", True)])
async def test_no_per_token_figure_rests_on_streamed_events(
    tmp_path: Path, source: str, counted: bool
) -> None:
    # Triton streams a piece of text per event, not a token: 3 events here, however many tokens.
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load"))])
    rig = Rig(tmp_path, fake)
    try:
        await rig.samples(1)
        watch = rig.daemon.gpu
        meter = watch.meter("vllm-a", rig.clock.now().timestamp())
        assert meter is not None
        await rig.samples(2)  # the GPU works meanwhile
        answer = Answer(text="Paris is it.", ttft_s=0.1, e2e_s=0.5, itl_s=[0.2, 0.2])
        answer.output_tokens, answer.token_source = 3, source
        result = ProbeResult("vllm-a", "p", "g", "h", rig.clock.now(), True, answer, [], "fp")
        with rig.store.transaction():
            measured = watch.finish(meter, [result], "run1", rig.clock.now().timestamp())
        assert measured.energy is not None and measured.energy.joules > 0
        assert (measured.energy.joules_per_token is not None) == counted
        assert (measured.window.tokens_per_s is not None) == counted  # the idle check's speed
    finally:
        await rig.close()


async def test_without_a_driver_probing_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeNvml()
    fake.init_error = pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
    caplog.set_level(logging.INFO)
    rig = Rig(tmp_path, fake)
    try:
        await rig.samples(3)
        run = await rig.daemon.probe_once(rig.config.probes[0])
        assert [r.ok for r in run.results] == [True]
        assert rig.metric("mlops_watchdog_gpu_telemetry_up") == 0
        assert rig.metric("mlops_watchdog_gpus") is None
        assert rig.store.db.execute("select count(*) from run_energy").fetchone()[0] == 0
        assert len([m for m in caplog.messages if "GPU telemetry off" in m]) == 1
        assert not rig.store.db.execute(
            "select count(*) from alerts where kind like 'gpu%' and state != 'ok'"
        ).fetchone()[0]
    finally:
        await rig.close()


async def test_a_lost_gpu_pages_and_comes_back(tmp_path: Path) -> None:
    fake = FakeNvml()
    rig = Rig(tmp_path, fake)
    try:
        await rig.samples(2)
        fake.call_error = pynvml.NVML_ERROR_GPU_IS_LOST
        await rig.samples(3)
        hardware = {
            r["endpoint"]: r["state"]
            for r in rig.store.db.query("select * from alerts where kind = 'gpu_hardware'")
        }
        missing = {
            r["endpoint"]: r["state"]
            for r in rig.store.db.query("select * from alerts where kind = 'gpu_missing'")
        }
        assert hardware[UUID] in ("pending", "firing") and missing["gpus"] in ("pending", "firing")
        assert rig.metric("mlops_watchdog_gpu_telemetry_up") == 0
        fake.call_error = None
        rig.clock.advance(60)  # past the re-initialisation backoff
        await rig.samples(3)
        assert rig.metric("mlops_watchdog_gpu_telemetry_up") == 1
        states = {
            (r["endpoint"], r["kind"]): r["state"]
            for r in rig.store.db.query(
                "select * from alerts where kind in ('gpu_hardware', 'gpu_missing')"
            )
        }
        assert states == {(UUID, "gpu_hardware"): "ok", ("gpus", "gpu_missing"): "ok"}
    finally:
        await rig.close()


def test_gpu_table_says_what_is_not_supported() -> None:
    nvml = Nvml(lib=FakeNvml(), wall=lambda: 0.0)
    snapshot = nvml.sample()
    assert snapshot is not None
    text = gpu_table(snapshot.gpus, snapshot.driver)
    assert text.splitlines()[0] == f"GPU 0  NVIDIA H100 80GB HBM3  {UUID}"
    assert "  memory         0.0 GiB used, 79.2 GiB free, 0.5 GiB reserved, 79.6 GiB total" in text
    assert "  clock events   gpu_idle" in text
    assert "  not supported  fan, retired_pages_dbe" in text
    assert text.endswith("driver 580.159.04")


async def test_gpu_exposition_is_promtool_clean(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        need("promtool is not installed (apt-get install prometheus)")
        return
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load", "matmul_load_with_vram_leak"))])
    fake.gpus[0].process_names[396] = "python3"
    fake.pending_xids = [(0, 79)]
    rig = Rig(tmp_path, fake)
    try:
        rig.nvml.start_xid_watch()
        await rig.samples(20)
        await rig.daemon.probe_once(rig.config.probes[0])
        rig.nvml.stop_xid_watch()
        await rig.samples(1)
        text = generate_latest(rig.registry)
        for family in (b"gpu_xid_errors_total{", b"gpu_detected{", b"probe_energy_per_token"):
            assert family in text
        done = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=30
        )
        assert done.returncode == 0 and done.stdout == b"" and done.stderr == b"", done
    finally:
        await rig.close()


def test_old_samples_fold_into_minutes_and_expire(tmp_path: Path) -> None:
    from watchdog.gpu import rows as gpu_rows

    store = Store.open(tmp_path / "w.db")
    nvml = Nvml(lib=FakeNvml([FakeGpu(UUID, samples("matmul_load"))]), slow_every=1, pcie_every=1)
    base = 1_800_000_000.0  # a whole minute
    try:
        for i in range(8):  # two minutes of samples, 30 s apart
            nvml.wall = lambda i=i: base + 30 * i
            snapshot = nvml.sample()
            assert snapshot is not None
            gpu_rows.record_snapshot(store.db, snapshot)
            nvml.lib.step()
        now = base + 4 * 60 + 3600
        folded = gpu_rows.downsample(store.db, now, keep_raw_s=3600, keep_s=2 * 86400)
        assert folded == 8
        rows = list(store.db.query("select * from gpu_samples order by at_ts"))
        assert [(r["resolution"], r["at_ts"]) for r in rows] == [
            ("1m", base),
            ("1m", base + 60),
            ("1m", base + 120),
            ("1m", base + 180),
        ]
        raw = PHASES["matmul_load"]
        assert rows[0]["util_gpu"] == pytest.approx(
            (raw[0]["util"]["gpu"] + raw[1]["util"]["gpu"]) / 200
        )
        assert rows[0]["memory_total"] == raw[0]["mem_v2"]["total"]
        assert set(rows[1]["clock_events"].split(",")) == {"sw_power_cap"}
        assert gpu_rows.downsample(store.db, base + 3 * 86400, 3600, 2 * 86400) == 0
        assert store.db.execute("select count(*) from gpu_samples").fetchone()[0] == 0
    finally:
        store.close()


async def test_a_restart_keeps_the_detectors_memory(tmp_path: Path) -> None:
    fake = FakeNvml([FakeGpu(UUID, samples("matmul_load", "matmul_load_with_vram_leak"))])
    rig = Rig(tmp_path, fake)
    try:
        await rig.samples(len(PHASES["matmul_load"]) + 5)
        rig.daemon.gpu.close()
        again = Daemon(
            rig.config, rig.client, rig.store, rig.clock, None, CollectorRegistry(), nvml=rig.nvml
        )
        again.gpu.start(rig.clock.now().timestamp())
        kept = again.gpu.history[UUID]
        assert (
            len(kept) >= 8 and kept[-1].memory_used == rig.daemon.gpu.history[UUID][-1].memory_used
        )
    finally:
        await rig.close()

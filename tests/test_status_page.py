"""The status page from a database: states, firing alerts with runbooks, prompts, p50s, GPUs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.test_store import result
from watchdog.gpu.nvml import GpuSample, Snapshot
from watchdog.gpu.rows import record_snapshot
from watchdog.result import CheckOutcome, ProbeResult
from watchdog.store import Store
from watchdog.web import status

NOW = datetime(2026, 11, 29, 2, 3, tzinfo=UTC)
ENDPOINTS = {
    "vllm-a": "http://gpu-1:8000",
    "llama-b": "http://gpu-2:8080",
    "tgi-c": "http://gpu-3:3000",
    "ollama-d": "http://gpu-4:11434",
}
PROMPTS = ("capital", "json-reply", "refusal")
GIB = 2**30


def runbook(kind: str) -> str:
    return f"https://runbooks.example/{kind}.md"


def probe(
    endpoint: str,
    prompt_id: str,
    at: datetime,
    ttft: float | None = 0.1,
    e2e: float | None = 0.5,
    error: str | None = None,
    failed_check: str | None = None,
) -> ProbeResult:
    r = result(prompt_id)
    answer = replace(r.answer, ttft_s=ttft, e2e_s=e2e)
    if error is not None:
        answer = replace(answer, error_class=error, error_detail="deadline exceeded (ReadTimeout)")
    checks = [CheckOutcome("json", False, failed_check)] if failed_check else r.checks
    return replace(r, endpoint=endpoint, started_at=at, answer=answer, checks=checks)


def gpu(
    index: int, at: float, util: float, used_gib: float, temp: float, watts: float
) -> GpuSample:
    return GpuSample(
        uuid=f"GPU-{index}",
        index=index,
        name="NVIDIA H100 80GB HBM3",
        at=at,
        util_gpu=util,
        memory_total=int(79.6 * GIB),
        memory_used=int(used_gib * GIB),
        temperature_c=temp,
        power_w=watts,
        power_limit_w=700.0,
    )


def scene(store: Store) -> None:
    """A node on a bad night: vllm-a fine, llama-b timing out for 13 minutes (its alert fires),
    tgi-c answering with one prompt failing its JSON check, ollama-d not probed yet; two GPUs."""
    now = NOW
    timeout = now - timedelta(minutes=13)
    for n in range(30):  # a run of each endpoint every 2 minutes for the last hour
        at = now - timedelta(minutes=60 - 2 * n)
        for i, prompt_id in enumerate(PROMPTS):
            wobble = (n * 7 + i * 3) % 5
            ttft, e2e = 0.08 + 0.01 * wobble, 0.41 + 0.03 * wobble + 0.004 * n
            once = "no JSON" if (n, i) == (3, 1) else None
            bad = (
                "not valid JSON: Expecting value at line 1 column 1"
                if (n > 26 and i == 1)
                else None
            )
            b_at = at + timedelta(seconds=40)
            runs = {
                "a": probe("vllm-a", prompt_id, at, ttft, e2e, failed_check=once),
                "b": probe("llama-b", prompt_id, b_at, ttft, e2e * 1.2)
                if b_at < timeout
                else probe("llama-b", prompt_id, b_at, None, 30.0, "timeout"),
                "c": probe(
                    "tgi-c",
                    prompt_id,
                    at + timedelta(seconds=20),
                    ttft * 2,
                    e2e * 2.1,
                    failed_check=bad,
                ),
            }
            for name, r in runs.items():
                store.record_run(f"{name}{n}-{i}", [r], {})
    store.db.execute(
        "insert into alerts (endpoint, kind, state, failures, successes, since, incident, summary) "
        "values ('llama-b', 'timeout', 'firing', 6, 0, '2026-11-29T01:56:40.123456Z', 'x', "
        "'3/3 prompts: refusal: deadline exceeded (ReadTimeout)')"
    )
    at = now.timestamp() - 4
    samples = [gpu(0, at, 0.87, 71.3, 64, 512), gpu(1, at, 0.03, 61.2, 41, 88)]
    record_snapshot(
        store.db, Snapshot(at - 60, [replace(g, at=at - 60, util_gpu=0.5) for g in samples])
    )
    record_snapshot(store.db, Snapshot(at, samples))


def page(tmp_path: Path) -> tuple[status.Page, str]:
    store = Store.open(tmp_path / "w.db")
    scene(store)
    got = status.collect(store.db, ENDPOINTS, NOW, runbook)
    store.close()
    return got, status.render(got, NOW, "1.2.3", "gpu-node-07")


def by_name(got: status.Page) -> dict[str, status.EndpointStatus]:
    return {e.name: e for e in got.endpoints}


def test_a_firing_alert_shows_with_its_runbook(tmp_path: Path) -> None:
    got, html = page(tmp_path)
    assert {e.name: e.state for e in got.endpoints} == {
        "llama-b": "firing",
        "ollama-d": "unknown",
        "tgi-c": "failing",
        "vllm-a": "ok",
    }
    [alert] = by_name(got)["llama-b"].alerts
    assert alert == status.Alert(
        "timeout",
        "requests time out",
        "2026-11-29T01:56:40Z",
        "3/3 prompts: refusal: deadline exceeded (ReadTimeout)",
        "https://runbooks.example/timeout.md",
    )
    assert (
        '<strong>requests time out</strong> since <span class="t">2026-11-29T01:56:40Z</span> · '
        '<a href="https://runbooks.example/timeout.md">runbook</a>'
    ) in html


def test_each_prompt_shows_its_latest_result_and_why_it_failed(tmp_path: Path) -> None:
    got, html = page(tmp_path)
    endpoints = by_name(got)
    # vllm-a failed json-reply once, an hour ago: only the latest result counts.
    assert [(p.prompt_id, p.ok, p.why) for p in endpoints["vllm-a"].prompts] == [
        ("capital", True, None),
        ("json-reply", True, None),
        ("refusal", True, None),
    ]
    assert [(p.prompt_id, p.ok, p.why) for p in endpoints["tgi-c"].prompts] == [
        ("capital", True, None),
        (
            "json-reply",
            False,
            "check_failed: json: not valid JSON: Expecting value at line 1 column 1",
        ),
        ("refusal", True, None),
    ]
    assert {p.why for p in endpoints["llama-b"].prompts} == {
        "timeout: deadline exceeded (ReadTimeout)"
    }
    assert endpoints["tgi-c"].prompts[0].at == "2026-11-29T02:01:20Z"
    assert endpoints["tgi-c"].last_at == "2026-11-29T02:01:20Z"
    assert endpoints["ollama-d"].prompts == []
    assert html.count('<span class="verdict pass">pass</span>') == 5
    assert html.count('<span class="verdict fail">fail</span>') == 4
    assert "no probe yet" in html


def test_ttft_and_e2e_p50_are_of_answered_prompts_in_the_window(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    for n, (ttft, e2e) in enumerate([(0.1, 0.3), (0.4, 0.9), (0.2, 0.5)]):
        store.record_run(f"r{n}", [probe("e", "p", NOW - timedelta(minutes=n), ttft, e2e)], {})
    store.record_run("slow", [probe("e", "p", NOW, None, 30.0, "timeout")], {})
    store.record_run("old", [probe("e", "p", NOW - timedelta(hours=25), 9.0, 9.0)], {})
    got = status.collect(store.db, {"e": "http://e:1"}, NOW, runbook)
    store.close()
    [e] = got.endpoints
    assert (e.ttft_p50_s, e.e2e_p50_s, e.runs, e.pass_rate) == (0.2, 0.5, 4, 0.75)
    assert e.e2e_recent == [0.5, 0.9, 0.3, 30.0]  # the timeout's too, oldest first
    html = status.render(got, NOW, "1.2.3")
    assert '<td class="num">200 ms</td>\n      <td class="num">500 ms</td>' in html
    assert "75% of 4" in html


def test_the_gpu_panel_shows_only_with_gpus(tmp_path: Path) -> None:
    got, html = page(tmp_path)
    assert [(g.index, g.util, g.temperature_c, g.power_w) for g in got.gpus] == [
        (0, 0.87, 64, 512),
        (1, 0.03, 41, 88),
    ]
    assert '<table id="gpus">' in html
    cells = ["87%", "71.3 / 79.6 GiB", "64 °C", "512 / 700 W", "none"]
    assert "\n      ".join(f"<td>{c}</td>" for c in cells) in html

    store = Store.open(tmp_path / "none.db")
    store.record_run("r", [probe("e", "p", NOW)], {})
    bare = status.collect(store.db, {"e": "http://e:1"}, NOW, runbook)
    # a GPU seen two days ago is gone from this node
    record_snapshot(store.db, Snapshot(NOW.timestamp() - 2 * 86400, [gpu(0, 0, 0.5, 1, 40, 90)]))
    gone = status.collect(store.db, {"e": "http://e:1"}, NOW, runbook)
    store.close()
    assert bare.gpus == [] == gone.gpus
    assert "GPUs" not in status.render(bare, NOW, "1.2.3")


def test_a_gpu_alert_shows_on_its_gpu_and_text_is_escaped(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    record_snapshot(
        store.db, Snapshot(NOW.timestamp(), [gpu(0, NOW.timestamp(), 0.9, 70, 88, 690)])
    )
    store.db.execute(
        "insert into alerts (endpoint, kind, state, failures, successes, since, incident, summary) "
        "values ('GPU-0', 'gpu_throttling', 'firing', 3, 0, '2026-11-29T01:00:00Z', 'x', "
        "'thermal <slowdown>')"
    )
    got = status.collect(store.db, {}, NOW, runbook)
    store.close()
    [g] = got.gpus
    assert [a.title for a in g.alerts] == ["GPU throttling"]
    html = status.render(got, NOW, "1.2.3")
    assert '<a href="https://runbooks.example/gpu_throttling.md">runbook</a>' in html
    assert "thermal &lt;slowdown&gt;" in html

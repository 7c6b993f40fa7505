"""Change events and baseline policy on a real SQLite store, with a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.test_store import result
from watchdog.drift import baselines, changes
from watchdog.store import Store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SMOL = {"api": "openai-chat", "model_ids": ["smollm2"], "model_file": "SmolLM2.gguf"}


def test_first_identity_is_no_change_and_a_swap_names_what_changed(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    db = store.db
    assert changes.observe(db, "vllm-a", SMOL, True, NOW) is None
    assert changes.observe(db, "vllm-a", SMOL, True, NOW + timedelta(minutes=1)) is None
    gemma = {**SMOL, "model_ids": ["gemma"], "model_file": "gemma.gguf"}
    change = changes.observe(db, "vllm-a", gemma, True, NOW + timedelta(minutes=2))
    assert change is not None and change.kind == "fingerprint"
    assert change.detail == "model_file: SmolLM2.gguf → gemma.gguf; model_ids: smollm2 → gemma"
    assert change.before == changes.digest(SMOL) and change.after == changes.digest(gemma)
    assert changes.before(db, "vllm-a", (NOW + timedelta(minutes=3)).timestamp()) == change
    assert changes.before(db, "vllm-a", NOW.timestamp()) is None
    store.close()


def test_a_down_server_is_not_a_model_swap(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    changes.observe(store.db, "e", SMOL, True, NOW)
    assert changes.observe(store.db, "e", {"api": "openai-chat"}, False, NOW) is None
    assert changes.observe(store.db, "e", SMOL, True, NOW) is None
    store.close()


def test_a_new_system_prompt_is_a_template_change(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    changes.observe(store.db, "e", SMOL, True, NOW)
    change = changes.observe(store.db, "e", {**SMOL, "template_hash": "abc"}, True, NOW)
    assert change is not None and change.kind == "template"
    assert change.detail == "template_hash: none → abc"
    store.close()


def _runs(store: Store, fingerprint: str, n: int, start: int) -> None:
    for i in range(start, start + n):
        r = result("capital", ok=True, fingerprint=fingerprint)
        store.record_run(f"run{i}", [r], {})
        store.db.execute(
            "update results set started_ts = ? where run_id = ?", (1000.0 + i, f"run{i}")
        )


def test_policy_first_runs_then_keep_or_rebaseline(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    db = store.db
    keep = baselines.BaselinePolicy(runs=3)
    _runs(store, "fp-a", 2, 0)
    assert baselines.maintain(db, "e", "default", keep, NOW) is None  # too few yet
    _runs(store, "fp-a", 1, 2)
    first = baselines.maintain(db, "e", "default", keep, NOW)
    assert first is not None and baselines.active(db, "e", "default")["fingerprint"] == "fp-a"
    _runs(store, "fp-b", 3, 3)
    assert baselines.maintain(db, "e", "default", keep, NOW) is None  # keep: flag drift
    rebaseline = baselines.BaselinePolicy(runs=3, on_change="rebaseline")
    assert baselines.pin(db, first)
    assert baselines.maintain(db, "e", "default", rebaseline, NOW) is None  # pinned
    assert baselines.pin(db, first, pinned=False)
    second = baselines.maintain(db, "e", "default", rebaseline, NOW)
    assert second is not None and second != first
    active = baselines.active(db, "e", "default")
    assert active["fingerprint"] == "fp-b" and active["reason"] == "after a fingerprint change"
    assert sorted(baselines.runs_of(db, second)) == ["run3", "run4", "run5"]
    store.close()


def test_no_baseline_is_inconclusive_and_says_what_to_do(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "w.db")
    signals = baselines.drift(store.db, "e", "default", baselines.DriftSettings())
    assert [s.status for s in signals] == ["inconclusive"] * 3
    assert "baseline record" in signals[0].detail
    store.close()


def test_an_engine_config_change_seen_only_in_the_system_fingerprint_is_named(
    tmp_path: Path,
) -> None:
    """vLLM says its engine configuration only in the streamed usage chunk's
    `system_fingerprint` (vllm-0.32.0-<hash>): the model ids stay the same."""
    store = Store.open(tmp_path / "w.db")
    for i, fp in enumerate(("vllm-0.32.0-aaaa", "vllm-0.32.0-aaaa", "vllm-0.32.0-bbbb")):
        r = result("capital", ok=True)
        r.answer.system_fingerprint = fp
        change = changes.observe(
            store.db, "e", changes.identity_of(SMOL, [r]), True, NOW + timedelta(minutes=i)
        )
    assert change is not None and change.kind == "fingerprint"
    assert change.detail == "system_fingerprint: vllm-0.32.0-aaaa → vllm-0.32.0-bbbb"
    store.close()


def test_the_recorder_reads_the_stored_identity_only_when_it_may_have_changed(
    tmp_path: Path,
) -> None:
    """What answered at the last stored run is kept in memory once its transaction commits: a
    run that shows the same reads nothing back, and a change is still found, once."""
    import pytest

    from watchdog.endpoint import Endpoint
    from watchdog.result import Run
    from watchdog.store.recorder import Recorder

    store = Store.open(tmp_path / "w.db")
    recorder = Recorder.of(store, ["e"])
    endpoint = Endpoint(name="e", api="openai-chat", base_url="http://127.0.0.1:1")
    gemma = {**SMOL, "model_ids": ["gemma"]}
    reads: list[str] = []
    store.db.conn.set_trace_callback(lambda sql: reads.append(sql) if "identities" in sql else None)

    def run(n: int, identity: dict[str, object], fail: bool = False) -> changes.Change | None:
        with store.transaction():
            recorded = recorder.record(endpoint, Run(f"run{n}", [result()], identity), NOW)
            if fail:
                raise ValueError("a later write of the run failed")
        recorder.committed(recorded)
        return recorded.change

    assert run(0, SMOL) is None and reads  # the first run reads what was stored
    reads.clear()
    assert run(1, SMOL) is None and run(2, SMOL) is None and reads == []
    with pytest.raises(ValueError):
        run(3, gemma, fail=True)  # rolled back: the swap is not stored, nor kept
    change = run(4, gemma)
    assert change is not None and change.after == changes.digest(gemma)
    assert run(5, gemma) is None
    store.close()

"""Drift: profiles, each status of each signal on hand-made windows, and the synthetic study.

The study draws histories from bench/drift_power.py's model (fixed seeds) and asserts the
false-positive rate with no shift and the detection rate at a stated effect size. Run with -s
to see the measured rates; `python -m bench.drift_power` prints the full table.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.drift_power import Answers, Shift, Tally, study, window
from watchdog.drift import baselines
from watchdog.drift.baselines import BaselinePolicy
from watchdog.drift.compare import BUCKETS, SIGNALS, DriftSettings, evaluate, profile, similarity
from watchdog.drift.watch import due
from watchdog.result import Answer, CheckOutcome, ProbeResult, Signal
from watchdog.store import Store

SETTINGS = DriftSettings()
ANSWER = (
    "The report finds that the service met its latency target in most weeks, but error rates "
    "rose after the March release."
)
OTHER = "Sure! Here is a summary. Overall things went fine and nothing worth mentioning happened."
FILLER = ["cache", "data", "server", "week", "month", "value", "rose", "fell", "quickly", "again"]


def results(
    prompt: str = "summary",
    e2e: Sequence[float] = (),
    ok: Sequence[bool] | None = None,
    texts: Sequence[str | None] | None = None,
) -> pd.DataFrame:
    """Probe results of one prompt as the store hands them over; NaN e2e: not answered."""
    e2e_s = np.asarray(e2e, dtype=float)
    if texts is not None and not len(e2e_s):
        e2e_s = np.ones(len(texts))
    answered = ~np.isnan(e2e_s)
    n = len(e2e_s)
    return pd.DataFrame(
        {
            "run_id": [f"run-{i}" for i in range(n)],
            "prompt_id": [prompt] * n,
            "started_ts": np.arange(n, dtype=float) * 300,
            "answered": answered,
            "ok": answered if ok is None else np.asarray(ok, dtype=bool),
            "e2e_s": e2e_s,
            "ttft_s": e2e_s * 0.2,
            "output_profile": [None if t is None else profile(t) for t in texts]
            if texts is not None
            else [None] * n,
        }
    )


def latencies(seed: int, n: int, median: float = 1.0, sigma: float = 0.2) -> np.ndarray:
    return median * np.random.default_rng(seed).lognormal(0.0, sigma, n)


def variants(seed: int, text: str, n: int, rate: float = 0.05) -> list[str]:
    """Repeats of an answer with a share of words swapped: sampling noise between repeats."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = text.split()
        out.append(" ".join(str(rng.choice(FILLER)) if rng.random() < rate else w for w in words))
    return out


def signal(name: str, baseline: pd.DataFrame, recent: pd.DataFrame) -> Signal:
    return next(
        s for s in evaluate("vllm", "default", baseline, recent, SETTINGS) if s.signal == name
    )


# -- profile and similarity


def test_profile_hashes_padded_character_trigrams() -> None:
    def bucket(gram: str) -> str:
        return str(zlib.crc32(gram.encode()) % BUCKETS)

    assert profile("") == {"len": 0}
    assert profile("Ok") == {bucket(" ok"): 1, bucket("ok "): 1, "len": 2}
    # A golden value: a change of hash or normalisation would make stored profiles incomparable.
    # crc32 of " pa", "par", "ari", "ris", "is " mod 512.
    assert profile("Paris") == {"458": 1, "436": 1, "141": 1, "324": 1, "320": 1, "len": 5}


def test_profile_ignores_case_and_whitespace_but_counts_characters() -> None:
    a, b = profile("Hello   World\n"), profile("hello world")
    assert {k: v for k, v in a.items() if k != "len"} == {k: v for k, v in b.items() if k != "len"}
    assert (a["len"], b["len"]) == (14, 11)
    assert all(k == "len" or 0 <= int(k) < BUCKETS for k in profile(ANSWER * 20))
    assert sum(v for k, v in profile("abcd").items() if k != "len") == 4  # " abcd " has 4 grams


def test_similarity() -> None:
    a, b = profile(ANSWER), profile(OTHER)
    assert similarity(a, a) == 1.0
    assert similarity(a, b) == similarity(b, a)
    assert 0.0 <= similarity(a, b) < 0.6
    assert similarity(a, profile(variants(1, ANSWER, 1, rate=0.1)[0])) > 0.8
    assert similarity({"len": 0}, {"len": 0}) == 1.0  # two empty answers
    assert similarity({"len": 0}, a) == 0.0
    assert similarity(profile("Paris"), profile("PARIS ")) == 1.0


# -- evaluate: shape


def test_one_signal_per_name_in_order_with_fingerprints() -> None:
    signals = evaluate("vllm", "default", pd.DataFrame(), pd.DataFrame(), SETTINGS, "abc", "def")
    assert [s.signal for s in signals] == list(SIGNALS)
    assert {
        (s.endpoint, s.golden_set, s.baseline_fingerprint, s.current_fingerprint) for s in signals
    } == {("vllm", "default", "abc", "def")}


def test_empty_frames_are_inconclusive_not_ok() -> None:
    empty = results()
    for baseline, recent in ((empty, empty), (results(e2e=latencies(1, 40)), empty)):
        signals = evaluate("vllm", "default", baseline, recent, SETTINGS)
        assert [(s.status, s.score, s.p_value) for s in signals] == [
            ("inconclusive", None, None)
        ] * 3
    assert "no answers on either side" in evaluate("e", "g", empty, empty, SETTINGS)[2].detail


# -- latency


def test_latency_ok_without_shift() -> None:
    s = signal("latency", results(e2e=latencies(1, 40)), results(e2e=latencies(2, 20)))
    assert s.status == "ok"
    assert s.score is not None and abs(s.score) < 0.15
    assert s.p_value is not None and s.p_value > 0.01


def test_latency_drift_slower_names_p50_and_p95() -> None:
    s = signal("latency", results(e2e=latencies(1, 40)), results(e2e=latencies(2, 20, 1.6)))
    assert s.status == "drift"
    assert s.score == pytest.approx(0.6, abs=0.15)
    assert s.detail == "e2e p50 ×1.51, p95 ×1.55 vs baseline (n=20 recent/40 baseline, p=2e-8)"


def test_latency_drift_faster_counts_too() -> None:
    s = signal("latency", results(e2e=latencies(1, 40)), results(e2e=latencies(2, 20, 0.5)))
    assert s.status == "drift"
    assert s.score is not None and s.score < -0.4


def test_latency_significant_but_small_change_is_ok() -> None:
    baseline, recent = latencies(1, 400, sigma=0.1), latencies(2, 400, 1.12, sigma=0.1)
    s = signal("latency", results(e2e=baseline), results(e2e=recent))
    assert s.status == "ok"
    assert s.p_value is not None and s.p_value < 1e-6
    assert "p50 change under 0.25 (min_latency_change or baseline noise)" in s.detail


def test_latency_change_within_baseline_noise_is_ok() -> None:
    # sigma 0.3: IQR/median about 0.4 (0.37 in this sample), so a +30% p50 is inside the spread
    # between repeats.
    baseline, recent = latencies(1, 400, sigma=0.3), latencies(2, 400, 1.3, sigma=0.3)
    s = signal("latency", results(e2e=baseline), results(e2e=recent))
    assert s.status == "ok"
    assert "p50 change under 0.37" in s.detail


def test_latency_too_few_samples_is_inconclusive() -> None:
    e2e = [*latencies(2, 5, 3.0), np.nan, np.nan, np.nan]  # unanswered probes do not count
    s = signal("latency", results(e2e=latencies(1, 40)), results(e2e=e2e))
    assert (s.status, s.score, s.p_value) == ("inconclusive", None, None)
    assert s.detail == (
        "too few answered probes with an e2e time: 5 recent, 40 baseline (min_samples 8 each)"
    )


def test_latency_noisy_baseline_is_inconclusive() -> None:
    s = signal(
        "latency", results(e2e=latencies(1, 40, sigma=0.6)), results(e2e=latencies(2, 20, 3.0))
    )
    assert s.status == "inconclusive"
    assert s.detail == "baseline too noisy to tell: e2e IQR/median 0.60 > 0.5 (max_baseline_noise)"


def test_latency_is_normalised_per_prompt() -> None:
    """A window with only the short prompt is not a speed-up, and a new prompt is no slow-down."""
    baseline = pd.concat(
        [results("short", latencies(1, 40, 0.3)), results("long", latencies(2, 40, 5.0))]
    )
    recent = pd.concat([results("short", latencies(3, 20, 0.3)), results("new", [30.0] * 20)])
    s = signal("latency", baseline, recent)
    assert s.status == "ok"
    assert "n=20 recent/80 baseline" in s.detail


# -- format accuracy


def passes(n: int, passed: int) -> list[bool]:
    return [True] * passed + [False] * (n - passed)


def test_format_accuracy_ok() -> None:
    s = signal(
        "format_accuracy",
        results(e2e=[1.0] * 40, ok=passes(40, 36)),
        results(e2e=[1.0] * 20, ok=passes(20, 18)),
    )
    assert (s.status, s.score) == ("ok", 0.0)
    assert s.detail == (
        "format checks passed by 90% of 20 recent answers vs 90% of 40 baseline (p=0.660)"
    )


def test_format_accuracy_drift() -> None:
    s = signal(
        "format_accuracy",
        results(e2e=[1.0] * 40, ok=passes(40, 36)),
        results(e2e=[1.0] * 20, ok=passes(20, 8)),
    )
    assert s.status == "drift"
    assert (s.score, s.p_value) == (pytest.approx(0.5), pytest.approx(8.2276e-5, rel=1e-4))
    assert s.detail == (
        "format checks passed by 40% of 20 recent answers vs 90% of 40 baseline (p=8e-5)"
    )


def test_format_accuracy_significant_but_small_drop_is_ok() -> None:
    s = signal(
        "format_accuracy",
        results(e2e=[1.0] * 1000, ok=passes(1000, 950)),
        results(e2e=[1.0] * 1000, ok=passes(1000, 880)),
    )
    assert s.status == "ok"
    assert s.score == pytest.approx(0.07)
    assert s.detail == (
        "format checks passed by 88% of 1000 recent answers vs 95% of 1000 baseline (p=1e-8); "
        "drop under 0.15 (min_accuracy_drop)"
    )


def test_format_accuracy_counts_answered_probes_only() -> None:
    # 20 timeouts and 10 passing answers: the answers that came back still pass.
    recent = results(e2e=[np.nan] * 20 + [1.0] * 10, ok=passes(30, 0)[:20] + [True] * 10)
    s = signal("format_accuracy", results(e2e=[1.0] * 40, ok=passes(40, 36)), recent)
    assert s.status == "ok"
    assert "100% of 10 recent answers" in s.detail


def test_format_accuracy_too_few_is_inconclusive() -> None:
    s = signal(
        "format_accuracy",
        results(e2e=[1.0] * 40, ok=passes(40, 36)),
        results(e2e=[1.0] * 5, ok=passes(5, 0)),
    )
    assert (s.status, s.score) == ("inconclusive", None)
    assert s.detail == "too few answered probes: 5 recent, 40 baseline (min_samples 8 each)"


# -- output


def test_output_ok_for_noisy_repeats() -> None:
    s = signal(
        "output",
        results(texts=variants(1, ANSWER, 40)),
        results(texts=variants(2, ANSWER, 20)),
    )
    assert s.status == "ok"
    assert s.score is not None and abs(s.score) < 0.05
    assert s.detail.startswith("1 prompt compared, largest similarity drop -0.01 (summary); ")
    assert "median length 117 → 117 chars" in s.detail


def test_output_drift_names_the_prompt_and_the_length_shift() -> None:
    baseline = pd.concat(
        [
            results("summary", texts=variants(1, ANSWER, 40)),
            results("capital", texts=["Paris."] * 40),
        ]
    )
    recent = pd.concat(
        [
            results("summary", texts=variants(2, OTHER, 20)),
            results("capital", texts=["Paris."] * 20),
        ]
    )
    s = signal("output", baseline, recent)
    assert s.status == "drift"
    assert s.detail == (
        "1 of 2 prompts drifted: summary (similarity 0.94 → 0.20, 117 → 88 chars); "
        "BH q=0.01, p=2e-10"
    )
    assert s.score is not None and s.score > 0.4
    assert s.p_value is not None and s.p_value < 1e-6


def test_output_deterministic_baseline() -> None:
    baseline = results(texts=[ANSWER] * 30)
    same = signal("output", baseline, results(texts=[ANSWER] * 20))
    assert (same.status, same.score, same.p_value) == ("ok", 0.0, 1.0)
    one_off = signal("output", baseline, results(texts=[ANSWER] * 19 + [OTHER]))
    assert one_off.status == "ok"  # one odd answer in 20 is not drift
    changed = signal("output", baseline, results(texts=[OTHER] * 20))
    assert changed.status == "drift"
    assert changed.score is not None and changed.score > 0.4
    reworded = ANSWER.replace("most weeks", "many weeks")  # every answer, the same small change
    small = signal("output", baseline, results(texts=[reworded] * 20))
    assert small.status == "ok"
    assert small.detail.endswith("; drops under 0.15 (min_similarity_drop)")


def test_output_without_profiles_is_inconclusive_and_says_why() -> None:
    hashed = results(e2e=[1.0] * 20)  # storage.responses: hash keeps no text to profile
    s = signal("output", hashed, hashed)
    assert (s.status, s.score, s.p_value) == ("inconclusive", None, None)
    assert s.detail.startswith("no answer profiles stored (storage.responses: hash")


def test_output_profiles_must_be_parsed() -> None:
    stored = results(texts=[ANSWER] * 10).assign(output_profile='{"len": 0}')
    with pytest.raises(TypeError, match="must be a profile\\(\\) dict"):
        evaluate("vllm", "default", stored, stored, SETTINGS)


def test_output_too_few_profiles_is_inconclusive() -> None:
    s = signal("output", results(texts=[ANSWER] * 30), results(texts=[OTHER] * 5))
    assert s.status == "inconclusive"
    assert s.detail == (
        "no prompt has enough answer profiles on both sides; 1 prompt(s) with under 8 "
        "profiles on a side left out (summary)"
    )


def test_output_prompt_left_out_is_named_when_others_are_compared() -> None:
    baseline = pd.concat([results("a", texts=[ANSWER] * 30), results("b", texts=[OTHER] * 30)])
    recent = pd.concat([results("a", texts=[ANSWER] * 20), results("b", texts=[ANSWER] * 3)])
    s = signal("output", baseline, recent)
    assert s.status == "ok"
    assert s.detail.endswith("1 prompt(s) with under 8 profiles on a side left out (b)")


def test_output_too_varied_baseline_is_inconclusive() -> None:
    """Answers that share no more than unrelated texts do (high temperature, creative prompts)."""
    rng = np.random.default_rng(5)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), 5)) for _ in range(300)]
    varied = [" ".join(rng.choice(words, 15)) for _ in range(30)]
    s = signal("output", results(texts=varied), results(texts=[OTHER] * 20))
    assert (s.status, s.score) == ("inconclusive", None)
    assert s.detail == (
        "1 prompt(s) with baseline answers too varied to judge, similarity under 0.5 "
        "(max_baseline_noise), left out (summary)"
    )


def test_output_controls_the_false_discovery_rate_across_prompts() -> None:
    """Twenty prompts without drift and one with: only that one is named, and the p-value
    reported is its BH-adjusted one."""
    baseline = pd.concat(
        [results(f"p{i:02}", texts=variants(i, ANSWER, 30)) for i in range(20)]
        + [results("moved", texts=variants(99, ANSWER, 30))]
    )
    recent = pd.concat(
        [results(f"p{i:02}", texts=variants(100 + i, ANSWER, 20)) for i in range(20)]
        + [results("moved", texts=variants(199, OTHER, 20))]
    )
    s = signal("output", baseline, recent)
    assert s.status == "drift"
    assert s.detail.startswith("1 of 21 prompts drifted: moved (")
    alone = signal("output", *(f[f["prompt_id"] == "moved"] for f in (baseline, recent)))
    assert alone.p_value is not None
    assert s.p_value == pytest.approx(21 * alone.p_value)  # the smallest p, times m / rank 1


# -- the synthetic study

HISTORIES = 500
NULL_SEED, SHIFT_SEED = 2026, 2027
# The stated effect sizes: every prompt's median e2e +60%, pass rate 0.9 -> 0.5, and one prompt
# of four answering a different text. Each signal reads only its own columns, so one history
# carries all three shifts and is counted once per signal.
EFFECT = Shift(latency=1.6, pass_rate=0.5, rewrite=1.0)


@pytest.fixture(scope="module")
def answers() -> Answers:
    return Answers(seed=7)


@pytest.fixture(scope="module")
def no_shift(answers: Answers) -> dict[str, Tally]:
    return study(answers, NULL_SEED, HISTORIES, Shift())


@pytest.fixture(scope="module")
def shifted(answers: Answers) -> dict[str, Tally]:
    return study(answers, SHIFT_SEED, HISTORIES, EFFECT)


@pytest.mark.parametrize(
    ("shift", "moved"),
    [
        (Shift(latency=2.0), "latency"),
        (Shift(pass_rate=0.4), "format_accuracy"),
        (Shift(rewrite=1.0), "output"),
    ],
)
def test_each_signal_reads_only_its_own_columns(answers: Answers, shift: Shift, moved: str) -> None:
    """Why one history can carry all three shifts in the study below."""
    rng = np.random.default_rng(3)
    baseline, recent = window(rng, answers, 40), window(rng, answers, 20, shift, start=1e6)
    statuses = {s.signal: s.status for s in evaluate("vllm", "default", baseline, recent, SETTINGS)}
    assert statuses == {name: "drift" if name == moved else "ok" for name in SIGNALS}


@pytest.mark.parametrize("name", SIGNALS)
def test_false_positive_rate_at_most_one_percent(name: str, no_shift: dict[str, Tally]) -> None:
    tally = no_shift[name]
    print(
        f"\n{name}: no shift, {HISTORIES} histories (seed {NULL_SEED}): drift "
        f"{tally.rate('drift'):.1%}, p < alpha {tally.significant / HISTORIES:.1%}, "
        f"inconclusive {tally.rate('inconclusive'):.1%}"
    )
    assert tally.rate("drift") <= 0.01
    assert tally.significant / HISTORIES <= 0.02  # the tests themselves are not anti-conservative
    assert tally.rate("inconclusive") <= 0.01  # the default window is enough to decide


@pytest.mark.parametrize("name", SIGNALS)
def test_detection_rate_at_the_stated_effect(name: str, shifted: dict[str, Tally]) -> None:
    tally = shifted[name]
    print(
        f"\n{name}: {EFFECT}, {HISTORIES} histories (seed {SHIFT_SEED}): drift "
        f"{tally.rate('drift'):.1%}, median score {np.median(tally.scores):+.3f}"
    )
    assert tally.rate("drift") >= 0.95


def test_pairs_compare_at_their_own_place_in_the_minute() -> None:
    """Probed every 10 s, each pair is compared at its first run and then every sixth; a
    thousand pairs started together spread their comparisons over the six runs, not all on
    the same one."""
    pairs = [(f"e{i}", "golden") for i in range(1000)]
    at: list[int] = []
    for endpoint, golden in pairs:
        compared = [r for r in range(1, 61) if due(endpoint, golden, r, 10.0)]
        assert due(endpoint, golden, 0, 10.0)
        assert len(compared) == 10 and all(b - a == 6 for a, b in itertools.pairwise(compared))
        at.append(compared[0])
    per_run = [at.count(r) for r in range(1, 7)]
    assert min(per_run) > 1000 / 6 * 0.7, per_run


def test_the_daemons_reads_compare_as_the_frames_do(tmp_path: Path) -> None:
    """`baselines.drift` reads the stored results straight into arrays (a DataFrame of 20 rows
    cost more than the comparison); the signals, and a baseline's noise, are those of the same
    rows read as DataFrames: cold answers untimed, failures unanswered, answers kept as hashes
    without a profile."""
    store = Store.open(tmp_path / "w.db")
    start = datetime(2026, 12, 5, 12, tzinfo=UTC)
    rng = np.random.default_rng(7)
    made = None
    for n in range(40):
        if n == 20:  # the first 20 runs make the baseline
            made = baselines.maintain(store.db, "e", "default", BaselinePolicy(runs=20), start)
        results = []
        for prompt, text in (("capital", "Paris is the capital."), ("json", '{"a": 1}')):
            slow = 1.6 if n >= 20 and prompt == "json" else 1.0  # the recent window drifts
            failed = n % 9 == 4
            answer = Answer(
                text="" if failed else text,
                e2e_s=None if failed else float(rng.lognormal(0, 0.1)) * slow,
                error_class="timeout" if failed else None,
            )
            passed = n % 7 != 3
            results.append(
                ProbeResult(
                    endpoint="e",
                    prompt_id=prompt,
                    golden_set="default",
                    golden_set_hash="h",
                    started_at=start + timedelta(seconds=n),
                    stream=False,
                    answer=answer,
                    checks=[] if failed else [CheckOutcome("contains", passed, "")],
                    fingerprint="f1" if n < 30 else "f2",
                    output_profile=None if failed or n % 11 == 5 else profile(answer.text),
                    cold_reason="restart" if n % 13 == 6 else None,
                )
            )
        store.record_run(f"r{n:02}", results, {})
    assert made is not None

    def frame(runs: list[str]) -> pd.DataFrame:
        marks = ",".join("?" * len(runs))
        f = pd.read_sql_query(
            "select prompt_id, ok, error_class, e2e_s, cold, output_profile from results "
            f"where run_id in ({marks}) order by started_ts",
            store.db.conn,
            params=runs,
        )
        f["answered"] = f["error_class"].isna() | (f["error_class"] == "check_failed")
        f["ok"] = f["ok"].astype(bool)
        f.loc[f.pop("cold").astype(bool), "e2e_s"] = None
        f["output_profile"] = [
            json.loads(p) if isinstance(p, str) else None for p in f.pop("output_profile")
        ]
        return f

    base = frame(baselines.runs_of(store.db, made))
    recent = frame([f"r{n:02}" for n in range(20, 40)])
    expected = evaluate("e", "default", base, recent, SETTINGS, "f1", "f2")
    assert baselines.drift(store.db, "e", "default", SETTINGS) == expected
    assert {s.signal: s.status for s in expected}["latency"] == "drift"

    answered = base[base["answered"]]
    spreads = [
        (e2e.quantile(0.75) - e2e.quantile(0.25)) / e2e.median()
        for _, group in answered.groupby("prompt_id")
        if len(e2e := group["e2e_s"].dropna()) >= 2
    ]
    stored = json.loads(baselines.active(store.db, "e", "default")["noise"])  # type: ignore[index]
    assert stored["e2e_spread"] == pytest.approx(float(np.median(spreads)))
    assert stored["pass_rate"] == pytest.approx(float(answered["ok"].mean()))

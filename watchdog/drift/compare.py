"""Drift: compare a recent window of probe results with the baseline of an endpoint × golden set.

Three signals, each `ok`, `drift` or `inconclusive` (too few samples, or a baseline too noisy to
tell), never a guess: latency (a rank test on e2e normalised per prompt, plus the p50/p95
ratios), format accuracy (a test on pass proportions), and output (per prompt, similarity of
the recent answers to the baseline's against the baseline's own spread, with the false
discovery rate controlled across prompts).

Each test compares like with like: a recent probe with the baseline probes of the same prompt
(prompts missing from the baseline are left out), so a golden set that grew is not drift.
Drift needs both evidence (p below alpha) and an effect of at least the configured minimum
(for latency, also at least the baseline's own spread), so that a large sample does not turn a
trivial change into a page. No statistic needs scipy: watchdog/drift/stats.py has them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pydantic import Field, ValidationInfo, field_validator

from watchdog.drift.stats import benjamini_hochberg, fisher_less, mann_whitney_u, smallest_p
from watchdog.parsing.validate import Strict
from watchdog.result import Signal, Status

SIGNALS = ("latency", "format_accuracy", "output")
STATUS_VALUE = {"ok": 0, "drift": 1, "inconclusive": -1}  # mlops_watchdog_drift_status


class DriftSettings(Strict):
    """The `drift:` config section: after each run, the last `window` runs of an endpoint and
    golden set are compared with its baseline on latency, format accuracy and output."""

    window: int = Field(20, ge=3, le=10000)
    """Recent runs compared with the baseline. Larger: steadier verdicts, slower to notice."""
    alpha: float = Field(0.01, gt=0, lt=0.5)
    """The significance level of each test; the output signal uses it as the false discovery
    rate across prompts. Lower: fewer false alarms, more missed drifts."""
    min_samples: int = Field(8, ge=3)
    """Samples needed on each side per signal; fewer make the signal `inconclusive`. At least
    enough for a difference to be significant at `alpha` (5 at 0.01, 4 at 0.05)."""

    @field_validator("min_samples")
    @classmethod
    def _can_be_significant(cls, n: int, info: ValidationInfo) -> int:
        alpha = info.data.get("alpha")
        if alpha is not None and smallest_p(n) > alpha:
            enough = next(k for k in range(n, 1000) if smallest_p(k) <= alpha)
            raise ValueError(
                f"{n} samples on each side can never show a drift at alpha {alpha:g} (the "
                f"smallest p-value of a rank test on {n} against {n} is {smallest_p(n):.3g}), "
                f"so a real change would read ok: use at least {enough}"
            )
        return n

    min_latency_change: float = Field(0.25, ge=0)
    """The smallest relative change of the p50 latency that counts as drift (0.25: 25 %); a
    baseline noisier than this raises the bar to its own noise."""
    min_accuracy_drop: float = Field(0.15, ge=0, le=1)
    """The smallest fall of the checks' pass rate that counts as drift (0.15: 15 points)."""
    min_similarity_drop: float = Field(0.15, ge=0, le=1)
    """The smallest fall of an answer's similarity to the baseline answers that counts as
    drift."""
    max_baseline_noise: float = Field(0.5, ge=0)
    """How noisy a baseline may be and still be judged: an e2e spread (IQR over median) above
    this makes latency `inconclusive`, and a prompt whose baseline answers are less similar to
    each other than 1 - this is left out of output drift."""


BUCKETS = 512  # hashed character 3-gram buckets in a profile


def profile(text: str) -> dict[str, int]:
    """The lexical fingerprint of one answer, stored as JSON next to each result.

    Character 3-gram counts of the lowercased text with whitespace collapsed and one space of
    padding at each end (so a one-word answer has grams too), hashed with crc32 into BUCKETS
    buckets keyed by the bucket number as a string, plus "len": the answer's character count.
    crc32, not hash(): profiles are compared across processes and releases.
    """
    collapsed = " ".join(text.lower().split())
    counts: dict[str, int] = {}
    if collapsed:
        padded = f" {collapsed} "
        for i in range(len(padded) - 2):
            key = str(zlib.crc32(padded[i : i + 3].encode()) % BUCKETS)
            counts[key] = counts.get(key, 0) + 1
    counts["len"] = len(text)
    return counts


def similarity(a: dict[str, int], b: dict[str, int]) -> float:
    """Cosine of two profiles' bucket vectors ("len" excluded), in [0, 1]. Two answers without
    grams (empty) are alike: 1.0; one empty and one not: 0.0."""
    (u, u_empty), (v, v_empty) = _unit([a]), _unit([b])
    if u_empty[0] or v_empty[0]:
        return float(u_empty[0] and v_empty[0])
    return float(_tidy((u * v).sum(axis=1))[0])


def _unit(profiles: Sequence[dict[str, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The profiles' bucket vectors scaled to length 1, and which are empty (left at 0)."""
    m = np.zeros((len(profiles), BUCKETS))
    for i, p in enumerate(profiles):
        grams = dict(p)
        grams.pop("len", None)
        m[i, np.fromiter(map(int, grams), int, len(grams))] = list(grams.values())
    norm = np.sqrt((m * m).sum(axis=1))
    empty = norm == 0
    return m / np.where(empty, 1.0, norm)[:, None], empty


def _tidy(similarities: np.ndarray) -> np.ndarray:
    """Rounded so that identical answers tie exactly (rank tests see ties), within [0, 1]."""
    return np.clip(np.round(similarities, 12), 0.0, 1.0)


class _Verdict(NamedTuple):
    status: Status
    score: float | None = None
    detail: str = ""
    p_value: float | None = None


def evaluate(
    endpoint: str,
    golden_set: str,
    baseline: pd.DataFrame | Sample,
    recent: pd.DataFrame | Sample,
    settings: DriftSettings,
    baseline_fingerprint: str | None = None,
    current_fingerprint: str | None = None,
) -> list[Signal]:
    """One Signal per name in SIGNALS, in that order, for one endpoint × golden set.

    Frames hold one row per probe result: run_id, prompt_id, started_ts, answered, ok, e2e_s,
    ttft_s, output_profile (a profile() dict, or None when storage keeps no model text).
    ttft is not tested on its own: e2e contains it, and not every API streams. Or each a
    Sample, as the daemon reads them.
    """
    checks = {"latency": _latency, "format_accuracy": _format_accuracy, "output": _output}
    base, rec = Sample.of(baseline), Sample.of(recent)
    signals = []
    for name in SIGNALS:
        verdict = checks[name](base, rec, settings)
        signals.append(
            Signal(
                endpoint,
                golden_set,
                name,
                *verdict,
                baseline_fingerprint=baseline_fingerprint,
                current_fingerprint=current_fingerprint,
            )
        )
    return signals


class Sample(NamedTuple):
    """One side's results as arrays, one entry per result: pandas indexing per signal costs
    more than the tests, and a DataFrame built for 20 rows costs more than reading them."""

    prompt: np.ndarray  # str
    answered: np.ndarray  # bool
    ok: np.ndarray  # bool
    e2e: np.ndarray  # float, NaN when not answered
    profiles: list[Any]  # profile() dicts, or None

    @classmethod
    def of(cls, frame: pd.DataFrame | Sample) -> Sample:
        if isinstance(frame, Sample):
            return frame
        if frame.empty:
            none = np.array([], dtype=bool)
            return cls(np.array([], dtype=object), none, none, np.array([]), [])
        profiles = frame.get("output_profile")
        return cls(
            frame["prompt_id"].astype(str).to_numpy(object),
            frame["answered"].astype("boolean").fillna(False).to_numpy(bool),
            frame["ok"].astype("boolean").fillna(False).to_numpy(bool),
            frame["e2e_s"].to_numpy(float),
            [None] * len(frame) if profiles is None else profiles.tolist(),
        )


def _latency(baseline: Sample, recent: Sample, settings: DriftSettings) -> _Verdict:
    """Two-sided Mann–Whitney U of recent against baseline e2e, each divided by the baseline
    median of its prompt.

    Dividing both sides of a prompt by the same number keeps its recent and baseline values
    exchangeable under no drift, so the pooled rank test stays valid while prompts of different
    lengths share one scale; the test is scale free and needs no lognormal assumption. The
    baseline's noise is the IQR / median of its normalised values: the spread between repeats
    that batching and prompt caching cause. Drift needs p < alpha and a p50 change of at least
    max(min_latency_change, that noise); a noise above max_baseline_noise is inconclusive.
    """
    timed = baseline.answered & np.isfinite(baseline.e2e) & (baseline.e2e > 0)
    scale = {
        prompt: float(np.median(baseline.e2e[timed & (baseline.prompt == prompt)]))
        for prompt in set(baseline.prompt[timed])
    }
    b = baseline.e2e[timed] / [scale[p] for p in baseline.prompt[timed]]
    known = recent.answered & np.isfinite(recent.e2e) & np.isin(recent.prompt, list(scale))
    r = recent.e2e[known] / [scale[p] for p in recent.prompt[known]]
    if too_few := _too_few("answered probes with an e2e time", len(b), len(r), settings):
        return too_few
    q25, p50, q75, p95 = np.quantile(b, [0.25, 0.5, 0.75, 0.95])
    noise = (q75 - q25) / p50
    if noise > settings.max_baseline_noise:
        return _Verdict(
            "inconclusive",
            detail=f"baseline too noisy to tell: e2e IQR/median {noise:.2f} > "
            f"{settings.max_baseline_noise:g} (max_baseline_noise)",
        )
    p = mann_whitney_u(r, b).p_value
    score = float(np.median(r) / p50 - 1)
    threshold = max(settings.min_latency_change, noise)
    detail = (
        f"e2e p50 ×{score + 1:.2f}, p95 ×{np.quantile(r, 0.95) / p95:.2f} vs baseline "
        f"(n={len(r)} recent/{len(b)} baseline, {_p(p)})"
    )
    drift = p < settings.alpha and abs(score) >= threshold
    if p < settings.alpha and not drift:
        detail += f"; p50 change under {threshold:.2f} (min_latency_change or baseline noise)"
    return _Verdict("drift" if drift else "ok", score, detail, p)


def _format_accuracy(baseline: Sample, recent: Sample, settings: DriftSettings) -> _Verdict:
    """One-sided Fisher's exact test that the recent pass rate of answered probes is lower.

    Exact at any sample size and conservative, so no small-sample guard is needed. Unanswered
    probes are left out: errors and timeouts have their own alerts, and this signal asks
    whether the answers that come back still pass their format checks.
    """
    known = recent.answered & np.isin(recent.prompt, list(set(baseline.prompt[baseline.answered])))
    n_b, n_r = int(baseline.answered.sum()), int(known.sum())
    if too_few := _too_few("answered probes", n_b, n_r, settings):
        return too_few
    pass_b = int((baseline.ok & baseline.answered).sum())
    pass_r = int((recent.ok & known).sum())
    p = fisher_less(pass_b, n_b, pass_r, n_r)
    score = pass_b / n_b - pass_r / n_r
    detail = (
        f"format checks passed by {pass_r / n_r:.0%} of {n_r} recent answers vs "
        f"{pass_b / n_b:.0%} of {n_b} baseline ({_p(p)})"
    )
    drift = p < settings.alpha and score >= settings.min_accuracy_drop
    if p < settings.alpha and not drift:
        detail += f"; drop under {settings.min_accuracy_drop:g} (min_accuracy_drop)"
    return _Verdict("drift" if drift else "ok", score, detail, p)


class _PromptTest(NamedTuple):
    prompt: str
    drop: float  # baseline median similarity - recent median similarity
    p_value: float
    baseline_sim: float
    recent_sim: float
    baseline_len: float
    recent_len: float


def _output(baseline: Sample, recent: Sample, settings: DriftSettings) -> _Verdict:
    """Per prompt, one-sided Mann–Whitney U that recent answers are less like the baseline's
    than the baseline's answers are like each other; Benjamini–Hochberg at q = alpha across
    prompts.

    Like is compared with like: each baseline answer's mean similarity to the other baseline
    answers (its noise floor) against each recent answer's mean similarity to all baseline
    answers. Both are one answer's own deviation plus the same average over the baseline, so
    they are exchangeable under no drift; the raw pairwise similarities would not be (there
    are n(n-1)/2 of them from n answers, and each has two answers' deviations). A prompt needs
    min_samples profiles on each side; a prompt whose baseline median similarity is below
    1 - max_baseline_noise is too varied to judge and left out. Deterministic answers (all
    baseline similarities 1.0) tie, so any recent answer that differs ranks below them.
    """
    base, rec = _profiles(baseline), _profiles(recent)
    if not base and not rec:
        answered = baseline.answered.any() or recent.answered.any()
        return _Verdict(
            "inconclusive",
            detail="no answer profiles stored (storage.responses: hash keeps no model text): "
            "nothing to compare"
            if answered
            else "no answers on either side: nothing to compare",
        )
    tests, small, noisy = [], [], []
    for prompt in sorted(base.keys() & rec.keys()):
        b_profiles, r_profiles = base[prompt], rec[prompt]
        if min(len(b_profiles), len(r_profiles)) < settings.min_samples:
            small.append(prompt)
            continue
        floor, against = _mean_similarities(b_profiles, r_profiles)
        baseline_sim = float(np.median(floor))
        if 1 - baseline_sim > settings.max_baseline_noise:
            noisy.append(prompt)
            continue
        tests.append(
            _PromptTest(
                prompt,
                baseline_sim - float(np.median(against)),
                mann_whitney_u(against, floor, "less").p_value,
                baseline_sim,
                float(np.median(against)),
                float(np.median([p.get("len", 0) for p in b_profiles])),
                float(np.median([p.get("len", 0) for p in r_profiles])),
            )
        )
    skipped = _skipped(small, noisy, settings)
    if not tests:
        why = "no prompt has enough answer profiles on both sides" if not noisy else ""
        return _Verdict("inconclusive", detail="; ".join(filter(None, [why, skipped])))
    adjusted = benjamini_hochberg([t.p_value for t in tests])
    drifted = [
        t
        for t, q in zip(tests, adjusted, strict=True)
        if q < settings.alpha and t.drop >= settings.min_similarity_drop
    ]
    lengths = (
        f"median length {np.median([t.baseline_len for t in tests]):.0f} → "
        f"{np.median([t.recent_len for t in tests]):.0f} chars"
    )
    p = min(adjusted)
    if drifted:
        worst = max(drifted, key=lambda t: t.drop)
        named = ", ".join(
            f"{t.prompt} (similarity {t.baseline_sim:.2f} → {t.recent_sim:.2f}, "
            f"{t.baseline_len:.0f} → {t.recent_len:.0f} chars)"
            for t in drifted
        )
        detail = (
            f"{len(drifted)} of {_prompts(len(tests))} drifted: {named}; "
            f"BH q={settings.alpha:g}, {_p(p)}"
        )
        return _Verdict("drift", worst.drop, "; ".join(filter(None, [detail, skipped])), p)
    worst = max(tests, key=lambda t: t.drop)
    detail = (
        f"{_prompts(len(tests))} compared, largest similarity drop {worst.drop:.2f} "
        f"({worst.prompt}); {lengths}; BH q={settings.alpha:g}, smallest adjusted {_p(p)}"
    )
    if p < settings.alpha:
        detail += f"; drops under {settings.min_similarity_drop:g} (min_similarity_drop)"
    return _Verdict("ok", worst.drop, "; ".join(filter(None, [detail, skipped])), p)


def _mean_similarities(
    baseline: list[dict[str, int]], recent: list[dict[str, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Each baseline answer's mean similarity to the other baseline answers, and each recent
    answer's to all of them. Cosine is linear in a unit vector, so a mean of cosines is one dot
    product with the sum of the baseline's unit vectors: O(n), no n × n matrix."""
    u, u_empty = _unit(baseline)
    v, v_empty = _unit(recent)
    n, total, empties = len(u), u.sum(axis=0), int(u_empty.sum())
    floor = ((u * total).sum(axis=1) - (u * u).sum(axis=1)) / (n - 1)
    floor[u_empty] = (empties - 1) / (n - 1)  # an empty answer is like the other empty ones
    against = (v * total).sum(axis=1) / n
    against[v_empty] = empties / n
    return _tidy(floor), _tidy(against)


def _profiles(rows: Sample) -> dict[str, list[dict[str, int]]]:
    by_prompt: dict[str, list[dict[str, int]]] = {}
    for prompt, p in zip(rows.prompt, rows.profiles, strict=True):
        if isinstance(p, dict):
            by_prompt.setdefault(prompt, []).append(p)
        elif isinstance(p, str | bytes):  # a caller's bug, not a storage mode: say so
            raise TypeError("output_profile must be a profile() dict (parse the stored JSON)")
    return by_prompt


def _skipped(small: list[str], noisy: list[str], settings: DriftSettings) -> str:
    parts = []
    if small:
        parts.append(
            f"{len(small)} prompt(s) with under {settings.min_samples} profiles on a side "
            f"left out ({', '.join(small)})"
        )
    if noisy:
        parts.append(
            f"{len(noisy)} prompt(s) with baseline answers too varied to judge, similarity "
            f"under {1 - settings.max_baseline_noise:g} (max_baseline_noise), left out "
            f"({', '.join(noisy)})"
        )
    return "; ".join(parts)


def _too_few(what: str, n_baseline: int, n_recent: int, settings: DriftSettings) -> _Verdict | None:
    if min(n_baseline, n_recent) >= settings.min_samples:
        return None
    return _Verdict(
        "inconclusive",
        detail=f"too few {what}: {n_recent} recent, {n_baseline} baseline "
        f"(min_samples {settings.min_samples} each)",
    )


def _prompts(n: int) -> str:
    return f"{n} prompt" if n == 1 else f"{n} prompts"


def _p(p: float) -> str:
    return f"p={p:.0e}".replace("e-0", "e-") if p < 1e-3 else f"p={p:.3f}"

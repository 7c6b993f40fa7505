"""Drift power: detection rate and false-positive rate of each signal on synthetic histories.

A history is a baseline of 40 runs and a recent window of N runs of a four-prompt golden set.
With no shift, latency is lognormal around each prompt's median (sigma 0.25), 2% of probes time
out, 90% of answers pass their format checks, and answers repeat with 5-8% of words swapped
(one prompt answers identically every time, as llama.cpp at temperature 0 does). A shift
multiplies every prompt's median e2e, lowers the pass rate, or rewrites the answers of one
prompt ("summary"): a share of its words swapped, or 1.0 for a different answer. Default
DriftSettings throughout; tests/test_drift.py asserts on the same model.

    .venv/bin/python -m bench.drift_power [--histories 200] [--seed 2026]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from watchdog.drift.compare import SIGNALS, DriftSettings, evaluate, profile

SIGMA = 0.25  # lognormal spread of e2e between repeats
PASS_RATE = 0.9
TIMEOUT_RATE = 0.02
BASELINE_RUNS = 40
POOL = 300  # answer variants drawn per prompt and noise level, profiled once

# prompt id: (median e2e s, share of words swapped between repeats, answer, a different answer)
PROMPTS = {
    "capital": (0.35, 0.0, "The capital of France is Paris.", "Paris."),
    "json": (
        0.9,
        0.05,
        '{"name": "Ada Lovelace", "born": 1815, "known_for": "the first published program"}',
        '{"error": "I cannot produce JSON for that request, please rephrase the question"}',
    ),
    "summary": (
        2.5,
        0.05,
        "The report finds that the service met its latency target in most weeks, but error "
        "rates rose after the March release and were traced to a misconfigured cache.",
        "Sure! Here is a short summary. Overall things went fine and there were no major "
        "problems worth mentioning during this quarter of operations.",
    ),
    "steps": (
        4.0,
        0.08,
        "1. Stop the server. 2. Back up the database. 3. Apply the migration. 4. Start the "
        "server and check the health endpoint before sending traffic again.",
        "To upgrade you should first read the release notes carefully, then decide whether a "
        "maintenance window is needed for your deployment.",
    ),
}
SHIFTED_PROMPT = "summary"  # the one prompt whose answers a rewrite changes
WORDS = (  # what a swapped word becomes
    *("the", "a", "this", "that", "report", "service", "server", "cache", "release", "error"),
    *("rate", "week", "month", "data", "check", "start", "stop", "apply", "run", "found"),
    *("rose", "fell", "was", "were", "most", "some", "many", "key", "value", "result"),
    *("answer", "quickly", "slowly", "again", "before", "after", "during", "into", "from"),
)


@dataclass(frozen=True)
class Shift:
    latency: float = 1.0  # factor on every prompt's median e2e in the recent window
    pass_rate: float = PASS_RATE  # recent format pass rate
    rewrite: float = 0.0  # share of SHIFTED_PROMPT's words swapped; 1.0: a different answer


class Answers:
    """Pools of profiled answer variants (profiling is the slow part; a history then picks from
    the pools). Each pool has its own seed, so a pool is the same whatever is drawn first."""

    def __init__(self, seed: int = 7):
        self._seed = seed
        self._pools: dict[tuple[str, float], list[dict[str, int]]] = {}

    def pick(self, rng: np.random.Generator, prompt: str, rewrite: float) -> dict[str, int]:
        key = (prompt, rewrite)
        if key not in self._pools:
            _, noise, text, other = PROMPTS[prompt]
            text, rate = (other, noise) if rewrite >= 1.0 else (text, max(noise, rewrite))
            seed = [self._seed, list(PROMPTS).index(prompt), round(rewrite * 1000)]
            pool = np.random.default_rng(seed)
            self._pools[key] = [profile(_swap(pool, text, rate)) for _ in range(POOL)]
        return self._pools[key][int(rng.integers(POOL))]


def _swap(rng: np.random.Generator, text: str, rate: float) -> str:
    words = text.split()
    swapped = rng.random(len(words)) < rate
    return " ".join(str(rng.choice(WORDS)) if s else w for w, s in zip(words, swapped, strict=True))


def window(
    rng: np.random.Generator,
    answers: Answers,
    runs: int,
    shift: Shift | None = None,
    start: float = 0.0,
) -> pd.DataFrame:
    """`runs` runs of every prompt, as the store hands them to drift.evaluate."""
    shift = shift or Shift()
    names = list(PROMPTS)
    n = runs * len(names)
    prompt = np.tile(np.arange(len(names)), runs)
    run = np.repeat(np.arange(runs), len(names))
    answered = rng.random(n) >= TIMEOUT_RATE
    median = np.array([PROMPTS[p][0] for p in names])[prompt] * shift.latency
    e2e = np.where(answered, median * rng.lognormal(0.0, SIGMA, n), np.nan)
    ok = answered & (rng.random(n) < shift.pass_rate)
    profiles = [
        answers.pick(rng, names[i], shift.rewrite if names[i] == SHIFTED_PROMPT else 0.0)
        if a
        else None
        for i, a in zip(prompt, answered, strict=True)
    ]
    return pd.DataFrame(
        {
            "run_id": [f"run-{start:.0f}-{r}" for r in run],
            "prompt_id": [names[i] for i in prompt],
            "started_ts": start + run * 300.0,
            "answered": answered,
            "ok": ok,
            "e2e_s": e2e,
            "ttft_s": e2e * 0.2,
            "output_profile": profiles,
        }
    )


@dataclass
class Tally:
    """One signal's outcomes over a study's histories."""

    statuses: Counter[str] = field(default_factory=Counter)
    significant: int = 0  # p < alpha (output: the smallest BH-adjusted p), whatever the effect
    scores: list[float] = field(default_factory=list)

    def rate(self, status: str) -> float:
        return self.statuses[status] / max(1, self.statuses.total())


def study(
    answers: Answers,
    seed: int,
    histories: int,
    shift: Shift,
    recent_runs: int = 20,
    settings: DriftSettings | None = None,
) -> dict[str, Tally]:
    """Each signal's outcomes over `histories` independent histories drawn from `seed`."""
    settings = settings or DriftSettings()
    rng = np.random.default_rng(seed)
    tallies = {name: Tally() for name in SIGNALS}
    for _ in range(histories):
        baseline = window(rng, answers, BASELINE_RUNS)
        recent = window(rng, answers, recent_runs, shift, start=1e6)
        for signal in evaluate("bench", "default", baseline, recent, settings):
            tally = tallies[signal.signal]
            tally.statuses[signal.status] += 1
            if signal.p_value is not None:
                tally.significant += signal.p_value < settings.alpha
            if signal.score is not None:
                tally.scores.append(signal.score)
    return tallies


TABLE = {  # signal: (effect name, the shifts, from none to large)
    "latency": ("p50 ×", [Shift(latency=f) for f in (1.0, 1.3, 1.4, 1.5, 1.6, 2.0)]),
    "format_accuracy": ("pass rate", [Shift(pass_rate=r) for r in (0.9, 0.8, 0.75, 0.7, 0.5)]),
    "output": ("rewrite", [Shift(rewrite=f) for f in (0.0, 0.1, 0.2, 0.3, 0.4, 1.0)]),
}


def effect(signal: str, shift: Shift) -> str:
    value = {"latency": shift.latency, "format_accuracy": shift.pass_rate}.get(
        signal, shift.rewrite
    )
    return f"{TABLE[signal][0]} {value:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--recent", type=int, nargs="+", default=[10, 20, 50])
    args = parser.parse_args()
    answers = Answers()
    began = time.perf_counter()
    print(
        f"{args.histories} histories per row, seed {args.seed}, baseline {BASELINE_RUNS} runs × "
        f"{len(PROMPTS)} prompts, default DriftSettings ({DriftSettings()})"
    )
    print(
        "drift: share with status drift (no shift: the false-positive rate); p<alpha: share "
        "where the test alone rejects; score: median"
    )
    print(
        f"{'signal':<16} {'effect':<14} {'recent':>6} {'drift':>7} {'p<alpha':>8} "
        f"{'inconcl.':>8} {'score':>7}"
    )
    for signal, (_, shifts) in TABLE.items():
        for shift in shifts:
            for runs in args.recent:
                tally = study(answers, args.seed, args.histories, shift, runs)[signal]
                print(
                    f"{signal:<16} {effect(signal, shift):<14} {runs:>6} "
                    f"{tally.rate('drift'):>7.1%} {tally.significant / args.histories:>8.1%} "
                    f"{tally.rate('inconclusive'):>8.1%} {np.median(tally.scores):>+7.3f}",
                    flush=True,
                )
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()

"""Pure statistics for drift: Mann–Whitney U, Fisher's exact test, Benjamini–Hochberg.

Written out here because scipy is not a dependency. Each follows the textbook definition and the
conventions of scipy.stats, so a p-value here can be checked against it or against a table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Alternative = Literal["two-sided", "less", "greater"]
EXACT_MAX_N = 8  # the smaller sample at most this and no ties: exact U distribution (as scipy)


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U of the first sample: the pairs (x, y) with x > y, ties counting one half
    p_value: float
    method: Literal["exact", "asymptotic"]


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z, accurate in the far tail (erfc, not 1 - cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def mann_whitney_u(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    alternative: Alternative = "two-sided",
    method: Literal["auto", "exact", "asymptotic"] = "auto",
) -> MannWhitney:
    """Mann–Whitney U test of x against y; "less" means x tends to be smaller than y.

    Exact when the smaller sample has at most 8 values and there are no ties (the null
    distribution of U counted through the Gaussian binomial coefficient); otherwise the normal
    approximation with the tie correction of the variance and a continuity correction of 0.5.
    These are scipy.stats.mannwhitneyu's defaults (method="auto", use_continuity=True). When
    every value is tied there is no evidence either way: p = 1. `method` forces one (exact
    assumes no ties), as scipy's does.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs at least one value in each sample")
    combined = np.concatenate([a, b])
    ranks = rank(combined)
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2)
    u2 = n1 * n2 - u1
    _, counts = np.unique(combined, return_counts=True)
    ties = bool((counts > 1).any())
    if method == "exact" or (method == "auto" and min(n1, n2) <= EXACT_MAX_N and not ties):
        # Without ties U is an integer, and P(U1 <= u) = P(U2 >= n1 n2 - u) by symmetry.
        if alternative == "greater":
            p = _exact_sf(round(u1), n1, n2)
        elif alternative == "less":
            p = _exact_sf(round(u2), n1, n2)
        else:
            p = 2 * _exact_sf(round(max(u1, u2)), n1, n2)
        return MannWhitney(u1, min(p, 1.0), "exact")
    n = n1 + n2
    tie_term = float((counts.astype(float) ** 3 - counts).sum()) / (n * (n - 1))
    sd = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term))
    if sd == 0:
        return MannWhitney(u1, 1.0, "asymptotic")
    mean = n1 * n2 / 2
    u = {"greater": u1, "less": u2}.get(alternative, max(u1, u2))
    p = normal_sf((u - mean - 0.5) / sd)
    if alternative == "two-sided":
        p *= 2
    return MannWhitney(u1, min(p, 1.0), "asymptotic")


def _exact_sf(u: int, n1: int, n2: int) -> float:
    """P(U >= u) under the null: the coefficients of the Gaussian binomial [n1 + n2 choose n1]_q
    count the arrangements with U = 0, 1, ..., n1 n2 (Mann and Whitney 1947)."""
    counts = [1]
    for i in range(1, min(n1, n2) + 1):
        k = max(n1, n2) + i
        grown = [*counts, *([0] * k)]  # times (1 - q^k)
        for j in range(len(counts)):
            grown[j + k] -= counts[j]
        quotient = grown[:]  # divided by (1 - q^i): q[j] = g[j] + q[j - i]
        for j in range(i, len(quotient)):
            quotient[j] += quotient[j - i]
        counts = quotient[: len(grown) - i]
    total = math.comb(n1 + n2, n1)
    return sum(counts[max(u, 0) :]) / total


def fisher_less(pass_a: int, n_a: int, pass_b: int, n_b: int) -> float:
    """One-sided Fisher's exact test that sample b passes less often than sample a.

    Conditional on the total passes, b's passes are hypergeometric under the null; p is
    P(X <= pass_b). Exact at every sample size, and conservative (the distribution is
    discrete), so it never calls a drop that a small sample cannot show. Summed in log space
    from pass_b downwards, stopping once the terms no longer change the sum.
    """
    if not (0 <= pass_a <= n_a and 0 <= pass_b <= n_b):
        raise ValueError("passes must lie between 0 and the sample size")
    total, passes = n_a + n_b, pass_a + pass_b
    low = max(0, n_b - (total - passes))
    if n_b == 0 or pass_b >= min(n_b, passes):
        return 1.0

    def log_pmf(k: int) -> float:
        return _log_comb(passes, k) + _log_comb(total - passes, n_b - k) - _log_comb(total, n_b)

    mode = (n_b + 1) * (passes + 1) // (total + 2)
    term, acc = 1.0, 1.0  # relative to pmf(pass_b)
    for k in range(pass_b, low, -1):
        # pmf(k - 1) / pmf(k), from the ratio of binomial coefficients
        term *= k * (total - passes - n_b + k) / ((passes - k + 1) * (n_b - k + 1))
        acc += term
        if k <= mode and term < acc * 1e-17:
            break
    return min(1.0, math.exp(log_pmf(pass_b)) * acc)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """BH-adjusted p-values, in the input order: reject those <= q to keep the false discovery
    rate at q (Benjamini and Hochberg 1995; R's p.adjust(method="BH"))."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


@dataclass(frozen=True)
class MannKendall:
    s: int  # pairs that rose minus pairs that fell, later against earlier
    z: float  # S standardised, with continuity correction
    p_increasing: float  # one-sided: the chance of a rise this steady without a trend


def mann_kendall(values: Sequence[float] | np.ndarray) -> MannKendall:
    """Mann–Kendall test for a monotonic trend in values taken in time order. Ties (a GPU's
    used VRAM holds still between allocations) shrink the variance, as in Hipel and McLeod
    (and pymannkendall's original_test)."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 3:
        return MannKendall(0, 0.0, 1.0)
    later = np.triu(np.sign(x[None, :] - x[:, None]), k=1)
    s = int(later.sum())
    _, counts = np.unique(x, return_counts=True)
    ties = counts[counts > 1]
    variance = (n * (n - 1) * (2 * n + 5) - float(np.sum(ties * (ties - 1) * (2 * ties + 5)))) / 18
    if variance <= 0:
        return MannKendall(s, 0.0, 1.0)
    z = (s - np.sign(s)) / math.sqrt(variance)
    return MannKendall(s, float(z), normal_sf(float(z)))


def smallest_p(n: int) -> float:
    """The smallest p-value the drift tests can reach with n samples on each side: the
    two-sided exact rank test with every recent value beyond every baseline one (the one-sided
    tests and Fisher's reach half of it)."""
    return 2 / math.comb(2 * n, n)

"""The pure statistics against published values, hand arithmetic and brute-force enumeration."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from watchdog.drift.stats import (
    benjamini_hochberg,
    fisher_less,
    mann_kendall,
    mann_whitney_u,
    normal_sf,
    rank,
)

# The example of scipy.stats.mannwhitneyu's documentation (from Conover's textbook): U = 17,
# exact two-sided p = 0.1111 (= 14/126), asymptotic p = 0.11134688653314041.
MALES = [19, 22, 16, 29, 24]
FEMALES = [20, 11, 17, 12]


def permutation_p(x: list[float], y: list[float], alternative: str) -> float:
    """The exact permutation p of U, by enumerating every split of the pooled values."""
    pooled = x + y
    n1 = len(x)

    def u_of(first: tuple[int, ...]) -> float:
        a = [pooled[i] for i in first]
        b = [pooled[i] for i in range(len(pooled)) if i not in first]
        return sum((ai > bi) + 0.5 * (ai == bi) for ai in a for bi in b)

    observed = u_of(tuple(range(n1)))
    us = [u_of(c) for c in itertools.combinations(range(len(pooled)), n1)]
    ge = Fraction(sum(u >= observed for u in us), len(us))
    le = Fraction(sum(u <= observed for u in us), len(us))
    p = {"greater": ge, "less": le, "two-sided": 2 * min(ge, le)}[alternative]
    return float(min(p, Fraction(1)))


def test_normal_sf() -> None:
    assert normal_sf(0) == 0.5
    assert normal_sf(1.959963984540054) == pytest.approx(0.025, rel=1e-12)
    assert normal_sf(-1.959963984540054) == pytest.approx(0.975, rel=1e-12)
    assert normal_sf(8) == pytest.approx(6.22096057427178e-16, rel=1e-9)  # the far tail holds


def test_rank_gives_ties_their_mean_rank() -> None:
    assert rank(np.array([3.0, 1.0, 4.0, 1.0, 5.0])).tolist() == [3.0, 1.5, 4.0, 1.5, 5.0]
    assert rank(np.array([2.0, 2.0, 2.0])).tolist() == [2.0, 2.0, 2.0]


def test_mann_whitney_published_example() -> None:
    exact = mann_whitney_u(MALES, FEMALES)
    assert (exact.u, exact.method) == (17.0, "exact")
    assert exact.p_value == pytest.approx(14 / 126, rel=1e-12)
    approx = mann_whitney_u(MALES, FEMALES, method="asymptotic")
    assert approx.p_value == pytest.approx(0.11134688653314041, rel=1e-9)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
@pytest.mark.parametrize(
    ("x", "y"),
    [
        (MALES, FEMALES),
        ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]),
        ([0.3, 2.2, 1.1, 5.0, 0.9, 4.1], [1.7, 0.2, 3.3, 2.8, 6.6, 2.5, 1.4, 7.7]),
        ([10.0], [1.0, 2.0, 3.0, 4.0]),
    ],
)
def test_exact_mann_whitney_matches_enumeration(
    x: list[float], y: list[float], alternative: str
) -> None:
    result = mann_whitney_u(x, y, alternative)  # type: ignore[arg-type]
    assert result.method == "exact"
    assert result.p_value == pytest.approx(permutation_p(x, y, alternative), rel=1e-12)


def test_exact_mann_whitney_smallest_p_is_one_arrangement() -> None:
    # 3 v 3, x all below y: 1 of C(6, 3) = 20 arrangements, so p = 0.05 one-sided.
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], "less").p_value == pytest.approx(0.05)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6], "greater").p_value == pytest.approx(1.0)
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]).p_value == pytest.approx(0.1)


def test_asymptotic_mann_whitney_by_hand() -> None:
    # x = 1..10 below y = 11..20: U1 = 0, U2 = 100, mean 50, sd = sqrt(10 * 10 * 21 / 12) =
    # sqrt(175); z = (100 - 50 - 0.5) / sqrt(175) = 3.7418; two-sided p = 2 sf(z) = 1.8267e-4.
    result = mann_whitney_u(range(1, 11), range(11, 21))
    assert (result.u, result.method) == (0.0, "asymptotic")
    assert result.p_value == pytest.approx(1.8267e-4, rel=1e-3)
    assert mann_whitney_u(range(1, 11), range(11, 21), "less").p_value == pytest.approx(
        0.5 * 1.8267e-4, rel=1e-3
    )


def test_tie_correction_by_hand() -> None:
    # x = 1 2 2 3, y = 2 3 3 4 4 5; pooled 1 2 2 2 3 3 3 4 4 5 (N = 10). Mean ranks: 1 -> 1,
    # 2 -> 3 (ranks 2-4), 3 -> 6 (5-7), 4 -> 8.5, 5 -> 10. R1 = 1 + 3 + 3 + 6 = 13,
    # U1 = 13 - 4 * 5 / 2 = 3.
    # Ties: t = 3 (2s), 3 (3s), 2 (4s): sum(t^3 - t) = 24 + 24 + 6 = 54.
    # var = 4 * 6 / 12 * ((10 + 1) - 54 / (10 * 9)) = 2 * 10.4 = 20.8, sd = 4.5607.
    # Two-sided: U = max(3, 21) = 21, z = (21 - 12 - 0.5) / 4.5607 = 1.8638, p = 2 sf(z) = 0.06236.
    result = mann_whitney_u([1, 2, 2, 3], [2, 3, 3, 4, 4, 5])
    assert (result.u, result.method) == (3.0, "asymptotic")
    assert result.p_value == pytest.approx(0.06236, rel=1e-3)


def test_tie_corrected_approximation_is_close_to_the_permutation_p() -> None:
    x = [1.0, 2.0, 2.0, 3.0, 3.0, 5.0, 6.0]
    y = [3.0, 4.0, 4.0, 5.0, 6.0, 6.0, 7.0]
    for alternative in ("two-sided", "less"):
        approx = mann_whitney_u(x, y, alternative)  # type: ignore[arg-type]
        assert approx.p_value == pytest.approx(permutation_p(x, y, alternative), abs=0.01)


def test_all_tied_is_no_evidence() -> None:
    assert mann_whitney_u([1.0] * 10, [1.0] * 12, "less").p_value == 1.0


def test_mann_whitney_is_calibrated_under_the_null() -> None:
    rng = np.random.default_rng(11)
    p = [mann_whitney_u(rng.normal(size=30), rng.normal(size=15)).p_value for _ in range(4000)]
    assert np.mean(np.array(p) < 0.05) == pytest.approx(0.05, abs=0.012)
    assert np.mean(np.array(p) < 0.01) <= 0.015


def test_mann_whitney_needs_values() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])


def hypergeometric_lower_tail(pass_a: int, n_a: int, pass_b: int, n_b: int) -> Fraction:
    """P(X <= pass_b) in exact rational arithmetic."""
    total, passes = n_a + n_b, pass_a + pass_b
    return Fraction(
        sum(math.comb(passes, k) * math.comb(total - passes, n_b - k) for k in range(pass_b + 1)),
        math.comb(total, n_b),
    )


def test_fisher_lady_tasting_tea() -> None:
    # Fisher (1935): 3 of 4 cups right against 1 of 4: one-sided p = 17/70.
    assert fisher_less(3, 4, 1, 4) == pytest.approx(17 / 70, rel=1e-12)


@pytest.mark.parametrize(
    "table",
    [(9, 10, 5, 10), (36, 40, 10, 20), (144, 160, 60, 80), (900, 1000, 850, 1000), (5, 9, 0, 3)],
)
def test_fisher_matches_exact_arithmetic(table: tuple[int, int, int, int]) -> None:
    assert fisher_less(*table) == pytest.approx(float(hypergeometric_lower_tail(*table)), rel=1e-9)


def test_fisher_edges() -> None:
    assert fisher_less(8, 10, 10, 10) == 1.0  # b passes every time: no evidence of a drop
    assert fisher_less(10, 10, 0, 0) == 1.0  # nothing to compare
    assert fisher_less(0, 10, 0, 10) == 1.0  # nothing passes on either side
    assert fisher_less(10_000, 10_000, 0, 10_000) == 0.0  # below the smallest float: no overflow
    assert 0 <= fisher_less(90_000, 100_000, 89_000, 100_000) < 1e-10
    with pytest.raises(ValueError, match="between 0 and the sample size"):
        fisher_less(11, 10, 0, 10)


def test_benjamini_hochberg_paper_example() -> None:
    # Benjamini and Hochberg (1995), section 4: 15 p-values; at q = 0.05 the first 4 are rejected.
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240]
    p += [0.4262, 0.5719, 0.6528, 0.7590, 1.000]
    adjusted = benjamini_hochberg(p)
    assert [a <= 0.05 for a in adjusted] == [True] * 4 + [False] * 11
    assert adjusted[:4] == pytest.approx([0.0015, 0.003, 0.0095, 0.035625])


def test_benjamini_hochberg_keeps_input_order_and_monotone() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.2), "BH") -> 0.04 0.05333 0.05333 0.2
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.2]) == pytest.approx(
        [0.04, 0.16 / 3, 0.16 / 3, 0.2]
    )
    assert benjamini_hochberg([0.5]) == [0.5]
    assert benjamini_hochberg([0.9, 0.95]) == [0.95, 0.95]
    assert benjamini_hochberg([]) == []


def test_mann_kendall_matches_the_textbook_and_corrects_for_ties() -> None:
    """S, the variance with ties and the one-sided p, as pymannkendall's original_test gives
    them (two-sided p halved): a strict rise of 10 and a step of 4 then 6 equal values."""
    rise = mann_kendall(list(range(1, 11)))
    assert (rise.s, round(rise.z, 4)) == (45, 3.9355)  # var 125: (45 - 1) / sqrt(125)
    assert rise.p_increasing == pytest.approx(4.1515e-05, rel=1e-3)
    step = mann_kendall([5, 5, 5, 5, 9, 9, 9, 9, 9, 9])
    assert (step.s, round(step.z, 4)) == (24, 2.4518)  # var (2250 - 666) / 18 = 88
    assert step.p_increasing < 0.01  # a step is "significant" too: hence the spread rule
    assert mann_kendall([3, 2, 1]).p_increasing > 0.5
    assert mann_kendall([1, 1]).p_increasing == 1.0

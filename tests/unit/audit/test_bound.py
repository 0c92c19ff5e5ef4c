"""The one-run bound: the paper's p-value exactly, its inversion, the abstention search."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from audit.bound import (
    audit_scores,
    default_pairs,
    epsilon_lower_bound,
    max_reachable_bound,
    p_value,
)
from audit.errors import AuditInputError


def _paper_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """The paper's appendix code, loop for loop (reference for the vectorised version)."""
    q = 1 / (1 + math.exp(-eps))
    beta = stats.binom.sf(v - 1, r, q)
    alpha = 0.0
    total = 0.0
    for i in range(1, v + 1):
        total = total + stats.binom.pmf(v - i, r, q)
        if total > i * alpha:
            alpha = total / i
    return float(min(beta + alpha * delta * 2 * m, 1))


@pytest.mark.parametrize(("m", "r", "v", "eps", "delta"), [
    (100, 40, 30, 1.0, 1e-5), (1000, 200, 180, 2.5, 1e-5), (50, 50, 50, 3.0, 0.0),
    (256, 100, 55, 0.1, 1e-3), (10, 4, 0, 0.5, 1e-5),
])
def test_p_value_is_the_papers(m: int, r: int, v: int, eps: float, delta: float) -> None:
    assert p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) == pytest.approx(
        _paper_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-15)


def test_pure_dp_all_correct_has_a_closed_form() -> None:
    # delta = 0, v = r: p = q^r, so the bound is logit(0.05 ** (1/r))
    r = 100
    q = 0.05 ** (1 / r)
    assert epsilon_lower_bound(m=r, r=r, v=r, delta=0.0) == pytest.approx(
        math.log(q / (1 - q)), abs=1e-6)


def test_bound_grows_with_correct_guesses_and_with_m() -> None:
    bounds = [epsilon_lower_bound(m=500, r=100, v=v, delta=1e-5) for v in (50, 60, 75, 90, 100)]
    assert bounds[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(bounds))
    strengths = [max_reachable_bound(m=m, delta=1e-5) for m in (10, 100, 1000)]
    assert strengths[0] < strengths[1] < strengths[2]


def test_bound_is_the_largest_rejected_epsilon() -> None:
    lb = epsilon_lower_bound(m=1000, r=200, v=170, delta=1e-5)
    assert p_value(m=1000, r=200, v=170, epsilon=lb, delta=1e-5) < 0.05
    assert p_value(m=1000, r=200, v=170, epsilon=lb + 1e-3, delta=1e-5) >= 0.05


def test_perfect_scores_reach_the_corrected_strength_and_random_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    inc = rng.random(400) < 0.5
    perfect = audit_scores(inc.astype(float), inc, delta=1e-5)
    conf = 1 - 0.05 / len(default_pairs(400))
    assert perfect.correct == perfect.guesses
    assert perfect.epsilon_lower_bound > 2.0
    assert perfect.epsilon_lower_bound <= max_reachable_bound(m=400, delta=1e-5,
                                                              confidence=conf) + 1e-9
    chance = audit_scores(rng.normal(size=400), inc, delta=1e-5)
    assert chance.epsilon_lower_bound < 0.5


@pytest.mark.parametrize(("scores", "inc"), [
    ([1.0, float("nan")], [True, False]), ([1.0, 2.0], [True]), ([], []),
])
def test_bad_scores_are_refused(scores: list[float], inc: list[bool]) -> None:
    with pytest.raises(AuditInputError):
        audit_scores(scores, inc, delta=1e-5)


def test_bad_counts_are_refused() -> None:
    with pytest.raises(AuditInputError):
        p_value(m=10, r=11, v=1, epsilon=1.0, delta=0.0)
    with pytest.raises(AuditInputError):
        audit_scores([1.0, 2.0], [True, False], delta=1e-5, pairs=[(3, 0)])

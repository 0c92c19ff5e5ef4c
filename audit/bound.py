"""Empirical lower bound on epsilon from ONE training run (pure, no I/O).

Theory of operation
-------------------
Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run",
NeurIPS 2023 (arXiv:2305.08846). The auditor plans ``m`` canaries and
includes each one *independently* with probability 1/2 (a secret fair coin
``S_i``; a fixed-size "random half" would break the theorem's hypothesis);
an excluded canary's slot holds a decoy record, so each coin changes one
record's value, the device's own adjacency (:mod:`audit.canaries`).
After the run it scores every canary, guesses "in" for the ``k_plus``
highest scores, "out" for the ``k_minus`` lowest and abstains on the rest,
so ``r = k_plus + k_minus`` guesses of which ``v`` are correct.

Their main theorem (Section 3; its (epsilon, delta) form with the delta
term exactly as in the paper's appendix code): if the training run is
(epsilon, delta)-DP with respect to each canary, then for every ``v``

    P[W >= v] <= P[Binomial(r, q) >= v] + 2 m delta * alpha,
    q = e^eps / (1 + e^eps),
    alpha = max_{1<=i<=v} (1/i) * P[v > Binomial(r, q) >= v - i],

where ``W`` is the number of correct guesses. :func:`p_value` is the right
side; :func:`epsilon_lower_bound` is the largest epsilon whose p-value is
still below ``1 - confidence`` (bisection, 30 halvings as in the paper), i.e.
the hypothesis "the run is (epsilon, delta)-DP" is rejected at that
confidence for every epsilon below the bound.

Choosing ``k_plus``/``k_minus`` after seeing the scores is a multiple test.
:func:`audit_scores` tries a fixed grid of ``(k_plus, k_minus)`` pairs and
divides ``1 - confidence`` by the number of pairs tried (Bonferroni), so the
reported bound holds at the stated confidence for the whole search; the
paper reports the best ``k`` without this correction.

What the bound is: evidence. A bound above the device's claimed epsilon
means the claim is false (at 95%, up to the coin flips); a bound below it
proves nothing about the claim, because the attack may be weak. The largest
bound ``m`` canaries can ever show (all guesses right) is
:func:`max_reachable_bound`; a claim above it cannot be refuted by this audit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from audit.errors import AuditInputError

__all__ = ["OneRunResult", "audit_scores", "epsilon_lower_bound", "max_reachable_bound",
           "p_value"]

_HALVINGS = 30


def _check_counts(m: int, r: int, v: int) -> None:
    if not (0 <= v <= r <= m):
        raise AuditInputError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P-value of ``>= v`` correct out of ``r`` guesses if the run were (epsilon, delta)-DP."""
    _check_counts(m, r, v)
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise AuditInputError(f"epsilon must be finite and >= 0, got {epsilon!r}")
    if not 0 <= delta <= 1:
        raise AuditInputError(f"delta must be in [0, 1], got {delta!r}")
    q = 1.0 / (1.0 + math.exp(-epsilon))   # accuracy of epsilon-DP randomized response
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if v == 0:
        return min(beta, 1.0)
    # alpha = max over i of (1/i) P[v > Binomial(r, q) >= v - i] (the paper's loop, vectorised)
    i = np.arange(1, v + 1)
    totals = np.cumsum(stats.binom.pmf(v - i, r, q))
    alpha = max(0.0, float(np.max(totals / i)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float,
                        confidence: float = 0.95) -> float:
    """Largest epsilon rejected at ``confidence`` given ``v`` of ``r`` guesses right (>= 0)."""
    _check_counts(m, r, v)
    if not 0 < confidence < 1:
        raise AuditInputError(f"confidence must be in (0, 1), got {confidence!r}")
    p = 1.0 - confidence
    lo, hi = 0.0, 1.0
    while p_value(m=m, r=r, v=v, epsilon=hi, delta=delta) < p:
        hi += 1.0
        if hi > 200:  # p-value of v=r correct at eps=200 is 0 only with delta=0 and huge r
            break
    for _ in range(_HALVINGS):
        mid = (lo + hi) / 2
        if p_value(m=m, r=r, v=v, epsilon=mid, delta=delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def max_reachable_bound(*, m: int, delta: float, confidence: float = 0.95) -> float:
    """The bound a perfect attack (all ``m`` guesses right) would show: the audit's strength."""
    return epsilon_lower_bound(m=m, r=m, v=m, delta=delta, confidence=confidence)


@dataclass(frozen=True, slots=True, kw_only=True)
class OneRunResult:
    """The best abstention pair and its bound (already corrected for the search)."""

    m: int
    k_plus: int
    k_minus: int
    guesses: int
    correct: int
    epsilon_lower_bound: float
    confidence: float
    pairs_tried: int
    max_reachable: float

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def default_pairs(m: int) -> tuple[tuple[int, int], ...]:
    """The (k_plus, k_minus) grid: symmetric and one-sided guesses at 5%..100% of m."""
    fracs = (0.05, 0.1, 0.2, 0.3, 0.5)
    out: set[tuple[int, int]] = {(m // 2, m - m // 2)}
    for f in fracs:
        k = max(1, round(f * m))
        out.add((k, 0))
        out.add((min(k, m // 2), min(k, m - m // 2)))
    return tuple(sorted(out))


def audit_scores(scores: npt.ArrayLike, included: npt.ArrayLike, *, delta: float,
                 confidence: float = 0.95,
                 pairs: Sequence[tuple[int, int]] | None = None) -> OneRunResult:
    """One-run audit of canary ``scores`` (higher = "more likely included").

    ``included`` are the secret coins. Ties are broken by canary index, so the
    guesses are a deterministic function of the scores. Non-finite scores are
    refused (a NaN would make the ranking arbitrary).
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.ndim != 1 or s.shape != inc.shape or s.size == 0:
        raise AuditInputError("scores and inclusion bits must be equal-length non-empty vectors")
    if not np.all(np.isfinite(s)):
        raise AuditInputError("canary scores contain NaN or Inf")
    m = int(s.size)
    grid = tuple(pairs) if pairs is not None else default_pairs(m)
    if not grid or any(kp < 0 or km < 0 or kp + km == 0 or kp + km > m for kp, km in grid):
        raise AuditInputError(f"each (k_plus, k_minus) needs 0 < k_plus + k_minus <= {m}")
    order = np.lexsort((np.arange(m), -s))  # descending score, then index
    conf = 1.0 - (1.0 - confidence) / len(grid)
    best: OneRunResult | None = None
    for kp, km in grid:
        top, bottom = order[:kp], order[m - km:] if km else order[:0]
        correct = int(inc[top].sum() + (~inc[bottom]).sum())
        eps = epsilon_lower_bound(m=m, r=kp + km, v=correct, delta=delta, confidence=conf)
        res = OneRunResult(m=m, k_plus=kp, k_minus=km, guesses=kp + km, correct=correct,
                           epsilon_lower_bound=eps, confidence=confidence,
                           pairs_tried=len(grid),
                           max_reachable=max_reachable_bound(m=m, delta=delta, confidence=conf))
        if best is None or res.epsilon_lower_bound > best.epsilon_lower_bound:
            best = res
    assert best is not None
    return best

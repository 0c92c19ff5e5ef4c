"""Composition of privacy events into (epsilon, delta) (pure, no I/O).

Two exact tools, chosen per case:

1. No subsampling claimed.  k adaptive Gaussian releases with Gaussian-DP
   parameters mu_1..mu_k compose EXACTLY into one Gaussian mechanism with
   mu = sqrt(sum mu_i^2) (Dong, Roth & Su 2022, "Gaussian differential
   privacy", Cor. 3.3; equivalently Mironov 2017 RDP of the Gaussian is
   additive and tight).  Its privacy profile is the analytic Gaussian of
   Balle & Wang 2018, Theorem 8:

       delta(eps) = Phi(mu/2 - eps/mu) - e^eps * Phi(-mu/2 - eps/mu)

   which we invert for eps by bisection (delta(eps) is decreasing).
2. Poisson-subsampled Gaussian steps present (record-level DP-FedAvg only,
   where batch membership never leaves the device).  The whole Gaussian part
   is handed to Google's ``dp_accounting`` PLD accountant under the declared
   adjacency (``REPLACE_ONE`` for "replace", ``ADD_OR_REMOVE_ONE`` for
   "zero_out"), a numerically tight upper bound (pessimistic discretisation)
   for the composition.  The non-subsampled part, already expressed as
   rho = sum mu_i^2 with the adjacency's sensitivity folded in, enters as one
   Gaussian event whose noise multiplier gives back that mu under the same
   relation (s / sqrt(rho), s = 2 for REPLACE_ONE, 1 for ADD_OR_REMOVE_ONE).

Pure epsilon-DP events (k-RR labels) are added to the Gaussian epsilon by
basic composition: (eps_g, delta) + (eps_l, 0) => (eps_g + eps_l, delta).
This is valid but not tight.

Results are cached: the epsilon depends only on (sum mu^2, the multiset of
subsampled steps, pure epsilon, delta), so a spend per release costs a dict
lookup or one bisection.
"""

from __future__ import annotations

import functools
import math

from protocol.errors import PrivacyError

_BISECT_STEPS = 200


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def gaussian_delta(*, mu: float, epsilon: float) -> float:
    """delta(epsilon) of a mu-GDP Gaussian mechanism (Balle & Wang 2018, Thm. 8)."""
    if mu <= 0:
        return 0.0
    a = mu / 2.0 - epsilon / mu
    b = -mu / 2.0 - epsilon / mu
    tail = _phi(b)
    second = 0.0 if tail == 0.0 else math.exp(epsilon + math.log(tail))
    return max(0.0, _phi(a) - second)


@functools.lru_cache(maxsize=4096)
def analytic_gaussian_epsilon(*, mu: float, delta: float) -> float:
    """Smallest epsilon with delta(epsilon) <= ``delta`` for a mu-GDP Gaussian (exact).

    Bisection to relative precision ~1e-12; the returned value is the upper
    end of the final bracket, so it never under-states epsilon.
    """
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    if mu < 0 or not math.isfinite(mu):
        raise PrivacyError(f"mu must be finite and >= 0, got {mu!r}")
    if mu == 0 or gaussian_delta(mu=mu, epsilon=0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_delta(mu=mu, epsilon=hi) > delta:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:
            return math.inf
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if gaussian_delta(mu=mu, epsilon=mid) > delta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return hi


ADJACENCIES = ("replace", "zero_out")


def sensitivity_factor(adjacency: str) -> float:
    """L2 sensitivity of a sum of contributions clipped to C, in units of C.

    "replace": one record takes any other value (2C); "zero_out": one record
    against a null record / absent (C). Any other name is an error, never a
    silent default.
    """
    if adjacency == "replace":
        return 2.0
    if adjacency == "zero_out":
        return 1.0
    raise PrivacyError(f"adjacency must be one of {ADJACENCIES}, got {adjacency!r}")


@functools.lru_cache(maxsize=1024)
def _pld_epsilon(rho: float, sampled: tuple[tuple[float, float, int], ...], delta: float,
                 adjacency: str) -> float:
    # imported lazily: dp_accounting pulls in scipy and takes ~1 s to import
    from dp_accounting import dp_event
    from dp_accounting.pld import pld_privacy_accountant
    from dp_accounting.privacy_accountant import NeighboringRelation

    s = sensitivity_factor(adjacency)
    relation = (NeighboringRelation.REPLACE_ONE if adjacency == "replace"
                else NeighboringRelation.ADD_OR_REMOVE_ONE)
    events: list[dp_event.DpEvent] = []
    if rho > 0:
        events.append(dp_event.GaussianDpEvent(noise_multiplier=s / math.sqrt(rho)))
    for z, q, count in sampled:
        sub = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))
        events.append(dp_event.SelfComposedDpEvent(sub, count))
    accountant = pld_privacy_accountant.PLDAccountant(neighboring_relation=relation)
    accountant.compose(dp_event.ComposedDpEvent(events))
    return float(accountant.get_epsilon(delta))


def composed_epsilon(
    *,
    rho: float,
    sampled: tuple[tuple[float, float, int], ...],
    pure_epsilon: float,
    delta: float,
    adjacency: str = "replace",
) -> float:
    """Epsilon at ``delta`` of: a Gaussian part with sum mu^2 = ``rho`` (sensitivity
    already folded in), Poisson-subsampled Gaussian steps ``sampled`` =
    ((noise_multiplier, q, count), ...) under ``adjacency``, and pure-epsilon
    events summing to ``pure_epsilon``.
    """
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"delta must be in (0, 1), got {delta!r}")
    sensitivity_factor(adjacency)  # validates the name
    if sampled:
        gauss = _pld_epsilon(rho, tuple(sorted(sampled)), delta, adjacency)
    else:
        gauss = analytic_gaussian_epsilon(mu=math.sqrt(rho), delta=delta)
    return gauss + pure_epsilon

"""Choose the noise multiplier that makes a planned training run fit a budget (pure).

Given how many times each record will be released (``releases_per_record``:
the number of epochs over the device's local records) and, optionally, an
epsilon-DP label release each time, :func:`noise_multiplier_for_budget`
returns the smallest Gaussian noise multiplier z (to 1e-6 relative) such that
the accountant's own composition (:func:`composed_epsilon` with
rho = releases * (s/z)^2, s = 2 for replace-one and 1 for zero-out
adjacency) stays within ``epsilon``. It inverts the same formula the device
enforces, so a plan made with it does not trip the budget early; the device
still enforces the budget at run time whatever the plan said.
"""

from __future__ import annotations

import math

from agent.privacy.composition import composed_epsilon, sensitivity_factor
from protocol.errors import PrivacyError

__all__ = ["epsilon_for", "noise_multiplier_for_budget"]


def epsilon_for(*, noise_multiplier: float, releases_per_record: int, delta: float,
                adjacency: str = "replace", label_epsilon: float | None = None) -> float:
    """The per-record epsilon after ``releases_per_record`` releases at ``noise_multiplier``."""
    s = sensitivity_factor(adjacency)  # an unknown adjacency raises, never maps to 1
    rho = releases_per_record * (s / noise_multiplier) ** 2
    pure = releases_per_record * (label_epsilon or 0.0)
    return composed_epsilon(rho=rho, sampled=(), pure_epsilon=pure, delta=delta)


def noise_multiplier_for_budget(*, epsilon: float, delta: float, releases_per_record: int,
                                adjacency: str = "replace",
                                label_epsilon: float | None = None) -> float:
    """Smallest noise multiplier whose planned spend is <= ``epsilon``."""
    if not (math.isfinite(epsilon) and epsilon > 0) or not 0 < delta < 1:
        raise PrivacyError("need epsilon > 0 and 0 < delta < 1")
    if releases_per_record < 1:
        raise PrivacyError("releases_per_record must be >= 1")
    sensitivity_factor(adjacency)
    if label_epsilon is not None and releases_per_record * label_epsilon >= epsilon:
        raise PrivacyError(f"label releases alone spend {releases_per_record * label_epsilon:g} "
                           f">= epsilon {epsilon:g}")

    def eps(z: float) -> float:
        return epsilon_for(noise_multiplier=z, releases_per_record=releases_per_record,
                           delta=delta, adjacency=adjacency, label_epsilon=label_epsilon)

    lo, hi = 1e-3, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise PrivacyError("no noise multiplier below 1e6 fits this budget")
    while (hi - lo) / hi > 1e-6:
        mid = (lo + hi) / 2
        if eps(mid) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi

"""The validator vote rule on a proposed model version (pure).

A validator (run by each organisation's gateway) evaluates a proposed
aggregate on its own held-out data and votes on the ledger; the server only
proposes. One rule, so every validator and every test applies the same one.
"""

from __future__ import annotations

import math

__all__ = ["vote_decision"]


def vote_decision(
    *,
    candidate_accuracy: float,
    baseline_accuracy: float | None,
    max_drop: float = 0.05,
    min_accuracy: float = 0.0,
) -> bool:
    """A validator's vote: accept unless the candidate is worse than allowed.

    Accept when accuracy on the validator's own held-out data is finite, at
    least ``min_accuracy``, and at most ``max_drop`` below the currently
    finalised version (``baseline_accuracy``; ``None`` for the first version).
    A corrupted aggregate (NaN weights, garbage) fails these checks.
    """
    if not math.isfinite(candidate_accuracy) or candidate_accuracy < min_accuracy:
        return False
    return baseline_accuracy is None or candidate_accuracy >= baseline_accuracy - max_drop

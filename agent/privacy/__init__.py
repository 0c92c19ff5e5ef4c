"""Local differential privacy for the edge agent: mechanisms, events, accountant.

See ``docs/privacy.md`` for the exact guarantee and threat model.
"""

from __future__ import annotations

from agent.privacy.accountant import Accountant, Adjacency
from agent.privacy.composition import analytic_gaussian_epsilon, composed_epsilon
from agent.privacy.errors import AccountantStateError
from agent.privacy.events import (
    DpSgdStep,
    GaussianRelease,
    LabelRelease,
    PoissonSampledGaussian,
    PrivacyEvent,
)
from agent.privacy.mechanisms import (
    dp_sgd_aggregate,
    gaussian_noise,
    privatize_activations,
    randomized_response,
    rr_keep_probability,
    secure_rng,
)
from models.clip import clip_rows

__all__ = [
    "Accountant", "AccountantStateError", "Adjacency", "DpSgdStep", "GaussianRelease",
    "LabelRelease", "PoissonSampledGaussian", "PrivacyEvent", "analytic_gaussian_epsilon",
    "clip_rows", "composed_epsilon",
    "dp_sgd_aggregate", "gaussian_noise", "privatize_activations", "randomized_response",
    "rr_keep_probability", "secure_rng",
]

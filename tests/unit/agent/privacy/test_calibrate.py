"""Noise calibration inverts the accountant: a planned run ends within budget, not far below."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.privacy.accountant import Accountant
from agent.privacy.calibrate import epsilon_for, noise_multiplier_for_budget
from agent.privacy.events import GaussianRelease
from protocol.errors import BudgetExceeded, PrivacyError


@given(eps=st.floats(0.2, 50), epochs=st.integers(1, 50),
       adjacency=st.sampled_from(["replace", "zero_out"]))
@settings(max_examples=40, deadline=None)
def test_calibrated_noise_spends_just_the_budget(eps: float, epochs: int, adjacency: str) -> None:
    z = noise_multiplier_for_budget(epsilon=eps, delta=1e-5, releases_per_record=epochs,
                                    adjacency=adjacency)
    spent = epsilon_for(noise_multiplier=z, releases_per_record=epochs, delta=1e-5,
                        adjacency=adjacency)
    assert spent <= eps
    assert spent > eps * 0.999  # not wastefully noisy


def test_plan_runs_to_completion_on_a_real_accountant(tmp_path: Path) -> None:
    epochs = 5
    z = noise_multiplier_for_budget(epsilon=4.0, delta=1e-5, releases_per_record=epochs)
    acc = Accountant(epsilon_budget=4.0, delta=1e-5, state_path=tmp_path / "p.json")
    for _ in range(epochs):
        acc.spend([GaussianRelease(noise_multiplier=z, records=(1, 2, 3))])
    assert acc.epsilon <= 4.0
    with pytest.raises(BudgetExceeded):  # one epoch more than planned does not fit
        acc.spend([GaussianRelease(noise_multiplier=z, records=(1, 2, 3))])


def test_label_budget_is_taken_into_account_and_checked() -> None:
    z_plain = noise_multiplier_for_budget(epsilon=8.0, delta=1e-5, releases_per_record=4)
    z_rr = noise_multiplier_for_budget(epsilon=8.0, delta=1e-5, releases_per_record=4,
                                       label_epsilon=1.0)
    assert z_rr > z_plain
    with pytest.raises(PrivacyError):
        noise_multiplier_for_budget(epsilon=2.0, delta=1e-5, releases_per_record=4,
                                    label_epsilon=1.0)

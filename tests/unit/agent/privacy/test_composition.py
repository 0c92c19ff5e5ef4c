from __future__ import annotations

import math

import pytest
from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.privacy import analytic_gaussian_epsilon, composed_epsilon
from agent.privacy.composition import gaussian_delta
from protocol.errors import PrivacyError


@settings(max_examples=40, deadline=None)
@given(mu=st.floats(0.05, 20.0), log_delta=st.floats(-12, -2))
def test_analytic_epsilon_meets_delta_and_is_tight(mu: float, log_delta: float) -> None:
    delta = 10.0**log_delta
    eps = analytic_gaussian_epsilon(mu=mu, delta=delta)
    assert gaussian_delta(mu=mu, epsilon=eps) <= delta * (1 + 1e-9)
    if eps > 1e-6:
        assert gaussian_delta(mu=mu, epsilon=eps * (1 - 1e-6)) > delta


@pytest.mark.parametrize(("z", "k"), [(1.0, 1), (2.0, 10), (5.0, 100)])
def test_matches_dp_accounting_pld(z: float, k: int) -> None:
    acc = pld_privacy_accountant.PLDAccountant()
    acc.compose(dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(z), k))
    ref = acc.get_epsilon(1e-5)
    ours = composed_epsilon(rho=k / z**2, sampled=(), pure_epsilon=0.0, delta=1e-5)
    # PLD is a pessimistic discretisation: ours is exact, slightly below, within 1 %
    assert ours <= ref * (1 + 1e-6)
    assert ours == pytest.approx(ref, rel=0.01)


def test_k_releases_equal_one_release_with_sigma_over_sqrt_k() -> None:
    one = analytic_gaussian_epsilon(mu=math.sqrt(16) / 4.0, delta=1e-6)
    sixteen = composed_epsilon(rho=16 / 4.0**2, sampled=(), pure_epsilon=0.0, delta=1e-6)
    assert one == pytest.approx(sixteen)


def test_pure_epsilon_adds_and_subsampling_helps() -> None:
    base = composed_epsilon(rho=0.25, sampled=(), pure_epsilon=0.0, delta=1e-5)
    assert composed_epsilon(rho=0.25, sampled=(), pure_epsilon=0.7, delta=1e-5) == pytest.approx(
        base + 0.7
    )
    full = composed_epsilon(rho=100 / 1.1**2, sampled=(), pure_epsilon=0.0, delta=1e-5)
    sub = composed_epsilon(rho=0.0, sampled=((1.1, 0.01, 100),), pure_epsilon=0.0, delta=1e-5)
    assert 0 < sub < full / 5


def test_bad_delta_rejected() -> None:
    for d in (0.0, 1.0, -1e-5):
        with pytest.raises(PrivacyError):
            composed_epsilon(rho=1.0, sampled=(), pure_epsilon=0.0, delta=d)

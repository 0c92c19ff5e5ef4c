from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agent.privacy import (
    clip_rows,
    dp_sgd_aggregate,
    privatize_activations,
    randomized_response,
    rr_keep_probability,
    secure_rng,
)
from protocol.errors import PrivacyError

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(
    a=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=3, max_side=6), elements=finite),
    c=st.floats(0.01, 100.0),
)
def test_clip_rows_bounds_every_row_and_keeps_small_rows(a: np.ndarray, c: float) -> None:
    out = clip_rows(a, clip_norm=c)
    assert out.shape == a.shape
    norms_in = np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)
    norms_out = np.linalg.norm(out.reshape(a.shape[0], -1), axis=1)
    assert np.all(norms_out <= c * (1 + 1e-9))
    small = norms_in <= c
    np.testing.assert_array_equal(out[small], a[small])
    # direction preserved: clipped rows are positive multiples of the input rows
    big = ~small
    if big.any():
        ratio = norms_out[big] / norms_in[big]
        np.testing.assert_allclose(
            out[big].reshape(big.sum(), -1),
            a[big].reshape(big.sum(), -1) * ratio[:, None],
            rtol=1e-9,
            atol=1e-12,
        )


def test_clip_rows_zero_rows_untouched_and_nan_rejected() -> None:
    a = np.zeros((3, 4))
    a[1] = 10.0
    out = clip_rows(a, clip_norm=1.0)
    assert np.all(out[0] == 0) and np.all(out[2] == 0)
    assert math.isclose(float(np.linalg.norm(out[1])), 1.0)
    with pytest.raises(PrivacyError):
        clip_rows(np.array([[np.nan, 1.0]]), clip_norm=1.0)
    with pytest.raises(PrivacyError):
        clip_rows(a, clip_norm=0.0)


def test_privatize_noise_has_sigma_times_c() -> None:
    rng = np.random.default_rng(1)
    a = np.zeros((2000, 50))
    out = privatize_activations(a, clip_norm=2.0, noise_multiplier=1.5, rng=rng)
    assert abs(out.std() - 3.0) < 0.03
    assert abs(out.mean()) < 0.04  # 4 standard errors
    with pytest.raises(PrivacyError):
        privatize_activations(a, clip_norm=2.0, noise_multiplier=-1.0, rng=rng)


def test_secure_rng_is_not_repeatable() -> None:
    x = secure_rng().normal(size=8)
    y = secure_rng().normal(size=8)
    assert not np.array_equal(x, y)


@pytest.mark.parametrize(("k", "eps"), [(2, 1.0), (5, 0.5), (10, 3.0)])
def test_randomized_response_keep_rate_and_uniform_others(k: int, eps: float) -> None:
    rng = np.random.default_rng(7)
    y = np.full(60_000, 1, dtype=np.int64)
    out = randomized_response(y, k=k, epsilon=eps, rng=rng)
    p = math.exp(eps) / (math.exp(eps) + k - 1)
    assert rr_keep_probability(k=k, epsilon=eps) == pytest.approx(p)
    assert abs((out == 1).mean() - p) < 0.01
    assert out.min() >= 0 and out.max() < k
    if k > 2:
        counts = np.bincount(out[out != 1], minlength=k)
        others = np.delete(counts, 1)
        assert others.min() > 0.8 * others.mean()
    with pytest.raises(PrivacyError):
        randomized_response(np.array([k]), k=k, epsilon=eps, rng=rng)


def test_dp_sgd_aggregate_clips_over_concatenation_then_averages() -> None:
    g1 = np.array([[3.0, 0.0], [0.0, 0.0]])  # sample 0: part 1
    g2 = np.array([[[4.0]], [[0.5]]])  # sample 0 norm = 5, sample 1 norm = 0.5
    # tiny noise: check the deterministic part exactly up to the noise scale
    a, b = dp_sgd_aggregate(
        [g1, g2], clip_norm=1.0, noise_multiplier=1e-9, rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(a, np.array([0.6, 0.0]) / 2, atol=1e-6)
    np.testing.assert_allclose(b, np.array([[0.8 + 0.5]]) / 2, atol=1e-6)
    # the noise std on the average is sigma*C/batch
    rng = np.random.default_rng(3)
    zeros = [np.zeros((4, 5000))]
    (noisy,) = dp_sgd_aggregate(zeros, clip_norm=2.0, noise_multiplier=1.0, rng=rng)
    assert abs(noisy.std() - 0.5) < 0.02
    with pytest.raises(PrivacyError):
        dp_sgd_aggregate(
            [np.zeros((2, 3)), np.zeros((3, 3))], clip_norm=1.0, noise_multiplier=1.0, rng=rng
        )

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.fedavg import AggregationError, WeightedUpdate, fedavg


def _u(vals: list[float], n: int) -> WeightedUpdate:
    return WeightedUpdate(
        weights=(np.array(vals, dtype=np.float32), np.full((2, 2), vals[0], np.float32)),
        num_samples=n,
    )


def test_weighted_by_sample_count() -> None:
    out = fedavg([_u([0.0, 0.0], 1), _u([4.0, 8.0], 3)])
    np.testing.assert_allclose(out[0], [3.0, 6.0])
    np.testing.assert_allclose(out[1], np.full((2, 2), 3.0))
    assert out[0].dtype == np.float32


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.integers(1, 1000)), min_size=1, max_size=8))
def test_mean_lies_within_inputs_and_ignores_order(items: list[tuple[float, int]]) -> None:
    ups = [_u([v, -v], n) for v, n in items]
    a = fedavg(ups)[0]
    b = fedavg(list(reversed(ups)))[0]
    vals = [np.float32(v) for v, _ in items]
    assert min(vals) - 1e-2 <= a[0] <= max(vals) + 1e-2
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize(
    "bad",
    [
        WeightedUpdate(
            weights=(np.zeros(3, np.float32), np.zeros((2, 2), np.float32)), num_samples=1
        ),
        WeightedUpdate(
            weights=(np.array([np.nan, 0.0], np.float32), np.zeros((2, 2), np.float32)),
            num_samples=1,
        ),
        WeightedUpdate(weights=(np.zeros(2, np.float32),), num_samples=1),
        WeightedUpdate(
            weights=(np.zeros(2, np.int32), np.zeros((2, 2), np.float32)), num_samples=1
        ),
    ],
)
def test_rejects_wrong_shape_count_dtype_and_nonfinite(bad: WeightedUpdate) -> None:
    with pytest.raises(AggregationError):
        fedavg([_u([1.0, 2.0], 1), bad])


def test_rejects_empty_and_zero_samples() -> None:
    with pytest.raises(AggregationError):
        fedavg([])
    with pytest.raises(AggregationError):
        _u([1.0, 1.0], 0)

"""Window normalisation (pure)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.preprocess import apply_norm, standardise_per_window

_windows = hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 3),
                                            st.integers(2, 32)),
                      elements=st.floats(-1e3, 1e3, width=32))


@given(_windows, st.floats(-100, 100), st.floats(0.01, 100))
def test_per_window_is_invariant_to_offset_and_gain(x: np.ndarray, offset: float,
                                                      gain: float) -> None:
    a = standardise_per_window(x)
    b = standardise_per_window(x * np.float32(gain) + np.float32(offset))
    varied = x.std(axis=-1) > 1e-2
    np.testing.assert_allclose(a[varied], b[varied], atol=2e-2)


@given(_windows)
def test_output_is_finite_and_standardised(x: np.ndarray) -> None:
    out = standardise_per_window(x)
    assert out.dtype == np.float32 and np.all(np.isfinite(out))
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-3)


def test_dataset_constants_applied_per_channel() -> None:
    x = np.array([[[1.0, 3.0], [10.0, 30.0]]], np.float32)
    out = apply_norm(x, mean=(1.0, 10.0), std=(2.0, 10.0), per_window=False)
    np.testing.assert_allclose(out, [[[0.0, 1.0], [0.0, 2.0]]])
    flat = apply_norm(np.full((1, 4), 5.0, np.float32), mean=(0.0,), std=(1.0,), per_window=True)
    np.testing.assert_array_equal(flat, np.zeros((1, 4)))

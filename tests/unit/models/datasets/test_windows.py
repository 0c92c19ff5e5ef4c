"""Fixed-length windows, sliding windows and NaN filling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from models.datasets.errors import DatasetError
from models.datasets.windows import WindowSpec, fill_missing, sliding_windows, to_fixed_length
from protocol.errors import ConfigError


def row(*v: float) -> np.ndarray:
    return np.array([v], dtype=np.float32)


def test_crop_is_centre_and_edge_pads() -> None:
    out = to_fixed_length([row(*range(10)), row(1, 2)], length=4, mode="crop")
    assert out[0, 0].tolist() == [3, 4, 5, 6]
    assert out[1, 0].tolist() == [1, 2, 2, 2]


def test_pad_zero_pads_and_keeps_head() -> None:
    out = to_fixed_length([row(*range(10)), row(1, 2)], length=4, mode="pad")
    assert out[0, 0].tolist() == [0, 1, 2, 3]
    assert out[1, 0].tolist() == [1, 2, 0, 0]


def test_resample_linear() -> None:
    out = to_fixed_length([row(0, 10), row(5)], length=5, mode="resample")
    assert out[0, 0].tolist() == [0, 2.5, 5, 7.5, 10]
    assert out[1, 0].tolist() == [5] * 5


def test_multichannel_and_errors() -> None:
    two = np.arange(12, dtype=np.float32).reshape(2, 6)
    out = to_fixed_length([two], length=3, mode="resample")
    assert out.shape == (1, 2, 3) and out[0, 1].tolist() == [6, 8.5, 11]
    with pytest.raises(DatasetError, match="channels"):
        to_fixed_length([two, row(1, 2)], length=3, mode="crop")
    with pytest.raises(DatasetError, match="fill_missing"):
        to_fixed_length([row(1, np.nan)], length=3, mode="crop")
    with pytest.raises(DatasetError, match="mode"):
        to_fixed_length([row(1)], length=3, mode="stretch")  # type: ignore[arg-type]


series_st = st.lists(
    hnp.arrays(np.float32, st.tuples(st.just(2), st.integers(1, 40)),
               elements=st.floats(-100, 100, width=32)),
    min_size=1, max_size=5)


@settings(max_examples=50, deadline=None)
@given(series=series_st, length=st.integers(1, 50),
       mode=st.sampled_from(["crop", "pad", "resample"]))
def test_fixed_length_shapes_and_identity(
    series: list[np.ndarray], length: int, mode: str
) -> None:
    out = to_fixed_length(series, length=length, mode=mode)  # type: ignore[arg-type]
    assert out.shape == (len(series), 2, length) and out.dtype == np.float32
    for s, o in zip(series, out, strict=True):
        if s.shape[1] == length:
            np.testing.assert_array_equal(o, s)
        if mode != "pad":  # crop and resample never leave the series' value range
            assert o.min() >= s.min() and o.max() <= s.max()


@settings(max_examples=50, deadline=None)
@given(t=st.integers(0, 60), length=st.integers(1, 20), hop=st.integers(1, 10))
def test_sliding_windows(t: int, length: int, hop: int) -> None:
    stream = np.arange(2 * t, dtype=np.float64).reshape(2, t)
    w = sliding_windows(stream, length=length, hop=hop)
    expected = 0 if t < length else 1 + (t - length) // hop
    assert w.shape == (expected, 2, length) and w.dtype == np.float32
    for i in range(expected):
        np.testing.assert_array_equal(w[i], stream[:, i * hop : i * hop + length])


def test_fill_missing_policy() -> None:
    x = np.array([[np.nan, 1.0, np.nan, np.nan, 4.0, np.nan], [np.nan] * 6])
    out = fill_missing(x, fallback=-1.0)
    assert out[0].tolist() == [1, 1, 2, 3, 4, 4]
    assert out[1].tolist() == [-1] * 6
    assert np.isnan(x).sum() == 10  # the input is not modified


@settings(max_examples=50, deadline=None)
@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 30)),
                    elements=st.one_of(st.just(np.nan), st.floats(-50, 50))))
def test_fill_missing_keeps_known_values(x: np.ndarray) -> None:
    out = fill_missing(x)
    known = ~np.isnan(x)
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out[known], x[known])


def test_window_spec() -> None:
    spec = WindowSpec(length=4, mode="pad")
    out = spec.apply([row(1, np.nan, 3), row(*range(6))])
    assert out[:, 0].tolist() == [[1, 2, 3, 0], [0, 1, 2, 3]]
    with pytest.raises(ConfigError) as info:
        WindowSpec(length=0, mode="zoom")  # type: ignore[arg-type]
    assert len(info.value.problems) == 2
    with pytest.raises(DatasetError, match="fill_missing"):
        WindowSpec(length=4, fill_nan=False).apply([row(1, np.nan)])

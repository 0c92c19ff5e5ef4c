"""Tensor codec: exact round trips, float16 on the wire, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.errors import ConfigError, LimitExceeded, MalformedMessage
from protocol.tensor import TensorLimits, decode_tensor, encode_tensor

WIRE = ["float16", "float32", "int32", "int64"]


@st.composite
def wire_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(st.sampled_from(WIRE)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, max_side=5))
    if dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    else:
        elements = st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@settings(max_examples=150, deadline=None)
@given(wire_arrays())
def test_round_trip_is_exact(arr: np.ndarray) -> None:
    wire = encode_tensor(arr)
    assert wire["dtype"] == arr.dtype.name
    assert wire["shape"] == list(arr.shape)
    assert wire["data"] == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    out = decode_tensor(wire)
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    assert out.tobytes() == arr.tobytes()
    assert out.flags.writeable


def test_little_endian_on_the_wire() -> None:
    wire = encode_tensor(np.array([1, 2], dtype=">i4"))
    assert wire["dtype"] == "int32"
    assert wire["data"] == b"\x01\x00\x00\x00\x02\x00\x00\x00"
    assert decode_tensor(wire).tolist() == [1, 2]


def test_float16_on_the_wire() -> None:
    arr = np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)
    wire = encode_tensor(arr, wire_dtype="float16")
    assert wire["dtype"] == "float16"
    assert len(wire["data"]) == 64 * 2  # type: ignore[arg-type]
    back = decode_tensor(wire)
    assert back.dtype == np.float16
    np.testing.assert_allclose(back.astype(np.float32), arr, atol=2e-3)


def test_float16_overflow_is_refused_by_the_encoder() -> None:
    with pytest.raises(MalformedMessage, match="NaN or infinity"):
        encode_tensor(np.array([70000.0], dtype=np.float32), wire_dtype="float16")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_non_finite_is_refused(bad: float, dtype: str) -> None:
    arr = np.array([1.0, bad], dtype=dtype)
    with pytest.raises(MalformedMessage, match="NaN or infinity"):
        encode_tensor(arr)
    data = arr.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    wire = {"dtype": dtype, "shape": [2], "data": data}
    with pytest.raises(MalformedMessage, match="NaN or infinity"):
        decode_tensor(wire)
    assert np.isnan(decode_tensor(wire, allow_nonfinite=True)[1]) == np.isnan(bad)


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        ({"dtype": "float32", "shape": [2], "data": b"\x00" * 7}, MalformedMessage),
        ({"dtype": "float32", "shape": [2], "data": b"\x00" * 9}, MalformedMessage),
        ({"dtype": "float64", "shape": [1], "data": b"\x00" * 8}, MalformedMessage),
        ({"dtype": "bool", "shape": [1], "data": b"\x00"}, MalformedMessage),
        ({"dtype": "float32", "shape": [0], "data": b""}, MalformedMessage),
        ({"dtype": "float32", "shape": [-1], "data": b""}, MalformedMessage),
        ({"dtype": "float32", "shape": [True], "data": b"\x00" * 4}, MalformedMessage),
        ({"dtype": "float32", "shape": [1.0], "data": b"\x00" * 4}, MalformedMessage),
        ({"dtype": "float32", "shape": 4, "data": b"\x00" * 16}, MalformedMessage),
        ({"dtype": "float32", "shape": [1], "data": "abcd"}, MalformedMessage),
        ({"dtype": "float32", "shape": [1]}, MalformedMessage),
        ({"dtype": "float32", "shape": [1], "data": b"\x00" * 4, "x": 1}, MalformedMessage),
        ([1, 2, 3], MalformedMessage),
        ({"dtype": "float32", "shape": [1, 1, 1, 1, 1], "data": b"\x00" * 4}, LimitExceeded),
        ({"dtype": "float16", "shape": [1 << 21], "data": b""}, LimitExceeded),
        ({"dtype": "float16", "shape": [1 << 12, 1 << 11], "data": b""}, LimitExceeded),
        ({"dtype": "int64", "shape": [1 << 62, 1 << 62], "data": b""}, LimitExceeded),
    ],
)
def test_bad_tensors_are_refused(wire: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_tensor(wire)


def test_configured_limits_apply() -> None:
    arr = np.zeros((32, 64), dtype=np.float16)
    decode_tensor(encode_tensor(arr))
    with pytest.raises(LimitExceeded, match="elements"):
        decode_tensor(encode_tensor(arr), limits=TensorLimits(max_elements=32 * 64 - 1))
    with pytest.raises(LimitExceeded, match="dimension"):
        decode_tensor(encode_tensor(arr), limits=TensorLimits(max_dim=63))
    with pytest.raises(LimitExceeded, match="rank"):
        decode_tensor(encode_tensor(arr), limits=TensorLimits(max_rank=1))
    with pytest.raises(ConfigError):
        TensorLimits(max_rank=0)


def test_encoder_refuses_what_the_decoder_would() -> None:
    with pytest.raises(MalformedMessage):
        encode_tensor(np.zeros(3, dtype=np.float64))
    with pytest.raises(MalformedMessage):
        encode_tensor(np.zeros((2, 0), dtype=np.float32))
    with pytest.raises(MalformedMessage):
        encode_tensor([1.0, 2.0])  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage, match="fit"):
        encode_tensor(np.array([1 << 40]), wire_dtype="int32")
    with pytest.raises(MalformedMessage, match="cannot send"):
        encode_tensor(np.array([1.5]), wire_dtype="int32")
    assert encode_tensor(np.array([3], dtype=np.int64), wire_dtype="int32")["dtype"] == "int32"
    assert decode_tensor(encode_tensor(np.zeros(3), wire_dtype="float32")).dtype == np.float32

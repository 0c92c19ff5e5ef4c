from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sensors.errors import FrameError, RegisterEncodingError
from agent.sensors.registers import (
    ReadBlock,
    RegisterSpec,
    decode,
    decode_all,
    decode_float32_array,
    encode,
    encode_float32_array,
    extract,
    plan_reads,
)

ORDERS = st.sampled_from(["big", "little"])
RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1),
          "int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}


def test_known_float32_layouts() -> None:
    one = 1.0  # 0x3F800000
    assert encode(RegisterSpec(name="a", address=0, type="float32"), one) == [0x3F80, 0x0000]
    assert encode(RegisterSpec(name="a", address=0, type="float32", word_order="little"),
                  one) == [0x0000, 0x3F80]
    assert encode(RegisterSpec(name="a", address=0, type="float32", byte_order="little"),
                  one) == [0x803F, 0x0000]
    assert encode(RegisterSpec(name="a", address=0, type="float32", word_order="little",
                               byte_order="little"), one) == [0x0000, 0x803F]


def test_known_integer_layouts() -> None:
    assert decode(RegisterSpec(name="a", address=0, type="int16"), [0xFFFE]) == -2
    assert decode(RegisterSpec(name="a", address=0, type="uint32"), [0x0001, 0x0002]) == 65538
    assert decode(RegisterSpec(name="a", address=0, type="uint32", word_order="little"),
                  [0x0002, 0x0001]) == 65538
    assert decode(RegisterSpec(name="a", address=0, type="int32"), [0xFFFF, 0xFFFF]) == -1
    s = RegisterSpec(name="t", address=0, type="int16", scale=0.1, offset=-40.0)
    assert decode(s, [250]) == pytest.approx(-15.0)


@settings(deadline=None)  # timing varies on a shared 2-core machine
@given(kind=st.sampled_from(list(RANGES)), wo=ORDERS, bo=ORDERS, data=st.data())
def test_integer_roundtrip(kind: str, wo: str, bo: str, data: st.DataObject) -> None:
    lo, hi = RANGES[kind]
    raw = data.draw(st.integers(lo, hi))
    spec = RegisterSpec(name="x", address=0, type=kind, word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    words = encode(spec, raw)
    assert len(words) == spec.width and all(0 <= w <= 0xFFFF for w in words)
    assert decode(spec, words) == raw


@settings(deadline=None)  # timing varies on a shared 2-core machine
@given(value=st.floats(width=32, allow_nan=False, allow_infinity=False), wo=ORDERS, bo=ORDERS)
def test_float32_roundtrip(value: float, wo: str, bo: str) -> None:
    spec = RegisterSpec(name="x", address=0, type="float32", word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    assert decode(spec, encode(spec, value)) == value


@settings(deadline=None)  # timing varies on a shared 2-core machine
@given(raw=st.integers(-3000, 3000), scale=st.sampled_from([0.01, 0.5, 2.0, -1.0]),
       offset=st.sampled_from([0.0, -40.0, 1000.5]))
def test_scale_offset_roundtrip(raw: int, scale: float, offset: float) -> None:
    spec = RegisterSpec(name="x", address=0, type="int16", scale=scale, offset=offset)
    value = raw * scale + offset
    assert decode(spec, encode(spec, value)) == pytest.approx(value)


def test_encode_out_of_range_raises() -> None:
    with pytest.raises(RegisterEncodingError):
        encode(RegisterSpec(name="x", address=0, type="uint16"), -1)
    with pytest.raises(RegisterEncodingError):
        encode(RegisterSpec(name="x", address=0, type="int16"), math.nan)


def test_decode_wrong_width_raises() -> None:
    with pytest.raises(FrameError):
        decode(RegisterSpec(name="x", address=0, type="int32"), [1])


@settings(deadline=None)  # timing varies on a shared 2-core machine
@given(values=st.lists(st.floats(width=32, allow_nan=False), max_size=50), wo=ORDERS, bo=ORDERS)
def test_float32_array_roundtrip_matches_scalar(values: list[float], wo: str, bo: str) -> None:
    words = encode_float32_array(values, word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    assert np.array_equal(decode_float32_array(words, word_order=wo, byte_order=bo),  # type: ignore[arg-type]
                          np.array(values, dtype=np.float32))
    spec = RegisterSpec(name="x", address=0, type="float32", word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    for i, v in enumerate(values):
        assert [int(w) for w in words[2 * i:2 * i + 2]] == encode(spec, v)


def test_plan_coalesces_adjacent_and_splits_functions() -> None:
    specs = [RegisterSpec(name="a", address=10, type="float32"),
             RegisterSpec(name="b", address=12, type="uint16"),
             RegisterSpec(name="c", address=20, type="uint16"),
             RegisterSpec(name="d", function="input", address=10, type="int32")]
    blocks = plan_reads(specs)
    assert ReadBlock(function="holding", address=10, count=3) in blocks
    assert ReadBlock(function="holding", address=20, count=1) in blocks
    assert ReadBlock(function="input", address=10, count=2) in blocks
    assert len(blocks) == 3
    assert len(plan_reads(specs, max_gap=10)) == 2


@settings(deadline=None)  # timing varies on a shared 2-core machine
@given(st.lists(st.tuples(st.integers(0, 600), st.sampled_from(["uint16", "float32"]),
                          st.sampled_from(["holding", "input"])), min_size=1, max_size=80))
def test_plan_covers_every_spec_once_within_limit(items: list[tuple[int, str, str]]) -> None:
    specs = [RegisterSpec(name=f"s{i}", address=a, type=t, function=f)  # type: ignore[arg-type]
             for i, (a, t, f) in enumerate(items)]
    blocks = plan_reads(specs, max_gap=3)
    assert all(b.count <= 125 for b in blocks)
    for s in specs:
        covering = [b for b in blocks if b.function == s.function and b.address <= s.address
                    and s.end <= b.address + b.count]
        assert len(covering) == 1
    # decoding through the planned blocks gives the same values as direct decoding
    img = np.arange(0x10000, dtype=np.uint32).astype(np.uint16)
    data = {b: [int(v) for v in img[b.address:b.address + b.count]] for b in blocks}
    for s in specs:
        assert extract(s, data) == [int(v) for v in img[s.address:s.end]]
    assert decode_all(specs, data).shape == (len(specs),)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="type"):
        RegisterSpec(name="x", address=0, type="int64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        RegisterSpec(name="x", address=0, scale=0.0)
    with pytest.raises(ValueError, match="address"):
        RegisterSpec(name="x", address=0xFFFF, type="float32")

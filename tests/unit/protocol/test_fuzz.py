"""Hostile input: decoders raise nothing but ProtocolError subclasses, whatever the bytes.

Any other exception escaping (TypeError, cbor2 errors, RecursionError ...) fails
the test, because a receiver catches ProtocolError to count and drop a message
and anything else would take the gateway or server down.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.envelope import CONTENT_TYPES, peek, sig_structure, verify
from protocol.errors import ProtocolError
from protocol.events import Event
from protocol.messages import (
    MESSAGE_TYPES,
    DeviceState,
    Message,
    Prediction,
    decode_any,
    open_sealed,
    seal,
)
from protocol.tensor import decode_tensor
from tests.unit.protocol import strategies as s
from tests.unit.protocol.keys_for_tests import DEVICE_KEY

# SPLITFED_FUZZ_EXAMPLES=5000 for a deeper run than the default suite's.
FUZZ = settings(
    max_examples=int(os.environ.get("SPLITFED_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=16)
    | st.sampled_from(["float16", "float32", "int64", "plain", "none", "dp_sgd", "sync"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-70000, 70000), inner, max_size=4)
    ),
    max_leaves=12,
)


def only_protocol_errors(fn: Callable[[], object]) -> None:
    with contextlib.suppress(ProtocolError):
        fn()


def every_decoder(data: bytes) -> None:
    only_protocol_errors(lambda: peek(data))
    only_protocol_errors(lambda: verify(data, verify_key=DEVICE_KEY.verify_key))
    only_protocol_errors(lambda: open_sealed(data, verify_key=DEVICE_KEY.verify_key))
    for ct in CONTENT_TYPES:
        only_protocol_errors(lambda ct=ct: decode_any(data, ct))  # type: ignore[misc]
    only_protocol_errors(lambda: DeviceState.from_json(data))
    only_protocol_errors(lambda: Prediction.from_json(data))
    only_protocol_errors(lambda: Event.from_json(data))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    every_decoder(data)


@FUZZ
@given(cbor_values)
def test_random_cbor_values(value: object) -> None:
    data = cbor2.dumps(value)
    every_decoder(data)
    every_decoder(cbor2.dumps(cbor2.CBORTag(18, value)))
    only_protocol_errors(lambda: decode_tensor(value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.fixed_dictionaries(
    {k: json_values for k in ("org", "device", "session", "seq", "probabilities", "bd_seq")},
    optional={k: json_values for k in ("online", "model_hash", "detail", "kind", "predicted")},
)


@FUZZ
@given(json_objects | json_values)
def test_random_json(value: object) -> None:
    data = json.dumps(value).encode()  # may contain NaN / Infinity: must be refused
    only_protocol_errors(lambda: DeviceState.from_json(data))
    only_protocol_errors(lambda: Prediction.from_json(data))
    only_protocol_errors(lambda: Event.from_json(data))


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    if not data:
        return draw(st.binary(max_size=8))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
    i = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
    if kind == "truncate":
        return data[:i]
    if kind == "insert":
        return data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i:]
    if kind == "delete":
        return data[:i] + data[i + draw(st.integers(1, 8)) :]
    return data[:i] + draw(st.binary(max_size=8)) + data[i + draw(st.integers(0, 8)) :]


@FUZZ
@given(s.any_message(), st.data())
def test_mutated_envelopes(msg: Message, data: st.DataObject) -> None:
    sealed = seal(msg, signing_key=DEVICE_KEY, kid="dev-01")
    mutated = sealed
    for _ in range(data.draw(st.integers(1, 3))):
        mutated = _mutate(mutated, data.draw)
    every_decoder(mutated)
    if mutated != sealed:
        # a mutated envelope never verifies (the only way to be accepted is to be unchanged)
        try:
            open_sealed(mutated, verify_key=DEVICE_KEY.verify_key)
        except ProtocolError:
            pass
        else:
            env = peek(mutated)
            assert env.payload == peek(sealed).payload
            assert env.protected == peek(sealed).protected


@FUZZ
@given(s.any_message(), st.data())
def test_mutated_payloads(msg: Message, data: st.DataObject) -> None:
    payload = msg.encode()
    mutated = _mutate(payload, data.draw)
    only_protocol_errors(lambda: decode_any(mutated, msg.CONTENT_TYPE))


@FUZZ
@given(s.any_message(), cbor_values, st.data())
def test_one_field_replaced_by_junk(msg: Message, junk: object, data: st.DataObject) -> None:
    wire = cbor2.loads(msg.encode())
    key = data.draw(st.sampled_from(sorted(wire)))
    wire[key] = junk
    payload = cbor2.dumps(wire)
    for ct in MESSAGE_TYPES:
        only_protocol_errors(lambda ct=ct: decode_any(payload, ct))  # type: ignore[misc]


def test_deep_nesting_and_huge_declared_lengths() -> None:
    for data in (
        b"\x81" * 5000 + b"\x00",  # 5000 nested arrays
        b"\xa1\x00" * 5000 + b"\x00",  # 5000 nested maps
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # byte string of 2**64-1 bytes, absent
        b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",  # array of 2**32 items, absent
        b"\x5f\x41\x00\xff",  # indefinite-length byte string
        b"\xd8\x1c\x81\xd8\x1d\x00",  # shared reference (cyclic structures)
        b"\xc2\x49\x01" + b"\x00" * 8,  # bignum
        b"\xd8\x23\x62a+",  # regular expression tag
    ):
        every_decoder(data)


header_labels = st.sampled_from([1, 2, 3, 4, -65537, 5, -1, "x"])
header_maps = st.dictionaries(header_labels, cbor_values, max_size=6)


@FUZZ
@given(header_maps, header_maps, st.booleans())
def test_signed_envelopes_with_junk_headers(
    phdr: dict[object, object], uhdr: dict[object, object], good_base: bool
) -> None:
    """Correctly signed envelopes whose headers hold anything: still only ProtocolError."""
    base: dict[object, object] = (
        {1: -8, 3: "application/vnd.splitfed.command+cbor", 4: b"dev-01", -65537: 1}
        if good_base
        else {}
    )
    protected = cbor2.dumps({**base, **phdr})
    payload = cbor2.dumps({"a": 1})
    signature = DEVICE_KEY.sign(sig_structure(protected, payload)).signature
    every_decoder(cbor2.dumps(cbor2.CBORTag(18, [protected, uhdr, payload, signature])))

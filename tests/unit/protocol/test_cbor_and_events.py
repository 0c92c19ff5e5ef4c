"""Strict CBOR decoding rules, payload size limit, and the events JSON feed."""

from __future__ import annotations

import json

import cbor2
import pytest

from protocol._cbor import dumps_canonical, loads_strict
from protocol.envelope import MAX_ENVELOPE_BYTES
from protocol.errors import LimitExceeded, MalformedMessage
from protocol.events import Event
from protocol.messages import ActivationBatch, DeviceState


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"\x01\x02", "trailing"),
        (b"\x5f\x41\x00\xff", "CBOR"),  # indefinite-length byte string
        (b"\x9f\x01\xff", "CBOR"),  # indefinite-length array
        (b"\xa2\x61a\x01\x61a\x02", "CBOR"),  # duplicate key "a"
        (b"\x81" * 17 + b"\x00", "CBOR"),  # nested deeper than 16
        (b"\xc2\x41\x01", "CBOR"),  # bignum
        (b"\xc1\x1a\x00\x00\x00\x00", "CBOR"),  # epoch date
        (b"\xd8\x23\x61a", "CBOR"),  # regular expression
        (b"\xd9\x01\x02\x81\x01", "CBOR"),  # set
        (b"\xd8\x63\x01", "CBOR"),  # unknown tag 99
    ],
)
def test_loads_strict_refuses(data: bytes, match: str) -> None:
    with pytest.raises(MalformedMessage, match=match):
        loads_strict(data, what="test")


def test_loads_strict_accepts_plain_cbor_and_tags_on_request() -> None:
    assert loads_strict(b"\x81" * 15 + b"\x00", what="t") is not None
    assert loads_strict(cbor2.dumps({"a": [1, 2.5, b"x", None]}), what="t") == {
        "a": [1, 2.5, b"x", None]
    }
    tagged = loads_strict(cbor2.dumps(cbor2.CBORTag(18, [1])), what="t", allow_tags=True)
    assert isinstance(tagged, cbor2.CBORTag)
    assert tagged.tag == 18


def test_canonical_encoding_sorts_keys_and_shortens_numbers() -> None:
    assert dumps_canonical({"bb": 1, "a": 1.5}) == bytes.fromhex("a26161f93e00626262" + "01")


def test_payload_size_limit_before_decoding() -> None:
    with pytest.raises(LimitExceeded):
        ActivationBatch.decode(b"\xa0" * (MAX_ENVELOPE_BYTES + 1))
    with pytest.raises(LimitExceeded):
        DeviceState.from_json(b" " * (2 << 20))


def test_event_json() -> None:
    ev = Event(
        org="acme", session="s1", kind="round_finished", round=4, accuracy=0.91,
        epsilon=2.5, block_height=120, detail={"devices": 7},
    )  # fmt: skip
    obj = json.loads(ev.to_json())
    assert obj == {
        "org": "acme", "session": "s1", "kind": "round_finished", "round": 4,
        "accuracy": 0.91, "epsilon": 2.5, "block_height": 120, "model_version": None,
        "detail": {"devices": 7},
    }  # fmt: skip
    assert Event.from_json(ev.to_json()) == ev
    for bad in ({"accuracy": 1.5}, {"epsilon": -1.0}, {"kind": "party"}, {"round": -1}):
        with pytest.raises(MalformedMessage):
            Event(**{"org": "acme", "session": "s1", "kind": "round_started", **bad})  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage):
        Event.from_json(b'{"org":"acme"}')

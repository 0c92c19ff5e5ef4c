"""protocol.admit: the fixed order size, header, key, signature, decode, policy."""

from __future__ import annotations

import hashlib

import cbor2
import nacl.signing
import numpy as np
import pytest

from protocol import envelope
from protocol.admit import (
    BAD_SIGNATURE,
    LIMIT,
    MALFORMED,
    OVERSIZE,
    UNEXPECTED_TYPE,
    Opened,
    Refused,
    admit,
)
from protocol.errors import BadSignature, MalformedMessage
from protocol.messages import ActivationBatch, ClientWeights, Command, DpParams, seal

KEY = nacl.signing.SigningKey(b"\x01" * 32)
OTHER = nacl.signing.SigningKey(b"\x02" * 32)
TYPES: tuple[type[ActivationBatch | ClientWeights], ...] = (ActivationBatch, ClientWeights)


def _batch(seq: int = 1) -> ActivationBatch:
    return ActivationBatch(
        session="s1", round=0, step=0, device="d1", seq=seq,
        model_hash=hashlib.sha256(b"m").hexdigest(),
        dp=DpParams(clip_norm=1.0, noise_multiplier=1.0, label_mode="plain",
                    label_epsilon=None, mode="sl-frozen"),
        activations=np.ones((2, 4), np.float32), labels=np.array([0, 1]), epsilon_spent=0.1,
    )  # fmt: skip


def _with_nan_payload(key: nacl.signing.SigningKey) -> bytes:
    """A batch whose activations hold a NaN, signed by ``key``."""
    env = envelope.peek(seal(_batch(), signing_key=KEY, kid="d1"))
    m = cbor2.loads(env.payload)
    arr = np.frombuffer(m["activations"]["data"], dtype=np.float32).copy()
    arr[0] = np.nan
    m["activations"]["data"] = arr.tobytes()
    return envelope.sign(cbor2.dumps(m, canonical=True), signing_key=key, kid="d1",
                         content_type=env.content_type)  # fmt: skip


class _Keys:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, env: envelope.Envelope) -> nacl.signing.VerifyKey | Refused:
        self.asked.append(env.kid)
        if env.kid != "d1":
            return Refused("unregistered", env.kid, env.kid)
        return KEY.verify_key


def test_accepts_and_parses_once() -> None:
    data = seal(_batch(), signing_key=KEY, kid="d1")
    seen: list[object] = []
    out = admit(data, types=TYPES, key_for=_Keys(),
                policy=lambda env, msg: seen.append(msg) or None)  # type: ignore[func-returns-value]
    assert isinstance(out, Opened) and out.message == _batch() and out.data is data
    assert seen == [out.message] and out.envelope.kid == "d1"


def test_signature_is_checked_before_any_tensor_decode() -> None:
    keys = _Keys()
    out = admit(_with_nan_payload(OTHER), types=TYPES, key_for=keys)
    assert isinstance(out, Refused) and out.reason == BAD_SIGNATURE  # not "malformed"
    assert isinstance(out.error, BadSignature) and keys.asked == ["d1"]
    out = admit(_with_nan_payload(KEY), types=TYPES, key_for=keys)  # signed: now decoded
    assert isinstance(out, Refused) and out.reason == MALFORMED
    assert isinstance(out.error, MalformedMessage)


def test_size_then_header_before_key_lookup() -> None:
    keys = _Keys()
    data = seal(_batch(), signing_key=KEY, kid="d1")
    out = admit(data, types=TYPES, key_for=keys, max_size=len(data) - 1)
    assert isinstance(out, Refused) and out.reason == OVERSIZE
    out = admit(b"\xa1not cose", types=TYPES, key_for=keys)
    assert isinstance(out, Refused) and out.reason in (MALFORMED, LIMIT)
    cmd = seal(Command(kind="stop", session="s1", round=0, device=None, seq=1),
               signing_key=KEY, kid="d1")  # fmt: skip
    out = admit(cmd, types=TYPES, key_for=keys)
    assert isinstance(out, Refused) and out.reason == UNEXPECTED_TYPE
    assert keys.asked == []  # nothing above needed a key


def test_key_and_policy_refusals_pass_through() -> None:
    data = seal(_batch(), signing_key=OTHER, kid="d9")
    out = admit(data, types=TYPES, key_for=_Keys())
    assert out == Refused("unregistered", "d9", "d9")
    mine = seal(_batch(), signing_key=KEY, kid="d1")
    no = Refused("replay", "seq 1", "d1")
    assert admit(mine, types=TYPES, key_for=_Keys(), policy=lambda e, m: no) is no


@pytest.mark.parametrize("flip", [10, -1])
def test_altered_bytes_do_not_verify(flip: int) -> None:
    data = bytearray(seal(_batch(), signing_key=KEY, kid="d1"))
    data[flip] ^= 0x01
    out = admit(bytes(data), types=TYPES, key_for=_Keys())
    assert isinstance(out, Refused) and out.reason in (BAD_SIGNATURE, MALFORMED)

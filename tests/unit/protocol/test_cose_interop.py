"""Interoperability with an independent COSE implementation (pycose).

pycose 1.1 cannot decode with cbor2 6 through ``CoseMessage.decode`` (cbor2 6
returns a tag's array as a tuple and pycose checks for a list), so the tests
hand pycose the decoded array via ``Sign1Message.from_cose_obj``; the
signature check itself (Sig_structure, EdDSA) is entirely pycose's.
"""

from __future__ import annotations

import cbor2
import pytest
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm, ContentType
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from protocol.envelope import HDR_SCHEMA_VERSION, SCHEMA_VERSION, verify
from protocol.errors import BadSignature
from protocol.messages import ActivationBatch, open_sealed, seal
from tests.unit.protocol.keys_for_tests import DEVICE_KEY, OTHER_KEY, sample_batch


def pycose_decode(data: bytes) -> Sign1Message:
    item = cbor2.loads(data)
    assert isinstance(item, cbor2.CBORTag)
    assert item.tag == 18
    parts = [dict(v) if isinstance(v, cbor2.frozendict) else v for v in item.value]
    msg = Sign1Message.from_cose_obj(parts, True)
    assert isinstance(msg, Sign1Message)
    return msg


def public_okp(key: object) -> OKPKey:
    return OKPKey(crv=Ed25519, x=bytes(key.verify_key))  # type: ignore[attr-defined]


def test_our_message_verifies_with_pycose() -> None:
    data = seal(sample_batch(), signing_key=DEVICE_KEY, kid="dev-01")
    msg = pycose_decode(data)
    msg.key = public_okp(DEVICE_KEY)
    assert msg.verify_signature()
    assert msg.phdr[Algorithm] is EdDSA
    assert msg.phdr[ContentType] == ActivationBatch.CONTENT_TYPE
    assert msg.phdr[KID] == b"dev-01"
    assert msg.phdr[HDR_SCHEMA_VERSION] == SCHEMA_VERSION
    assert ActivationBatch.decode(msg.payload) == sample_batch()


def test_pycose_rejects_our_message_under_another_key() -> None:
    msg = pycose_decode(seal(sample_batch(), signing_key=DEVICE_KEY, kid="dev-01"))
    msg.key = public_okp(OTHER_KEY)
    assert not msg.verify_signature()


def _pycose_sign(payload: bytes, *, kid_protected: bool) -> bytes:
    phdr: dict[object, object] = {
        Algorithm: EdDSA,
        ContentType: ActivationBatch.CONTENT_TYPE,
        HDR_SCHEMA_VERSION: SCHEMA_VERSION,
    }
    uhdr: dict[object, object] = {}
    (phdr if kid_protected else uhdr)[KID] = b"dev-01"
    msg = Sign1Message(phdr=phdr, uhdr=uhdr, payload=payload)
    msg.key = OKPKey(crv=Ed25519, d=bytes(DEVICE_KEY), x=bytes(DEVICE_KEY.verify_key))
    encoded: bytes = msg.encode()
    return encoded


@pytest.mark.parametrize("kid_protected", [True, False])
def test_pycose_message_verifies_with_ours(kid_protected: bool) -> None:
    data = _pycose_sign(sample_batch().encode(), kid_protected=kid_protected)
    env = verify(data, verify_key=DEVICE_KEY.verify_key)
    assert env.kid == "dev-01"
    assert open_sealed(data, verify_key=DEVICE_KEY.verify_key) == sample_batch()


def test_pycose_message_with_other_key_fails_ours() -> None:
    data = _pycose_sign(sample_batch().encode(), kid_protected=True)
    with pytest.raises(BadSignature):
        verify(data, verify_key=OTHER_KEY.verify_key)

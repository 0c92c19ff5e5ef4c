"""COSE_Sign1 envelope: sign, peek, verify and every way a receiver must refuse."""

from __future__ import annotations

import cbor2
import pytest

from protocol import envelope as env_mod
from protocol.envelope import (
    CONTENT_TYPE_ACTIVATIONS,
    MAX_ENVELOPE_BYTES,
    SCHEMA_VERSION,
    peek,
    sig_structure,
    sign,
    verify,
)
from protocol.errors import BadSignature, LimitExceeded, MalformedMessage
from tests.unit.protocol.keys_for_tests import DEVICE_KEY, OTHER_KEY

CT = CONTENT_TYPE_ACTIVATIONS


def craft(
    phdr: dict[object, object],
    *,
    uhdr: dict[object, object] | None = None,
    payload: object = b"payload",
    tag: int | None = 18,
    key: object = DEVICE_KEY,
) -> bytes:
    """A COSE_Sign1 with arbitrary headers, correctly signed with ``key``."""
    protected = cbor2.dumps(phdr, canonical=True)
    body = payload if isinstance(payload, bytes) else b""
    signature = key.sign(sig_structure(protected, body)).signature  # type: ignore[attr-defined]
    arr = [protected, uhdr or {}, payload, signature]
    return cbor2.dumps(cbor2.CBORTag(tag, arr) if tag is not None else arr)


def good_phdr(**over: object) -> dict[object, object]:
    h: dict[object, object] = {1: -8, 3: CT, 4: b"dev-01", -65537: SCHEMA_VERSION}
    for k, v in over.items():
        h[{"alg": 1, "ct": 3, "kid": 4, "ver": -65537}[k]] = v
    return h


def test_sign_verify_round_trip() -> None:
    data = sign(b"hello", signing_key=DEVICE_KEY, kid="dev-01", content_type=CT)
    assert data[0] == 0xD2  # CBOR tag 18: COSE_Sign1
    env = verify(data, verify_key=DEVICE_KEY.verify_key)
    assert (env.kid, env.content_type, env.schema_version, env.payload) == (
        "dev-01",
        CT,
        SCHEMA_VERSION,
        b"hello",
    )
    assert len(env.signature) == 64
    assert cbor2.loads(env.protected) == {1: -8, 3: CT, 4: b"dev-01", -65537: 1}
    assert peek(data) == env


def test_signing_is_deterministic() -> None:
    a = sign(b"x", signing_key=DEVICE_KEY, kid="d", content_type=CT)
    assert a == sign(b"x", signing_key=DEVICE_KEY, kid="d", content_type=CT)


def test_wrong_key_is_bad_signature() -> None:
    data = sign(b"hello", signing_key=OTHER_KEY, kid="dev-01", content_type=CT)
    peek(data)  # structurally fine
    with pytest.raises(BadSignature, match="does not verify"):
        verify(data, verify_key=DEVICE_KEY.verify_key)


def test_swapped_payload_is_bad_signature() -> None:
    a = cbor2.loads(sign(b"pay 1", signing_key=DEVICE_KEY, kid="dev-01", content_type=CT))
    b = cbor2.loads(sign(b"pay 2", signing_key=DEVICE_KEY, kid="dev-01", content_type=CT))
    forged = cbor2.dumps(cbor2.CBORTag(18, [a.value[0], {}, b.value[2], a.value[3]]))
    with pytest.raises(BadSignature):
        verify(forged, verify_key=DEVICE_KEY.verify_key)


def test_swapped_content_type_is_bad_signature() -> None:
    a = cbor2.loads(sign(b"p", signing_key=DEVICE_KEY, kid="dev-01", content_type=CT))
    other = cbor2.dumps(good_phdr(ct="application/vnd.splitfed.command+cbor"), canonical=True)
    forged = cbor2.dumps(cbor2.CBORTag(18, [other, {}, a.value[2], a.value[3]]))
    with pytest.raises(BadSignature):
        verify(forged, verify_key=DEVICE_KEY.verify_key)


@pytest.mark.parametrize("alg", [-7, -35, 5, "EdDSA", None, -8.0, True])
def test_wrong_alg_is_refused_even_when_signed(alg: object) -> None:
    phdr = good_phdr(alg=alg)
    if alg is None:
        del phdr[1]
    with pytest.raises(BadSignature, match="algorithm"):
        verify(craft(phdr), verify_key=DEVICE_KEY.verify_key)


def test_alg_only_in_unprotected_header_is_refused() -> None:
    phdr = good_phdr()
    del phdr[1]
    with pytest.raises(BadSignature):
        verify(craft(phdr, uhdr={1: -8}), verify_key=DEVICE_KEY.verify_key)


def test_truncated_cbor_is_malformed() -> None:
    data = sign(b"hello" * 20, signing_key=DEVICE_KEY, kid="dev-01", content_type=CT)
    for cut in (0, 1, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(MalformedMessage):
            verify(data[:cut], verify_key=DEVICE_KEY.verify_key)


def test_trailing_bytes_are_malformed() -> None:
    data = sign(b"hello", signing_key=DEVICE_KEY, kid="dev-01", content_type=CT)
    with pytest.raises(MalformedMessage, match="trailing"):
        peek(data + b"\x00")


def test_oversize_is_refused_before_decoding() -> None:
    with pytest.raises(LimitExceeded):
        peek(b"\xff" * 101, max_size=100)
    with pytest.raises(LimitExceeded):
        sign(b"x" * 200, signing_key=DEVICE_KEY, kid="d", content_type=CT, max_size=100)
    big = sign(b"x" * 200, signing_key=DEVICE_KEY, kid="d", content_type=CT)
    with pytest.raises(LimitExceeded):
        verify(big, verify_key=DEVICE_KEY.verify_key, max_size=100)
    assert MAX_ENVELOPE_BYTES == 4 * 1024 * 1024


def test_untagged_sign1_is_accepted_other_tags_are_not() -> None:
    verify(craft(good_phdr(), tag=None), verify_key=DEVICE_KEY.verify_key)
    with pytest.raises(MalformedMessage, match="tag 98"):
        peek(craft(good_phdr(), tag=98))


def test_kid_in_unprotected_header_is_accepted() -> None:
    phdr = good_phdr()
    del phdr[4]
    env = verify(craft(phdr, uhdr={4: b"dev-01"}), verify_key=DEVICE_KEY.verify_key)
    assert env.kid == "dev-01"


@pytest.mark.parametrize(
    ("phdr", "uhdr", "match"),
    [
        (good_phdr(ver=2), None, "schema version"),
        (good_phdr(ver="1"), None, "schema version"),
        (good_phdr(ct=""), None, "content type"),
        (good_phdr(ct=42), None, "content type"),
        (good_phdr(kid="dev-01"), None, "kid"),
        (good_phdr(kid=b"dev/01"), None, "kid"),
        (good_phdr(kid=b"+"), None, "kid"),
        (good_phdr(kid=b"\xff"), None, "kid"),
        (good_phdr(), {4: b"dev-01"}, "both"),
        ({**good_phdr(), 2: [99]}, None, "critical"),
        (good_phdr(), {2: [1]}, "crit"),
    ],
)
def test_bad_headers_are_malformed(
    phdr: dict[object, object], uhdr: dict[object, object] | None, match: str
) -> None:
    with pytest.raises(MalformedMessage, match=match):
        peek(craft(phdr, uhdr=uhdr))


def test_understood_crit_is_accepted() -> None:
    verify(craft({**good_phdr(), 2: [-65537]}), verify_key=DEVICE_KEY.verify_key)


def test_detached_payload_and_bad_signature_length_are_malformed() -> None:
    with pytest.raises(MalformedMessage, match="payload"):
        peek(craft(good_phdr(), payload=None))
    data = cbor2.loads(sign(b"p", signing_key=DEVICE_KEY, kid="d", content_type=CT)).value
    short = cbor2.dumps(cbor2.CBORTag(18, [data[0], {}, data[2], data[3][:63]]))
    with pytest.raises(MalformedMessage, match="64 bytes"):
        peek(short)


@pytest.mark.parametrize(
    "item",
    [
        [],
        [b"", {}, b"", b""],
        {"a": 1},
        [b"\xa0", {}, b"p", b"s" * 64, b"extra"],
        [b"\x01", {}, b"p", b"s" * 64],  # protected header is not a map
        [b"\xa1\x01\x27", [], b"p", b"s" * 64],  # unprotected header is not a map
    ],
)
def test_wrong_structure_is_malformed(item: object) -> None:
    with pytest.raises(MalformedMessage):
        peek(cbor2.dumps(cbor2.CBORTag(18, item)))


def test_duplicate_protected_labels_are_malformed() -> None:
    # {1: -8, 1: -7}: a map with a repeated key, hand-encoded (cbor2 cannot produce it)
    protected = b"\xa2\x01\x27\x01\x26"
    data = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"p", b"s" * 64]))
    with pytest.raises(MalformedMessage, match="CBOR"):
        peek(data)


def test_expected_kid() -> None:
    data = sign(b"p", signing_key=DEVICE_KEY, kid="dev-01", content_type=CT)
    verify(data, verify_key=DEVICE_KEY.verify_key, expected_kid="dev-01")
    with pytest.raises(BadSignature, match="kid"):
        verify(data, verify_key=DEVICE_KEY.verify_key, expected_kid="dev-02")


def test_sign_rejects_bad_arguments() -> None:
    with pytest.raises(MalformedMessage):
        sign(b"p", signing_key=DEVICE_KEY, kid="bad kid", content_type=CT)
    with pytest.raises(MalformedMessage):
        sign(b"p", signing_key=DEVICE_KEY, kid="d", content_type="with space")
    with pytest.raises(MalformedMessage):
        sign("text", signing_key=DEVICE_KEY, kid="d", content_type=CT)  # type: ignore[arg-type]


def test_peek_rejects_non_bytes() -> None:
    with pytest.raises(MalformedMessage):
        peek("not bytes")  # type: ignore[arg-type]
    assert env_mod.HDR_SCHEMA_VERSION < -65536  # private-use label range of IANA's registry


def test_sig_structure_matches_the_cose_wg_example() -> None:
    # cose-wg/Examples eddsa-examples/eddsa-sig-02.json, "ToBeSign_hex": protected {1: -8},
    # payload "This is the content.", empty external AAD.
    expected = bytes.fromhex(
        "846A5369676E61747572653143A10127405454686973206973207468652063"
        "6F6E74656E742E"
    )
    assert sig_structure(bytes.fromhex("A10127"), b"This is the content.") == expected

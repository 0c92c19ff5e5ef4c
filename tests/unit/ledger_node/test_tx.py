"""Tx and registration codecs: round trip, tampering, canonical form."""

from __future__ import annotations

import cbor2
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger_node.errors import InvalidTransaction
from protocol.ledger.registration import make_registration_request, verify_registration_request
from protocol.ledger.tx import decode_tx, make_tx

KEY = nacl.signing.SigningKey(b"\x01" * 32)

bodies = st.dictionaries(st.text(max_size=8), st.one_of(
    st.integers(-(2**40), 2**40), st.text(max_size=20), st.binary(max_size=20), st.booleans(),
    st.none()), max_size=5)


@settings(max_examples=50)
@given(body=bodies, nonce=st.integers(0, 2**62))
def test_round_trip(body: dict[str, object], nonce: int) -> None:
    raw = make_tx("device_revoke", body, signing_key=KEY, submitter="org1/admin",
                  chain_id="c", nonce=nonce)
    tx = decode_tx(raw, chain_id="c")
    assert (tx.kind, dict(tx.body), tx.nonce, tx.submitter) == ("device_revoke", body, nonce,
                                                                "org1/admin")
    assert tx.pubkey_hex == bytes(KEY.verify_key).hex()


@settings(max_examples=50)
@given(pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(pos: int, bit: int) -> None:
    raw = bytearray(make_tx("device_revoke", {"device": "d"}, signing_key=KEY,
                            submitter="org1/admin", chain_id="c", nonce=7))
    raw[pos % len(raw)] ^= 1 << bit
    with pytest.raises(InvalidTransaction):
        decode_tx(bytes(raw))


def test_wrong_chain_kind_and_non_canonical() -> None:
    raw = make_tx("device_revoke", {}, signing_key=KEY, submitter="a", chain_id="c", nonce=1)
    with pytest.raises(InvalidTransaction, match="not 'other'"):
        decode_tx(raw, chain_id="other")
    with pytest.raises(InvalidTransaction, match="unknown tx kind"):
        make_tx("mint_coins", {}, signing_key=KEY, submitter="a", chain_id="c")
    outer = cbor2.loads(raw)
    non_canonical = cbor2.dumps({"s": outer["s"], "p": outer["p"]})  # keys out of order
    with pytest.raises(InvalidTransaction, match="canonical"):
        decode_tx(non_canonical)


def test_registration_request_proves_possession() -> None:
    dev = nacl.signing.SigningKey.generate()
    raw = make_registration_request(signing_key=dev, org="org1", device="pump1",
                                    capabilities={"cut": 2})
    req = verify_registration_request(raw)
    assert (req.org, req.device, req.pubkey_hex) == ("org1", "pump1", bytes(dev.verify_key).hex())
    outer = cbor2.loads(raw)
    forged = cbor2.dumps({"p": outer["p"], "s": KEY.sign(outer["p"]).signature}, canonical=True)
    with pytest.raises(InvalidTransaction, match="not signed by the device key"):
        verify_registration_request(forged)

"""Canonical CBOR and signing domains shared by transactions, blocks and proofs.

Everything hashed or signed on the ledger is canonical CBOR (RFC 8949 section
4.2.1 "core deterministic encoding" as implemented by ``cbor2``'s
``canonical=True``): the same value always has the same bytes, so every node
computes the same hashes. Signatures are Ed25519 over a domain tag followed by
the canonical bytes, so a header signature can never be replayed as a
transaction signature or the other way round.
"""

from __future__ import annotations

import hashlib
from typing import Any

import cbor2

from protocol.errors import InvalidTransaction

TX_DOMAIN = b"splitfed-ledger-tx-v1\x00"
HEADER_DOMAIN = b"splitfed-ledger-header-v1\x00"
REGISTRATION_DOMAIN = b"splitfed-device-registration-v1\x00"


def dumps(value: Any) -> bytes:
    """Canonical CBOR encoding."""
    return cbor2.dumps(value, canonical=True)


def loads_canonical(data: bytes, *, what: str) -> Any:
    """Decode CBOR and insist it is the canonical encoding of its value."""
    # untrusted bytes: any failure of the decoder (deep nesting, odd tags, values that
    # cannot be re-encoded) is a malformed message, never a crash of the node
    try:
        value = cbor2.loads(data)
        again = dumps(value)
    except Exception as exc:
        raise InvalidTransaction(f"{what} is not valid CBOR: {type(exc).__name__}") from exc
    if again != data:
        raise InvalidTransaction(f"{what} is not canonical CBOR")
    return value


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

"""Ledger transactions: CBOR, Ed25519-signed by the submitter.

Wire form (canonical CBOR)::

    tx      = {"p": payload_bytes, "s": signature(64 bytes)}
    payload = canonical CBOR {"v": 1, "chain": str, "kind": str, "sub": str,
                              "pk": public key (32 bytes), "nonce": int, "body": map}
    signature = Ed25519(submitter key, TX_DOMAIN || payload_bytes)
    txid    = hex SHA-256 of the whole tx bytes

:func:`decode_tx` checks structure and the signature against the key carried
in ``pk``. Whether that key is *authorised* for the submitter identity is the
contract's question (``ledger_node.contracts``), answered at execution time
against the state of the chain. The ``(pk, nonce)`` pair may be used once per
chain: the contract marks a replay invalid.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from protocol.errors import InvalidTransaction
from protocol.ledger.codec import TX_DOMAIN, dumps, loads_canonical, sha256_hex
from protocol.ledger_msgs import MAX_TX_BYTES

__all__ = ["TX_KINDS", "Receipt", "Tx", "decode_tx", "make_tx"]

TX_KINDS = frozenset(
    {
        "org_add",
        "validator_set",
        "device_register",
        "device_revoke",
        "session_create",
        "round_record",
        "model_propose",
        "model_vote",
        "model_finalise",
        "evidence",
        "audit_report",
    }
)
_VERSION = 1
_MAX_ID = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class Tx:
    """A decoded transaction whose signature has been checked."""

    kind: str
    body: Mapping[str, Any]
    submitter: str
    pubkey_hex: str
    chain_id: str
    nonce: int
    raw: bytes = field(repr=False)
    txid: str

    def __post_init__(self) -> None:
        if self.kind not in TX_KINDS:
            raise InvalidTransaction(f"unknown tx kind {self.kind!r}")
        if not self.submitter or len(self.submitter) > _MAX_ID:
            raise InvalidTransaction("submitter id must be 1..128 characters")
        if not self.chain_id or len(self.chain_id) > _MAX_ID:
            raise InvalidTransaction("chain id must be 1..128 characters")
        if self.nonce < 0 or self.nonce >= 2**63:
            raise InvalidTransaction("nonce must be in [0, 2**63)")
        if len(self.pubkey_hex) != 64:
            raise InvalidTransaction("public key must be 32 bytes")


def make_tx(
    kind: str,
    body: Mapping[str, Any],
    *,
    signing_key: nacl.signing.SigningKey,
    submitter: str,
    chain_id: str,
    nonce: int | None = None,
) -> bytes:
    """Build and sign a transaction; ``nonce`` defaults to the time in ns."""
    payload = dumps(
        {
            "v": _VERSION,
            "chain": chain_id,
            "kind": kind,
            "sub": submitter,
            "pk": bytes(signing_key.verify_key),
            "nonce": time.time_ns() if nonce is None else nonce,
            "body": dict(body),
        }
    )
    sig = signing_key.sign(TX_DOMAIN + payload).signature
    raw = dumps({"p": payload, "s": sig})
    decode_tx(raw)  # validate what we produce exactly as a receiver would
    return raw


def decode_tx(data: bytes, *, chain_id: str | None = None) -> Tx:
    """Parse, check structure and signature; :class:`InvalidTransaction` if not."""
    if len(data) > MAX_TX_BYTES:
        raise InvalidTransaction(f"tx larger than {MAX_TX_BYTES} bytes")
    outer = loads_canonical(data, what="tx")
    if not isinstance(outer, dict) or set(outer) != {"p", "s"}:
        raise InvalidTransaction("tx must be a map with keys p, s")
    payload, sig = outer["p"], outer["s"]
    if not isinstance(payload, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
        raise InvalidTransaction("tx payload/signature have the wrong type")
    p = loads_canonical(payload, what="tx payload")
    if not isinstance(p, dict) or set(p) != {"v", "chain", "kind", "sub", "pk", "nonce", "body"}:
        raise InvalidTransaction("tx payload has the wrong fields")
    if p["v"] != _VERSION:
        raise InvalidTransaction(f"unsupported tx version {p['v']!r}")
    if not (
        isinstance(p["chain"], str)
        and isinstance(p["kind"], str)
        and isinstance(p["sub"], str)
        and isinstance(p["pk"], bytes)
        and isinstance(p["nonce"], int)
        and not isinstance(p["nonce"], bool)
        and isinstance(p["body"], dict)
        and len(p["pk"]) == 32
    ):
        raise InvalidTransaction("tx payload field has the wrong type")
    try:
        nacl.signing.VerifyKey(p["pk"]).verify(TX_DOMAIN + payload, sig)
    except nacl.exceptions.BadSignatureError as exc:
        raise InvalidTransaction("tx signature does not verify") from exc
    if chain_id is not None and p["chain"] != chain_id:
        raise InvalidTransaction(f"tx is for chain {p['chain']!r}, not {chain_id!r}")
    return Tx(
        kind=p["kind"],
        body=p["body"],
        submitter=p["sub"],
        pubkey_hex=p["pk"].hex(),
        chain_id=p["chain"],
        nonce=p["nonce"],
        raw=data,
        txid=sha256_hex(data),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """Where a submitted tx ended up: its block, and whether it took effect."""

    txid: str
    height: int
    valid: bool
    reason: str | None

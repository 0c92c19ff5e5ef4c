"""Block headers, header signatures and finality certificates (pure).

A header is canonical CBOR of::

    {"chain": str, "height": int, "prev": 32 bytes, "tx_root": 32 bytes,
     "state_root": 32 bytes, "time_ms": int, "proposer": str, "tx_count": int,
     "invalid": [[index, reason], ...]}

``tx_root`` is the RFC 6962 root over the raw tx bytes in block order;
``state_root`` the state after executing the block; ``invalid`` lists the txs
that stay in the block but had no effect (as Fabric marks them), so a light
client holding a certified header knows whether a tx took effect.

Certificates: validator ``v`` signs ``HEADER_DOMAIN || header_bytes``. A
header is certified when distinct validators of the current set reaching
:func:`quorum` have signed it. ``quorum(n) = floor((n + f) / 2) + 1`` with
``f = floor((n - 1) / 3)``: this is ``2f + 1`` when ``n = 3f + 1`` and the
smallest value for which any two quorums share at least ``f + 1`` validators,
i.e. one honest one, when ``n`` is not of that form (for n = 3, 2f + 1 = 1 would
let a single validator certify a fork, so 2 are required).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.signing

from protocol.errors import CertificateError, InvalidTransaction
from protocol.ledger.codec import HEADER_DOMAIN, dumps, loads_canonical, sha256

__all__ = [
    "Header",
    "decode_header",
    "max_faulty",
    "quorum",
    "sign_header",
    "verify_certificate",
    "verify_header_signature",
]

_FIELDS = {
    "chain",
    "height",
    "prev",
    "tx_root",
    "state_root",
    "time_ms",
    "proposer",
    "tx_count",
    "invalid",
}


def max_faulty(n: int) -> int:
    """f = floor((n - 1) / 3) for n validators."""
    return (n - 1) // 3 if n > 0 else 0


def quorum(n: int) -> int:
    """Certificate quorum for ``n`` validators (see module docstring)."""
    if n <= 0:
        raise CertificateError("empty validator set")
    return (n + max_faulty(n)) // 2 + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    chain_id: str
    height: int
    prev_hash: bytes
    tx_root: bytes
    state_root: bytes
    time_ms: int
    proposer: str
    tx_count: int
    invalid: tuple[tuple[int, str], ...] = ()
    raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.height < 0 or self.tx_count < 0 or self.time_ms < 0:
            raise InvalidTransaction("header height, tx_count and time must be >= 0")
        for name in ("prev_hash", "tx_root", "state_root"):
            if len(getattr(self, name)) != 32:
                raise InvalidTransaction(f"header {name} must be 32 bytes")
        if any(not 0 <= i < self.tx_count for i, _ in self.invalid):
            raise InvalidTransaction("header marks a tx index outside the block invalid")

    def to_bytes(self) -> bytes:
        return dumps(
            {
                "chain": self.chain_id,
                "height": self.height,
                "prev": self.prev_hash,
                "tx_root": self.tx_root,
                "state_root": self.state_root,
                "time_ms": self.time_ms,
                "proposer": self.proposer,
                "tx_count": self.tx_count,
                "invalid": [[i, r] for i, r in self.invalid],
            }
        )

    def hash(self) -> bytes:
        return sha256(self.raw or self.to_bytes())

    def invalid_reason(self, index: int) -> str | None:
        for i, r in self.invalid:
            if i == index:
                return r
        return None


def decode_header(data: bytes) -> Header:
    """Parse canonical header bytes; :class:`InvalidTransaction` if malformed."""
    h = loads_canonical(data, what="header")
    if not isinstance(h, dict) or set(h) != _FIELDS:
        raise InvalidTransaction("header has the wrong fields")
    try:
        invalid = tuple((int(i), str(r)) for i, r in h["invalid"])
        hdr = Header(
            chain_id=h["chain"],
            height=h["height"],
            prev_hash=h["prev"],
            tx_root=h["tx_root"],
            state_root=h["state_root"],
            time_ms=h["time_ms"],
            proposer=h["proposer"],
            tx_count=h["tx_count"],
            invalid=invalid,
            raw=data,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidTransaction(f"header field has the wrong type: {exc}") from exc
    if hdr.to_bytes() != data:
        raise InvalidTransaction("header does not re-encode identically")
    return hdr


def sign_header(header_bytes: bytes, key: nacl.signing.SigningKey) -> bytes:
    return key.sign(HEADER_DOMAIN + header_bytes).signature


def _vk(key: nacl.signing.VerifyKey | str) -> nacl.signing.VerifyKey:
    if isinstance(key, str):
        try:
            return nacl.signing.VerifyKey(bytes.fromhex(key))
        except (ValueError, TypeError) as exc:
            raise CertificateError("validator key is not a 32-byte hex key") from exc
    return key


def verify_header_signature(
    header_bytes: bytes, sig: bytes, key: nacl.signing.VerifyKey | str
) -> None:
    """Raise :class:`CertificateError` unless ``sig`` is valid over the header."""
    try:
        _vk(key).verify(HEADER_DOMAIN + header_bytes, sig)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError) as exc:
        raise CertificateError("header signature does not verify") from exc


def verify_certificate(
    header_bytes: bytes,
    certificate: Sequence[tuple[str, bytes]],
    *,
    validators: Mapping[str, nacl.signing.VerifyKey | str],
) -> None:
    """Check >= quorum distinct known validators signed ``header_bytes``.

    Unknown validators and bad signatures are errors (a certificate is built
    only from checked signatures, so any bad entry means tampering).
    """
    seen: set[str] = set()
    for vid, sig in certificate:
        if vid not in validators:
            raise CertificateError(f"certificate signer {vid!r} is not a validator")
        if vid in seen:
            raise CertificateError(f"validator {vid!r} appears twice in the certificate")
        verify_header_signature(header_bytes, sig, validators[vid])
        seen.add(vid)
    need = quorum(len(validators))
    if len(seen) < need:
        raise CertificateError(
            f"certificate has {len(seen)} of the {need} validator signatures required"
        )

"""Light-client verification (pure, no I/O): what a device or auditor checks.

Trust anchor: the validator set (``validator id -> Ed25519 public key``),
taken from genesis or a later certified state. Given a proof (the wire message
:class:`protocol.ledger_msgs.LedgerProof`) a light
client checks, in order:

1. the header is certified: valid signatures by at least
   ``quorum(len(validators))`` distinct known validators
   (:func:`verify_certified_header`);
2. the tx is in that block: RFC 6962 audit path from the tx bytes to the
   header's ``tx_root`` with ``tree_size == tx_count``
   (:func:`verify_tx_inclusion`);
3. for a model: the tx is a ``model_finalise`` of the chain, not marked
   invalid in the header, naming the expected artifact hashes
   (:func:`verify_model_finalisation`).

What this does NOT prove: that the block is the *latest* (a withheld newer
finalisation or a revocation is not detected; freshness needs a recent
certified height from elsewhere), or anything if more than ``f`` validators
collude (they can certify a false header).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nacl.signing

from protocol.errors import CertificateError, InvalidTransaction, ProtocolError
from protocol.ledger.block import Header, decode_header, verify_certificate
from protocol.ledger.tx import decode_tx
from protocol.ledger_msgs import LedgerProof
from protocol.merkle import verify_inclusion

__all__ = [
    "FinalisedModel",
    "verify_certified_header",
    "verify_model_finalisation",
    "verify_proof",
    "verify_tx_inclusion",
]

ValidatorKeys = Mapping[str, nacl.signing.VerifyKey | str]


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalisedModel:
    chain_id: str
    height: int
    session_id: str
    version: int
    weights_sha256: str
    client_sha256: str
    server_sha256: str
    txid: str


def verify_certified_header(
    header: bytes, certificate: Sequence[tuple[str, bytes]], *, validators: ValidatorKeys
) -> Header:
    """Decode ``header`` and check its certificate; raises on failure."""
    hdr = decode_header(header)
    verify_certificate(header, certificate, validators=validators)
    return hdr


def verify_tx_inclusion(
    *, tx: bytes, header: Header, leaf_index: int, tree_size: int, audit_path: Sequence[bytes]
) -> None:
    """Check ``tx`` is leaf ``leaf_index`` of the block; raises on failure."""
    if tree_size != header.tx_count:
        raise InvalidTransaction(
            f"proof tree size {tree_size} differs from the block's {header.tx_count} txs"
        )
    try:
        verify_inclusion(
            leaf=tx, index=leaf_index, tree_size=tree_size, path=audit_path, root=header.tx_root
        )
    except ProtocolError as exc:
        raise InvalidTransaction(f"tx is not in block {header.height}: {exc}") from exc


def verify_proof(
    proof: LedgerProof, *, validators: ValidatorKeys, require_valid: bool = True
) -> Header:
    """Certified header + inclusion (+ the tx took effect when ``require_valid``)."""
    hdr = verify_certified_header(proof.header, proof.certificate, validators=validators)
    if hdr.chain_id != proof.chain_id or hdr.height != proof.height:
        raise CertificateError("proof chain id / height differ from the certified header")
    verify_tx_inclusion(
        tx=proof.tx,
        header=hdr,
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        audit_path=proof.audit_path,
    )
    if require_valid:
        reason = hdr.invalid_reason(proof.leaf_index)
        if reason is not None:
            raise InvalidTransaction(f"tx is in the block but marked invalid: {reason}")
    return hdr


def verify_model_finalisation(
    *,
    chain_id: str,
    height: int,
    header: bytes,
    certificate: Sequence[tuple[str, bytes]],
    tx: bytes,
    leaf_index: int,
    tree_size: int,
    audit_path: Sequence[bytes],
    validators: ValidatorKeys,
    expected_weights_sha256: str | None = None,
    expected_client_sha256: str | None = None,
    session_id: str | None = None,
) -> FinalisedModel:
    """Prove a model version was finalised on ``chain_id``; raises on any failure."""
    try:
        proof = LedgerProof(
            chain_id=chain_id,
            height=height,
            header=header,
            certificate=tuple(certificate),
            tx=tx,
            leaf_index=leaf_index,
            tree_size=tree_size,
            audit_path=tuple(audit_path),
        )
    except ProtocolError as exc:
        raise InvalidTransaction(f"the proof is malformed: {exc}") from exc
    hdr = verify_proof(proof, validators=validators, require_valid=True)
    t = decode_tx(tx, chain_id=chain_id)
    if t.kind != "model_finalise":
        raise InvalidTransaction(f"proved tx is a {t.kind}, not a model_finalise")
    b = t.body
    fields = {
        n: b.get(n) for n in ("session_id", "weights_sha256", "client_sha256", "server_sha256")
    }
    if not all(isinstance(v, str) for v in fields.values()) or not isinstance(
        b.get("version"), int
    ):
        raise InvalidTransaction("model_finalise tx lacks session/version/hashes")
    if session_id is not None and fields["session_id"] != session_id:
        raise InvalidTransaction(f"finalisation is for session {fields['session_id']!r}")
    if expected_weights_sha256 is not None and fields["weights_sha256"] != expected_weights_sha256:
        raise InvalidTransaction("finalised weights_sha256 differs from the received weights")
    if expected_client_sha256 is not None and fields["client_sha256"] != expected_client_sha256:
        raise InvalidTransaction("finalised client_sha256 differs from the received client half")
    return FinalisedModel(
        chain_id=chain_id,
        height=hdr.height,
        session_id=str(b["session_id"]),
        version=int(b["version"]),
        weights_sha256=str(b["weights_sha256"]),
        client_sha256=str(b["client_sha256"]),
        server_sha256=str(b["server_sha256"]),
        txid=t.txid,
    )

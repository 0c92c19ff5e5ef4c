"""Ledger proof attachment and model announcement.

CBOR payload schemas (text keys, every key present, ``null`` where optional)::

    LedgerProof        {"chain_id": id, "height": uint, "header": bstr,
                        "certificate": [[validator id, bstr(64)], ...],
                        "tx": bstr, "leaf_index": uint, "tree_size": uint >= 1,
                        "audit_path": [bstr(32), ...]}
    ModelAnnouncement  {"session": id, "version": uint, "model_id": id, "cut": uint,
                        "client_sha256": hex64, "client_artifact": bstr | null,
                        "weights": [tensor, ...] | null, "weights_sha256": hex64,
                        "proof": LedgerProof | null}

These types only *carry* a proof; checking it (header certificate by >= 2f+1
validators, RFC 6962 inclusion of ``tx`` at ``leaf_index`` under the header's
tx root, and that ``tx`` finalises ``weights_sha256``) is the light client's
job in ``ledger_node``. What is checked here: sizes and types, and, when the
artifact or the weights are attached, that they hash to the announced
digests (:func:`weights_digest` defines the weights digest).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from protocol._cbor import dumps_canonical
from protocol._fields import (
    check_keys,
    field_names,
    fields_eq,
    guarded_build,
    read_map,
    req_bytes,
    req_hex_digest,
    req_id,
    req_int,
    set_field,
)
from protocol.envelope import CONTENT_TYPE_LEDGER_PROOF, CONTENT_TYPE_MODEL, MAX_ENVELOPE_BYTES
from protocol.errors import MalformedMessage
from protocol.tensor import DEFAULT_LIMITS, TensorLimits, encode_tensor
from protocol.training import check_weights, decode_weights

__all__ = ["LedgerProof", "ModelAnnouncement", "weights_digest"]

MAX_HEADER_BYTES = 64 * 1024
#: the largest ledger transaction (the ledger node refuses bigger ones at submit)
MAX_TX_BYTES = 256 * 1024
MAX_CERTIFICATE = 256
MAX_AUDIT_PATH = 64


def weights_digest(weights: tuple[np.ndarray, ...] | list[np.ndarray]) -> str:
    """SHA-256 (hex) of the canonical CBOR array of the weights' wire tensors.

    Depends on dtype, shape and every byte, in order: the same values sent as
    float16 and as float32 have different digests.
    """
    checked = check_weights(weights)
    return hashlib.sha256(dumps_canonical([encode_tensor(w) for w in checked])).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerProof:
    """A ledger transaction with its block header, finality certificate and audit path."""

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_LEDGER_PROOF

    chain_id: str
    height: int
    header: bytes
    certificate: tuple[tuple[str, bytes], ...]
    tx: bytes
    leaf_index: int
    tree_size: int
    audit_path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        req_id(self.chain_id, "chain_id")
        req_int(self.height, "height")
        req_bytes(self.header, "header", max_len=MAX_HEADER_BYTES)
        cert = self.certificate
        if not isinstance(cert, tuple | list) or not cert or len(cert) > MAX_CERTIFICATE:
            raise MalformedMessage(f"certificate must hold 1..{MAX_CERTIFICATE} signatures")
        pairs = []
        for entry in cert:
            if not isinstance(entry, tuple | list) or len(entry) != 2:
                raise MalformedMessage("certificate entries are (validator id, signature)")
            pairs.append(
                (
                    req_id(entry[0], "validator id"),
                    req_bytes(entry[1], "validator signature", max_len=64, exact=64),
                )
            )
        if len({v for v, _ in pairs}) != len(pairs):
            raise MalformedMessage("a validator appears twice in the certificate")
        set_field(self, "certificate", tuple(pairs))
        req_bytes(self.tx, "tx", max_len=MAX_TX_BYTES)
        req_int(self.tree_size, "tree_size", lo=1)
        req_int(self.leaf_index, "leaf_index", hi=self.tree_size - 1)
        path = self.audit_path
        if not isinstance(path, tuple | list) or len(path) > MAX_AUDIT_PATH:
            raise MalformedMessage(f"audit_path must hold at most {MAX_AUDIT_PATH} hashes")
        set_field(
            self,
            "audit_path",
            tuple(req_bytes(h, "audit_path entry", max_len=32, exact=32) for h in path),
        )

    def to_wire(self) -> dict[str, Any]:
        m = {n: getattr(self, n) for n in field_names(type(self))}
        m["certificate"] = [list(p) for p in self.certificate]
        m["audit_path"] = list(self.audit_path)
        return m

    @classmethod
    def from_wire(cls, obj: object) -> Self:
        return cls(**check_keys(obj, "ledger proof", frozenset(field_names(cls))))

    def encode(self) -> bytes:
        return dumps_canonical(self.to_wire())

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        del limits
        m = read_map(data, "ledger proof")
        return guarded_build("ledger proof", lambda: cls.from_wire(m))


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelAnnouncement:
    """Retained on ``splitfed/v1/{org}/model``: the finalised client half and its proof.

    Attach ``client_artifact`` (the ``client.tflite`` bytes) and/or
    ``weights``; each must hash to its announced digest. ``proof`` is None
    only before the ledger has finalised the version.
    """

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_MODEL

    session: str
    version: int
    model_id: str
    cut: int
    client_sha256: str
    client_artifact: bytes | None
    weights: tuple[np.ndarray, ...] | None
    weights_sha256: str
    proof: LedgerProof | None

    def __post_init__(self) -> None:
        req_id(self.session, "session")
        req_int(self.version, "version")
        req_id(self.model_id, "model_id")
        req_int(self.cut, "cut")
        req_hex_digest(self.client_sha256, "client_sha256")
        req_hex_digest(self.weights_sha256, "weights_sha256")
        if self.client_artifact is not None:
            art = req_bytes(self.client_artifact, "client_artifact", max_len=MAX_ENVELOPE_BYTES)
            if hashlib.sha256(art).hexdigest() != self.client_sha256:
                raise MalformedMessage("client_artifact does not hash to client_sha256")
        if self.weights is not None:
            set_field(self, "weights", check_weights(self.weights))
            if weights_digest(self.weights) != self.weights_sha256:
                raise MalformedMessage("weights do not hash to weights_sha256")
        if self.proof is not None and not isinstance(self.proof, LedgerProof):
            raise MalformedMessage("proof must be a LedgerProof")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def encode(self) -> bytes:
        m = {n: getattr(self, n) for n in field_names(type(self))}
        m["weights"] = None if self.weights is None else [encode_tensor(w) for w in self.weights]
        m["proof"] = None if self.proof is None else self.proof.to_wire()
        return dumps_canonical(m)

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        m = read_map(data, "model announcement")
        return guarded_build("model announcement", lambda: cls.from_wire(m, limits=limits))

    @classmethod
    def from_wire(cls, m: Mapping[str, Any], *, limits: TensorLimits) -> Self:
        check_keys(m, "model announcement", frozenset(field_names(cls)))
        kwargs = dict(m)
        if m["weights"] is not None:
            kwargs["weights"] = decode_weights(m["weights"], limits=limits)
        if m["proof"] is not None:
            kwargs["proof"] = LedgerProof.from_wire(m["proof"])
        return cls(**kwargs)

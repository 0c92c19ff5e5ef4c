"""Signed envelope: COSE_Sign1 (RFC 9052 section 4.2) with EdDSA over Ed25519.

Wire form: CBOR tag 18 around ``[protected: bstr, unprotected: map,
payload: bstr, signature: bstr]``. The protected header is canonical CBOR::

    {1: -8,                    # alg: EdDSA (RFC 9053 section 2.2)
     3: "application/vnd.splitfed.activations+cbor",   # content type
     4: h'<kid bytes>',        # kid: the signer id, UTF-8
     -65537: 1}                # schema version (private-use label)

The signature is Ed25519 over ``Sig_structure = ["Signature1", protected,
h'', payload]`` (canonical CBOR, empty external AAD), so any COSE library
verifies our messages with the signer's raw public key.

Guarantee: :func:`verify` returns only if the holder of the private key for
``verify_key`` signed exactly these protected-header and payload bytes; the
content type, schema version and kid are covered when they are in the
protected header, which is where :func:`sign` puts them. Not covered: which
key *should* be used for a kid (the caller looks the kid up in the device
registry and passes that key), freshness (see :mod:`protocol.replay`),
confidentiality (payloads are signed, not encrypted; use TLS to the broker),
and anything in the unprotected header. On receipt the ``kid`` is accepted
from either header (other COSE libraries put it in the unprotected one); it
is only a hint for choosing the key, the signature decides.

Receivers refuse, before any cryptography: more than ``max_size`` bytes
(:class:`LimitExceeded`); anything but one tagged-18 or untagged COSE_Sign1
array, indefinite lengths, duplicate map keys, trailing bytes, a label in
both headers, a ``crit`` label we do not understand, a missing or foreign
content type, a schema version other than :data:`SCHEMA_VERSION`, a detached
payload, a signature that is not 64 bytes (:class:`MalformedMessage`); an
``alg`` other than -8 in the protected header (:class:`BadSignature`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import cbor2
import nacl.exceptions
import nacl.signing

from protocol._cbor import dumps_canonical, loads_strict
from protocol.errors import BadSignature, LimitExceeded, MalformedMessage, TopicError
from protocol.topics import validate_id

__all__ = [
    "ALG_EDDSA",
    "CONTENT_TYPES",
    "CONTENT_TYPE_ACTIVATIONS",
    "CONTENT_TYPE_COMMAND",
    "CONTENT_TYPE_DEVICE_STATE",
    "CONTENT_TYPE_ENDORSED",
    "CONTENT_TYPE_GRADIENTS",
    "CONTENT_TYPE_LEDGER_PROOF",
    "CONTENT_TYPE_MODEL",
    "CONTENT_TYPE_PREDICTION",
    "CONTENT_TYPE_WEIGHTS",
    "COSE_SIGN1_TAG",
    "ENDORSEMENT_OVERHEAD",
    "HDR_ALG",
    "HDR_CONTENT_TYPE",
    "HDR_KID",
    "HDR_SCHEMA_VERSION",
    "MAX_ENVELOPE_BYTES",
    "MAX_MQTT_PACKET",
    "MAX_MQTT_PAYLOAD",
    "MQTT_FRAMING_ALLOWANCE",
    "SCHEMA_VERSION",
    "Envelope",
    "check_signature",
    "peek",
    "sig_structure",
    "sign",
    "verify",
]

CONTENT_TYPE_ACTIVATIONS: Final = "application/vnd.splitfed.activations+cbor"
CONTENT_TYPE_GRADIENTS: Final = "application/vnd.splitfed.gradients+cbor"
CONTENT_TYPE_WEIGHTS: Final = "application/vnd.splitfed.client-weights+cbor"
CONTENT_TYPE_COMMAND: Final = "application/vnd.splitfed.command+cbor"
CONTENT_TYPE_DEVICE_STATE: Final = "application/vnd.splitfed.device-state+cbor"
CONTENT_TYPE_LEDGER_PROOF: Final = "application/vnd.splitfed.ledger-proof+cbor"
CONTENT_TYPE_MODEL: Final = "application/vnd.splitfed.model+cbor"
CONTENT_TYPE_PREDICTION: Final = "application/vnd.splitfed.prediction+cbor"
CONTENT_TYPE_ENDORSED: Final = "application/vnd.splitfed.endorsed+cbor"
CONTENT_TYPES: Final = (
    CONTENT_TYPE_ACTIVATIONS,
    CONTENT_TYPE_GRADIENTS,
    CONTENT_TYPE_WEIGHTS,
    CONTENT_TYPE_COMMAND,
    CONTENT_TYPE_DEVICE_STATE,
    CONTENT_TYPE_LEDGER_PROOF,
    CONTENT_TYPE_MODEL,
    CONTENT_TYPE_PREDICTION,
    CONTENT_TYPE_ENDORSED,
)

SCHEMA_VERSION: Final = 1
MAX_ENVELOPE_BYTES: Final = 4 * 1024 * 1024
# An Endorsement of a device envelope of MAX_ENVELOPE_BYTES needs at most this much more.
ENDORSEMENT_OVERHEAD: Final = 1024
# The largest MQTT payload the protocol allows anywhere: an endorsement of a maximal device
# envelope (gateway -> server). Every other message is at most MAX_ENVELOPE_BYTES.
MAX_MQTT_PAYLOAD: Final = MAX_ENVELOPE_BYTES + ENDORSEMENT_OVERHEAD  # 4195328
# ... plus the MQTT 5 PUBLISH framing: fixed header (<= 5 bytes), topic (2 + < 200 bytes for
# the protocol's topics, ids being <= 64 characters), packet id (2), properties (< 100 bytes
# as our clients send them). The broker's max_packet_size (deploy/broker.py,
# deploy/mosquitto/splitfed.conf) is this number.
MQTT_FRAMING_ALLOWANCE: Final = 1024
MAX_MQTT_PACKET: Final = MAX_MQTT_PAYLOAD + MQTT_FRAMING_ALLOWANCE  # 4196352
COSE_SIGN1_TAG: Final = 18
ALG_EDDSA: Final = -8
HDR_ALG: Final = 1
HDR_CRIT: Final = 2
HDR_CONTENT_TYPE: Final = 3
HDR_KID: Final = 4
HDR_SCHEMA_VERSION: Final = -65537
_UNDERSTOOD = frozenset({HDR_ALG, HDR_CRIT, HDR_CONTENT_TYPE, HDR_KID, HDR_SCHEMA_VERSION})
_SIGNATURE_LEN = 64
_CONTENT_TYPE_RE = re.compile(r"[!-~]{1,128}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """A decoded COSE_Sign1. ``protected`` is the raw protected-header bstr as signed."""

    kid: str
    content_type: str
    schema_version: int
    payload: bytes
    signature: bytes
    protected: bytes

    def __post_init__(self) -> None:
        _check_kid(self.kid)
        _check_content_type(self.content_type)
        if type(self.schema_version) is not int:
            raise MalformedMessage("schema_version must be an int")
        for name in ("payload", "signature", "protected"):
            if not isinstance(getattr(self, name), bytes):
                raise MalformedMessage(f"Envelope.{name} must be bytes")

    def sig_structure(self) -> bytes:
        """The exact bytes the signature covers."""
        return sig_structure(self.protected, self.payload)


def _check_kid(kid: object) -> str:
    try:
        return validate_id(kid, what="kid")  # type: ignore[arg-type]
    except TopicError as exc:
        raise MalformedMessage(str(exc)) from exc


def _check_content_type(ct: object) -> str:
    if not isinstance(ct, str) or _CONTENT_TYPE_RE.fullmatch(ct) is None:
        raise MalformedMessage("content type must be 1-128 printable ASCII characters")
    return ct


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """``Sig_structure`` for COSE_Sign1 with empty external AAD (RFC 9052 section 4.4)."""
    return dumps_canonical(["Signature1", protected, b"", payload])


def sign(
    payload: bytes,
    *,
    signing_key: nacl.signing.SigningKey,
    kid: str,
    content_type: str,
    max_size: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """Sign ``payload``; returns a tagged COSE_Sign1 (tag 18, alg -8, headers protected).

    Raises :class:`LimitExceeded` if the result would exceed ``max_size``
    (receivers would drop it), :class:`MalformedMessage` for a bad kid or
    content type.
    """
    if not isinstance(payload, bytes):
        raise MalformedMessage(f"payload must be bytes, got {type(payload).__name__}")
    protected = dumps_canonical(
        {
            HDR_ALG: ALG_EDDSA,
            HDR_CONTENT_TYPE: _check_content_type(content_type),
            HDR_KID: _check_kid(kid).encode("ascii"),
            HDR_SCHEMA_VERSION: SCHEMA_VERSION,
        }
    )
    signature = signing_key.sign(sig_structure(protected, payload)).signature
    out = dumps_canonical(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]))
    if len(out) > max_size:
        raise LimitExceeded(f"envelope of {len(out)} bytes exceeds the limit of {max_size}")
    return out


def peek(data: bytes, *, max_size: int = MAX_ENVELOPE_BYTES) -> Envelope:
    """Decode and check the structure of an envelope WITHOUT verifying the signature.

    Use it to read the ``kid`` and pick the key; never act on the payload.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"envelope must be bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise LimitExceeded(f"envelope of {len(data)} bytes exceeds the limit of {max_size}")
    item = loads_strict(bytes(data), what="envelope", allow_tags=True, max_depth=8)
    if isinstance(item, cbor2.CBORTag):
        if item.tag != COSE_SIGN1_TAG:
            raise MalformedMessage(f"CBOR tag {item.tag} is not COSE_Sign1 (18)")
        item = item.value
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise MalformedMessage("envelope is not a 4-element COSE_Sign1 array")
    protected, unprotected, payload, signature = item
    if not isinstance(protected, bytes) or not protected:
        raise MalformedMessage("protected header must be a non-empty byte string")
    phdr = loads_strict(protected, what="protected header", max_depth=4)
    if not isinstance(phdr, Mapping) or not isinstance(unprotected, Mapping):
        raise MalformedMessage("COSE headers must be maps")
    if HDR_CRIT in unprotected:
        raise MalformedMessage("crit must be in the protected header")
    if set(phdr) & set(unprotected):
        raise MalformedMessage("a header label appears in both protected and unprotected headers")
    if phdr.get(HDR_ALG) != ALG_EDDSA or type(phdr.get(HDR_ALG)) is not int:
        raise BadSignature(f"algorithm {phdr.get(HDR_ALG)!r} is not EdDSA (-8) in protected header")
    crit = phdr.get(HDR_CRIT)
    if crit is not None and (
        not isinstance(crit, list | tuple)
        or not crit
        or any(type(c) not in (int, str) or c not in _UNDERSTOOD for c in crit)
    ):
        raise MalformedMessage("protected header marks a label we do not understand as critical")
    version = phdr.get(HDR_SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise MalformedMessage(f"schema version {version!r} is not {SCHEMA_VERSION}")
    kid_raw = phdr.get(HDR_KID, unprotected.get(HDR_KID))
    if not isinstance(kid_raw, bytes):
        raise MalformedMessage("kid missing or not a byte string")
    try:
        kid = kid_raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("kid is not ASCII") from exc
    if not isinstance(payload, bytes):
        raise MalformedMessage("payload must be an attached byte string")
    if not isinstance(signature, bytes) or len(signature) != _SIGNATURE_LEN:
        raise MalformedMessage("signature must be 64 bytes (Ed25519)")
    return Envelope(
        kid=kid,
        content_type=phdr.get(HDR_CONTENT_TYPE),  # type: ignore[arg-type]  # checked in __post_init__
        schema_version=version,
        payload=payload,
        signature=signature,
        protected=protected,
    )


def verify(
    data: bytes,
    *,
    verify_key: nacl.signing.VerifyKey,
    max_size: int = MAX_ENVELOPE_BYTES,
    expected_kid: str | None = None,
) -> Envelope:
    """Decode, check and verify an envelope; returns it only if the signature is valid.

    Raises :class:`LimitExceeded`, :class:`MalformedMessage` or
    :class:`BadSignature` (wrong key, altered bytes, wrong algorithm, or a kid
    other than ``expected_kid`` when one is given).
    """
    return check_signature(
        peek(data, max_size=max_size), verify_key=verify_key, expected_kid=expected_kid
    )


def check_signature(
    env: Envelope, *, verify_key: nacl.signing.VerifyKey, expected_kid: str | None = None
) -> Envelope:
    """Verify the signature of an envelope from :func:`peek` (no second parse).

    ``peek`` + ``check_signature`` is exactly :func:`verify`; use it when the
    kid must be read first to choose the key. Raises :class:`BadSignature`.
    """
    if expected_kid is not None and env.kid != expected_kid:
        raise BadSignature(f"kid {env.kid!r} is not the expected {expected_kid!r}")
    try:
        verify_key.verify(env.sig_structure(), env.signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise BadSignature(f"signature of kid {env.kid!r} does not verify") from exc
    return env

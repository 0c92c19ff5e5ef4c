"""Message types of the wire protocol and the seal / open helpers.

Every message is a frozen dataclass that validates itself when built (bad
values raise :class:`MalformedMessage`), has ``encode() -> bytes`` (canonical
CBOR payload) and ``decode(data, *, limits=...)`` (raises only
:class:`ProtocolError` subclasses, on any input), and a ``CONTENT_TYPE``
that goes into the COSE protected header.

=====================  ==============================================  ====================
message                content type                                    module
=====================  ==============================================  ====================
``ActivationBatch``    ``application/vnd.splitfed.activations+cbor``   :mod:`.training`
``GradientBatch``      ``application/vnd.splitfed.gradients+cbor``     :mod:`.training`
``ClientWeights``      ``application/vnd.splitfed.client-weights+cbor``  :mod:`.training`
``Command``            ``application/vnd.splitfed.command+cbor``       :mod:`.control`
``DeviceState``        ``application/vnd.splitfed.device-state+cbor``  :mod:`.control`
``Prediction``         ``application/vnd.splitfed.prediction+cbor``    :mod:`.control`
``Endorsement``        ``application/vnd.splitfed.endorsed+cbor``      :mod:`.control`
``LedgerProof``        ``application/vnd.splitfed.ledger-proof+cbor``  :mod:`.ledger_msgs`
``ModelAnnouncement``  ``application/vnd.splitfed.model+cbor``         :mod:`.ledger_msgs`
=====================  ==============================================  ====================

:func:`seal` = encode + sign; :func:`open_sealed` = verify + decode by the
(signed) content type. The caller still decides whether the signer (``kid``)
may send this message: e.g. a gateway checks ``envelope.kid == msg.device``
(use :func:`unseal` to get both).
"""

from __future__ import annotations

from typing import Final

import nacl.signing

from protocol.control import Command, DeviceState, Endorsement, Prediction
from protocol.envelope import MAX_ENVELOPE_BYTES, Envelope, sign, verify
from protocol.errors import MalformedMessage
from protocol.ledger_msgs import LedgerProof, ModelAnnouncement, weights_digest
from protocol.tensor import DEFAULT_LIMITS, TensorLimits
from protocol.training import ActivationBatch, ClientWeights, DpParams, GradientBatch

__all__ = [
    "MESSAGE_TYPES",
    "ActivationBatch",
    "ClientWeights",
    "Command",
    "DeviceState",
    "DpParams",
    "Endorsement",
    "GradientBatch",
    "LedgerProof",
    "Message",
    "ModelAnnouncement",
    "Prediction",
    "decode_any",
    "open_sealed",
    "seal",
    "unseal",
    "weights_digest",
]

Message = (
    ActivationBatch
    | GradientBatch
    | ClientWeights
    | Command
    | DeviceState
    | Prediction
    | Endorsement
    | LedgerProof
    | ModelAnnouncement
)

MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.CONTENT_TYPE: cls
    for cls in (
        ActivationBatch,
        GradientBatch,
        ClientWeights,
        Command,
        DeviceState,
        Prediction,
        Endorsement,
        LedgerProof,
        ModelAnnouncement,
    )
}


def decode_any(
    payload: bytes, content_type: str, *, limits: TensorLimits = DEFAULT_LIMITS
) -> Message:
    """Decode a payload by its content type; unknown types are :class:`MalformedMessage`."""
    cls = MESSAGE_TYPES.get(content_type) if isinstance(content_type, str) else None
    if cls is None:
        raise MalformedMessage(f"unknown content type {str(content_type)[:128]!r}")
    return cls.decode(payload, limits=limits)


def seal(
    msg: Message,
    *,
    signing_key: nacl.signing.SigningKey,
    kid: str,
    max_size: int = MAX_ENVELOPE_BYTES,
) -> bytes:
    """Encode ``msg`` and sign it as a COSE_Sign1 with the message's content type."""
    if type(msg) not in MESSAGE_TYPES.values():
        raise MalformedMessage(f"cannot seal a {type(msg).__name__}")
    return sign(
        msg.encode(),
        signing_key=signing_key,
        kid=kid,
        content_type=msg.CONTENT_TYPE,
        max_size=max_size,
    )


def unseal(
    data: bytes,
    *,
    verify_key: nacl.signing.VerifyKey,
    limits: TensorLimits = DEFAULT_LIMITS,
    max_size: int = MAX_ENVELOPE_BYTES,
    expected_kid: str | None = None,
) -> tuple[Envelope, Message]:
    """Verify and decode; returns the envelope (for ``kid``) and the message."""
    env = verify(data, verify_key=verify_key, max_size=max_size, expected_kid=expected_kid)
    return env, decode_any(env.payload, env.content_type, limits=limits)


def open_sealed(
    data: bytes,
    *,
    verify_key: nacl.signing.VerifyKey,
    limits: TensorLimits = DEFAULT_LIMITS,
    max_size: int = MAX_ENVELOPE_BYTES,
    expected_kid: str | None = None,
) -> Message:
    """Verify the signature, then decode by content type. Raises ProtocolError subclasses."""
    return unseal(
        data,
        verify_key=verify_key,
        limits=limits,
        max_size=max_size,
        expected_kid=expected_kid,
    )[1]

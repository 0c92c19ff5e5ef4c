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
from protocol.envelope import (
    CONTENT_TYPE_ENDORSED,
    ENDORSEMENT_OVERHEAD,
    MAX_ENVELOPE_BYTES,
    Envelope,
    check_signature,
    peek,
    sign,
)
from protocol.errors import LimitExceeded, MalformedMessage
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


def _default_max(content_type: str) -> int:
    """4 MiB; an endorsement may carry a 4 MiB device envelope plus its own fields."""
    if content_type == CONTENT_TYPE_ENDORSED:
        return MAX_ENVELOPE_BYTES + ENDORSEMENT_OVERHEAD
    return MAX_ENVELOPE_BYTES


def seal(
    msg: Message,
    *,
    signing_key: nacl.signing.SigningKey,
    kid: str,
    max_size: int | None = None,
) -> bytes:
    """Encode ``msg`` and sign it as a COSE_Sign1 with the message's content type.

    ``max_size`` defaults to :data:`MAX_ENVELOPE_BYTES` (plus
    :data:`ENDORSEMENT_OVERHEAD` for an :class:`Endorsement`).
    """
    if type(msg) not in MESSAGE_TYPES.values():
        raise MalformedMessage(f"cannot seal a {type(msg).__name__}")
    return sign(
        msg.encode(),
        signing_key=signing_key,
        kid=kid,
        content_type=msg.CONTENT_TYPE,
        max_size=_default_max(msg.CONTENT_TYPE) if max_size is None else max_size,
    )


def unseal(
    data: bytes,
    *,
    verify_key: nacl.signing.VerifyKey,
    limits: TensorLimits = DEFAULT_LIMITS,
    max_size: int | None = None,
    expected_kid: str | None = None,
) -> tuple[Envelope, Message]:
    """Verify and decode; returns the envelope (for ``kid``) and the message.

    With the default ``max_size`` the size is checked twice: against the
    largest allowed size before decoding, and against the limit of the
    envelope's content type before the signature is checked.
    """
    limit = MAX_ENVELOPE_BYTES + ENDORSEMENT_OVERHEAD if max_size is None else max_size
    env = peek(data, max_size=limit)
    if max_size is None and len(data) > _default_max(env.content_type):
        raise LimitExceeded(f"envelope of {len(data)} bytes exceeds the limit of its type")
    check_signature(env, verify_key=verify_key, expected_kid=expected_kid)
    return env, decode_any(env.payload, env.content_type, limits=limits)


def open_sealed(
    data: bytes,
    *,
    verify_key: nacl.signing.VerifyKey,
    limits: TensorLimits = DEFAULT_LIMITS,
    max_size: int | None = None,
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

"""One admission path for a signed message: size, header, signature, decode, policy.

Theory of operation
-------------------
Every receiver of a COSE-signed message (the gateway for its devices, the
server for gateway endorsements and the device envelopes inside them) opens
it with :func:`admit`, in this fixed order, stopping at the first failure:

1. **size**: more than ``max_size`` bytes is refused before any parsing;
2. **header**: :func:`protocol.envelope.peek` decodes the COSE structure and
   the protected header only (kid, content type, algorithm); the content type
   must be one of ``types`` - checked from the header, before any key lookup;
3. **key**: ``key_for(envelope)`` picks the sender's key (the caller's
   registry; it may refuse, e.g. an unknown or unreachable kid);
4. **signature**: Ed25519 over the exact signed bytes
   (:func:`protocol.envelope.check_signature`, so a third-party exception
   never escapes); nothing of the payload has been decoded yet;
5. **decode**: the payload schema, tensor limits and finiteness - only for a
   message whose signature verified, so an attacker without a key cannot make
   the receiver decode tensors at all;
6. **policy**: ``policy(envelope, message)`` - the caller's checks on a
   signed, well-formed message (revocation, impersonation, replay, session,
   DP); it returns a :class:`Refused` or ``None``.

The same rules apply to both parties (h11's rule): a sender's
:func:`protocol.messages.seal` produces exactly what :func:`admit` accepts.
The envelope is parsed once; the result carries it, the message and the
original bytes (a gateway forwards those unchanged).

The result is a value, never an exception for bad input: :class:`Opened` or
:class:`Refused`, whose ``reason`` is a metric label (``oversize``,
``malformed``, ``limit_exceeded``, ``unexpected_type``, ``bad_signature``, or
what ``key_for``/``policy`` chose) and whose ``error`` is the
:class:`protocol.errors.ProtocolError` behind it, if any. Exceptions other
than ``ProtocolError`` from the callbacks propagate (bugs, or errors the
caller chose not to translate).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar, cast

import nacl.signing

from protocol import envelope as env_mod
from protocol.errors import BadSignature, LimitExceeded, MalformedMessage, ProtocolError
from protocol.messages import MESSAGE_TYPES, Message
from protocol.tensor import DEFAULT_LIMITS, TensorLimits

__all__ = [
    "BAD_SIGNATURE",
    "LIMIT",
    "MALFORMED",
    "OVERSIZE",
    "UNEXPECTED_TYPE",
    "Opened",
    "Refused",
    "admit",
]

OVERSIZE: Final = "oversize"
MALFORMED: Final = "malformed"
LIMIT: Final = "limit_exceeded"
UNEXPECTED_TYPE: Final = "unexpected_type"
BAD_SIGNATURE: Final = "bad_signature"

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a message was not admitted; ``kid`` is the claimed signer once the header is read."""

    reason: str
    detail: str
    kid: str | None = None
    error: ProtocolError | None = None


@dataclass(frozen=True, slots=True)
class Opened(Generic[M]):
    """An admitted message: the verified envelope, the decoded message, the original bytes."""

    envelope: env_mod.Envelope
    message: M
    data: bytes


KeyFor = Callable[[env_mod.Envelope], "nacl.signing.VerifyKey | Refused"]


def admit(
    data: bytes,
    *,
    types: tuple[type[M], ...],
    key_for: KeyFor,
    policy: Callable[[env_mod.Envelope, M], Refused | None] | None = None,
    max_size: int = env_mod.MAX_ENVELOPE_BYTES,
    limits: TensorLimits = DEFAULT_LIMITS,
) -> Opened[M] | Refused:
    """Open one signed message in the fixed order of the module docstring."""
    if len(data) > max_size:
        return Refused(OVERSIZE, f"{len(data)} bytes > {max_size}")
    try:
        env = env_mod.peek(data, max_size=max_size)
    except LimitExceeded as exc:
        return Refused(LIMIT, str(exc), error=exc)
    except ProtocolError as exc:
        return Refused(MALFORMED, str(exc), error=exc)
    cls = _type_of(env.content_type, types)
    if cls is None:
        if env.content_type in MESSAGE_TYPES:
            return Refused(UNEXPECTED_TYPE, env.content_type, env.kid)
        unknown = MalformedMessage(f"unknown content type {env.content_type[:128]!r}")
        return Refused(MALFORMED, str(unknown), env.kid, unknown)
    key = key_for(env)
    if isinstance(key, Refused):
        return key
    try:
        env_mod.check_signature(env, verify_key=key)
    except BadSignature as exc:
        return Refused(BAD_SIGNATURE, f"signature does not verify with {env.kid}'s key",
                       env.kid, exc)  # fmt: skip
    try:
        msg = cast(M, cls.decode(env.payload, limits=limits))  # the decode of type M
    except LimitExceeded as exc:
        return Refused(LIMIT, str(exc), env.kid, exc)
    except ProtocolError as exc:
        return Refused(MALFORMED, str(exc), env.kid, exc)
    if policy is not None:
        refused = policy(env, msg)
        if refused is not None:
            return refused
    return Opened(env, msg, bytes(data))


def _type_of(content_type: str, types: tuple[type[M], ...]) -> type[M] | None:
    for cls in types:
        if content_type == cls.CONTENT_TYPE:
            return cls
    return None

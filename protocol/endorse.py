"""Gateway endorsement of device envelopes, and the protocol's signer ids (pure).

The gateway forwards a device's message to the server *unchanged*: the
forwarded message is a COSE_Sign1 by the gateway (content type
``ENDORSED``, ``kid`` = :func:`gateway_kid`) over a
:class:`protocol.control.Endorsement` (org, gateway, gateway seq, and the
device's original signed bytes, byte for byte). The server checks both signatures: the
endorsement says "this gateway admitted it" (and which organisation it came
through), the inner signature proves what the device sent, so a gateway
cannot alter activations, labels or DP parameters without the server
noticing. A gateway *can* drop or delay messages; that is not covered.

Ledger identities contain a ``/`` (``<org>/gateway``), which COSE kids in
this protocol may not, so the kid is ``<org>.gateway``. The server signs as
:data:`SERVER_KID`. An endorsement may add up to
:data:`protocol.envelope.ENDORSEMENT_OVERHEAD` bytes around the device's
envelope (the broker's message size limit is sized by the same constant).
"""

from __future__ import annotations

import nacl.signing

from protocol import envelope as env_mod
from protocol.control import Endorsement
from protocol.errors import BadSignature, MalformedMessage

__all__ = [
    "SERVER_KID",
    "endorse",
    "endorsement_refusal",
    "gateway_identity",
    "gateway_kid",
    "open_endorsement",
    "org_of_gateway_kid",
]

#: the COSE kid of the central server (commands, gradients, model halves, announcements)
SERVER_KID = "server"
_SUFFIX = ".gateway"
_MAX_ENDORSED = env_mod.MAX_ENVELOPE_BYTES + env_mod.ENDORSEMENT_OVERHEAD


def gateway_kid(org: str) -> str:
    """The COSE kid a gateway signs with: ``<org>.gateway``."""
    return f"{org}{_SUFFIX}"


def gateway_identity(org: str) -> str:
    """The gateway's ledger identity: ``<org>/gateway``."""
    return f"{org}/gateway"


def org_of_gateway_kid(kid: str) -> str:
    """Inverse of :func:`gateway_kid`; :class:`MalformedMessage` if not a gateway kid."""
    if not kid.endswith(_SUFFIX) or len(kid) == len(_SUFFIX):
        raise MalformedMessage(f"kid {kid!r} is not a gateway kid")
    return kid[: -len(_SUFFIX)]


def endorse(
    device_bytes: bytes, *, signing_key: nacl.signing.SigningKey, org: str, seq: int
) -> bytes:
    """Wrap the device's original bytes in an :class:`Endorsement` signed by the gateway.

    ``seq`` is the gateway's own monotonic sequence number (the server keeps
    a replay window per gateway).
    """
    msg = Endorsement(org=org, gateway=gateway_kid(org), seq=seq, envelope=device_bytes)
    return env_mod.sign(
        msg.encode(),
        signing_key=signing_key,
        kid=gateway_kid(org),
        content_type=Endorsement.CONTENT_TYPE,
        max_size=_MAX_ENDORSED,
    )


def open_endorsement(data: bytes, *, gateway_key: nacl.signing.VerifyKey, org: str) -> Endorsement:
    """Verify the endorsement by ``org``'s gateway; return it (inner bytes NOT verified).

    The caller verifies ``result.envelope`` with the device's registered
    key. Raises :class:`BadSignature` / :class:`MalformedMessage` /
    :class:`LimitExceeded`.
    """
    env = env_mod.verify(
        data,
        verify_key=gateway_key,
        max_size=_MAX_ENDORSED,
        expected_kid=gateway_kid(org),
    )
    if env.content_type != Endorsement.CONTENT_TYPE:
        raise BadSignature(f"content type {env.content_type!r} is not an endorsement")
    msg = Endorsement.decode(env.payload)
    problem = endorsement_refusal(msg, org)
    if problem is not None:
        raise problem
    return msg


def endorsement_refusal(msg: Endorsement, org: str) -> BadSignature | None:
    """Why a verified endorsement by ``org``'s gateway must still be refused, if it must.

    The signed fields must name the signer: the organisation and its gateway kid.
    """
    if msg.org != org or msg.gateway != gateway_kid(org):
        return BadSignature(f"endorsement names {msg.org}/{msg.gateway}, signed by {org}")
    return None

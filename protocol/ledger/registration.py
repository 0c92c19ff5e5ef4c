"""Device registration requests: proof that the device holds its key.

``splitfed-agent provision`` writes one: canonical CBOR
``{"p": payload, "s": sig}`` with payload ``{"v": 1, "org", "device", "pk",
"caps", "t"}`` signed by the *device* key (domain-separated). An org admin
wraps it in a ``device_register`` transaction; the contract checks this
signature, so an admin cannot register a key whose owner did not ask for it,
and the org in the request must be the admin's own org.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from protocol.errors import InvalidTransaction
from protocol.ledger.codec import REGISTRATION_DOMAIN, dumps, loads_canonical

__all__ = ["RegistrationRequest", "make_registration_request", "verify_registration_request"]

_EMPTY: Mapping[str, Any] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationRequest:
    org: str
    device: str
    pubkey_hex: str
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    time_ns: int = 0

    def __post_init__(self) -> None:
        for name in ("org", "device"):
            v = getattr(self, name)
            if not v or len(v) > 64 or "/" in v or "+" in v or "#" in v:
                raise InvalidTransaction(f"registration {name} id {v!r} is not a valid id")
        if len(self.pubkey_hex) != 64:
            raise InvalidTransaction("registration public key must be 32 bytes")


def make_registration_request(
    *,
    signing_key: nacl.signing.SigningKey,
    org: str,
    device: str,
    capabilities: Mapping[str, Any] = _EMPTY,
) -> bytes:
    """A registration request signed by the device's own key."""
    payload = dumps(
        {
            "v": 1,
            "org": org,
            "device": device,
            "pk": bytes(signing_key.verify_key),
            "caps": dict(capabilities),
            "t": time.time_ns(),
        }
    )
    sig = signing_key.sign(REGISTRATION_DOMAIN + payload).signature
    raw = dumps({"p": payload, "s": sig})
    verify_registration_request(raw)
    return raw


def verify_registration_request(data: bytes) -> RegistrationRequest:
    """Decode and check the device's signature; :class:`InvalidTransaction` if bad."""
    outer = loads_canonical(data, what="registration request")
    if not isinstance(outer, dict) or set(outer) != {"p", "s"}:
        raise InvalidTransaction("registration request must be a map with keys p, s")
    payload, sig = outer["p"], outer["s"]
    if not isinstance(payload, bytes) or not isinstance(sig, bytes):
        raise InvalidTransaction("registration request fields have the wrong type")
    p = loads_canonical(payload, what="registration payload")
    if (
        not isinstance(p, dict)
        or set(p) != {"v", "org", "device", "pk", "caps", "t"}
        or p["v"] != 1
        or not isinstance(p["pk"], bytes)
        or len(p["pk"]) != 32
        or not isinstance(p["org"], str)
        or not isinstance(p["device"], str)
        or not isinstance(p["caps"], dict)
        or not isinstance(p["t"], int)
    ):
        raise InvalidTransaction("registration payload has the wrong fields")
    try:
        nacl.signing.VerifyKey(p["pk"]).verify(REGISTRATION_DOMAIN + payload, sig)
    except nacl.exceptions.BadSignatureError as exc:
        raise InvalidTransaction("registration request is not signed by the device key") from exc
    return RegistrationRequest(
        org=p["org"],
        device=p["device"],
        pubkey_hex=p["pk"].hex(),
        capabilities=p["caps"],
        time_ns=p["t"],
    )

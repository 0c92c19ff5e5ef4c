"""Human-readable summaries of envelopes, for ``splitfed inspect`` and logs.

A summary is a JSON-serialisable dict: the envelope header, whether the
signature was checked, and the message with every tensor reduced to dtype,
shape and (floats only) min / max / mean. Labels are reduced to dtype and
shape, byte strings to their length and SHA-256: a summary never contains
label values, keys, signatures or raw payload bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

import nacl.signing
import numpy as np

from protocol.envelope import MAX_ENVELOPE_BYTES, Envelope, peek, verify
from protocol.messages import Endorsement, Message, decode_any
from protocol.tensor import DEFAULT_LIMITS, TensorLimits

__all__ = ["summarize_envelope", "summarize_message"]

_PRIVATE_ARRAYS = frozenset({"labels"})


def _tensor(arr: np.ndarray, *, values: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
    if values and arr.dtype.kind == "f":
        wide = arr.astype(np.float64)
        out.update(min=float(wide.min()), max=float(wide.max()), mean=float(wide.mean()))
    return out


def _value(name: str, value: object) -> object:
    if isinstance(value, np.ndarray):
        return _tensor(value, values=name not in _PRIVATE_ARRAYS)
    if isinstance(value, bytes):
        return {"bytes": len(value), "sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, tuple):
        return [_value(name, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _value(str(k), v) for k, v in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _value(f.name, getattr(value, f.name)) for f in fields(value)}
    return value


def _header(env: Envelope, size: int) -> dict[str, Any]:
    return {
        "kid": env.kid,
        "content_type": env.content_type,
        "schema_version": env.schema_version,
        "alg": "EdDSA",
        "envelope_bytes": size,
        "payload_bytes": len(env.payload),
    }


def summarize_message(msg: Message) -> dict[str, Any]:
    """The message's fields with tensors and byte strings summarised."""
    out: dict[str, Any] = {"type": type(msg).__name__}
    out.update({f.name: _value(f.name, getattr(msg, f.name)) for f in fields(msg)})
    if isinstance(msg, Endorsement):
        inner = msg.inner()
        out["inner"] = {
            **_header(inner, len(msg.envelope)),
            "signature": "not checked (needs the device key)",
        }
    return out


def summarize_envelope(
    data: bytes,
    *,
    verify_key: nacl.signing.VerifyKey | None = None,
    limits: TensorLimits = DEFAULT_LIMITS,
    max_size: int = MAX_ENVELOPE_BYTES,
) -> dict[str, Any]:
    """Decode (and verify, when a key is given) and summarise; raises ProtocolError subclasses."""
    if verify_key is None:
        env = peek(data, max_size=max_size)
        checked = "not checked (no key given)"
    else:
        env = verify(data, verify_key=verify_key, max_size=max_size)
        checked = "valid"
    msg = decode_any(env.payload, env.content_type, limits=limits)
    return {
        "envelope": _header(env, len(data)),
        "signature": checked,
        "message": summarize_message(msg),
    }

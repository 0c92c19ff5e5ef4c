"""Control messages: command, device state, prediction, gateway endorsement.

CBOR payload schemas (text keys, every key present, ``null`` where optional)::

    Command      {"session": id, "round": uint, "device": id | null, "kind": str,
                  "args": {id: str | int | float}, "seq": uint}
    DeviceState  {"org": id, "device": id, "online": bool, "bd_seq": uint,
                  "model_hash": hex64 | null, "detail": {id: str | int | float}}
    Prediction   {"session": id, "device": id, "seq": uint, "probabilities": tensor}
    Endorsement  {"org": id, "gateway": id, "seq": uint, "envelope": bstr}

``DeviceState`` and ``Prediction`` also have a JSON form (``to_json`` /
``from_json``) for the retained ``state`` and the ``predictions`` topics that
integrators read without a CBOR or COSE library. JSON is unsigned: it is a
convenience view, the signed CBOR form is the evidence.

An :class:`Endorsement` is how a gateway forwards a device's message to the
server: the device's original signed bytes, untouched, inside the gateway's
own signed envelope, so the server can check both signatures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self, TypeVar, get_args

import numpy as np

from protocol._cbor import dumps_canonical
from protocol._fields import (
    Scalar,
    check_keys,
    field_names,
    fields_eq,
    guarded_build,
    loads_json,
    read_map,
    req_bytes,
    req_hex_digest,
    req_id,
    req_int,
    req_literal,
    req_scalar_map,
    set_field,
)
from protocol.envelope import (
    CONTENT_TYPE_COMMAND,
    CONTENT_TYPE_DEVICE_STATE,
    CONTENT_TYPE_ENDORSED,
    CONTENT_TYPE_PREDICTION,
    ENDORSEMENT_OVERHEAD,
    MAX_ENVELOPE_BYTES,
    Envelope,
    peek,
)
from protocol.errors import MalformedMessage
from protocol.tensor import (
    DEFAULT_LIMITS,
    FLOAT_DTYPES,
    TensorLimits,
    check_array,
    decode_tensor,
    encode_tensor,
)

__all__ = ["COMMAND_KINDS", "Command", "CommandKind", "DeviceState", "Endorsement", "Prediction"]

_T = TypeVar("_T")
#: what the server may ask of devices (and gateways relay); the one definition of the kinds
CommandKind = Literal["start_round", "stop_round", "sync", "upload_weights", "load_model", "stop"]
COMMAND_KINDS: tuple[CommandKind, ...] = get_args(CommandKind)


def _simple_decode(
    cls: type[_T], data: bytes, what: str, *, max_size: int = MAX_ENVELOPE_BYTES
) -> _T:
    """Decode a message whose wire map is exactly its fields (no tensors)."""
    m = read_map(data, what, max_size=max_size)
    return guarded_build(what, lambda: cls(**check_keys(m, what, frozenset(field_names(cls)))))


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Server -> devices: a control command; ``device=None`` addresses every device.

    ``seq`` is the issuer's command counter: receivers feed ``(kid, seq)`` to a
    :class:`protocol.replay.ReplayGuard` so that a captured command cannot be
    replayed.
    """

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_COMMAND

    session: str
    round: int
    device: str | None
    kind: CommandKind
    args: Mapping[str, Scalar] = field(default_factory=dict)
    seq: int = 0

    def __post_init__(self) -> None:
        req_id(self.session, "session")
        req_int(self.round, "round")
        if self.device is not None:
            req_id(self.device, "device")
        req_literal(self.kind, "kind", COMMAND_KINDS)
        set_field(self, "args", req_scalar_map(self.args, "args"))
        req_int(self.seq, "seq")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def encode(self) -> bytes:
        m = {n: getattr(self, n) for n in field_names(type(self))}
        m["args"] = dict(self.args)
        return dumps_canonical(m)

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        del limits  # no tensors
        return _simple_decode(cls, data, "command")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceState:
    """Birth (``online=True``) or death certificate of a device, Sparkplug style.

    ``bd_seq`` is incremented by the device for every MQTT session; the death
    certificate registered as Last Will carries the same ``bd_seq`` as the
    birth it ends, so a stale death (from an older session) arriving after a
    new birth is recognisable: ignore a death whose ``bd_seq`` differs from
    the last birth's.
    """

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_DEVICE_STATE

    org: str
    device: str
    online: bool
    bd_seq: int
    model_hash: str | None = None
    detail: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        req_id(self.org, "org")
        req_id(self.device, "device")
        if type(self.online) is not bool:
            raise MalformedMessage("online must be a bool")
        req_int(self.bd_seq, "bd_seq")
        if self.model_hash is not None:
            req_hex_digest(self.model_hash, "model_hash")
        set_field(self, "detail", req_scalar_map(self.detail, "detail"))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def _wire(self) -> dict[str, Any]:
        m = {n: getattr(self, n) for n in field_names(type(self))}
        m["detail"] = dict(self.detail)
        return m

    def encode(self) -> bytes:
        return dumps_canonical(self._wire())

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        del limits
        return _simple_decode(cls, data, "device state")

    def to_json(self) -> bytes:
        """Compact JSON with sorted keys, the same fields as the CBOR map."""
        return json.dumps(self._wire(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        m = loads_json(data, "device state JSON")
        return guarded_build(
            "device state JSON",
            lambda: cls(**check_keys(m, "device state JSON", frozenset(field_names(cls)))),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Prediction:
    """Server -> integrators: class probabilities for the windows of batch ``seq``.

    ``probabilities`` has shape ``(classes,)`` or ``(windows, classes)``, each
    value in [0, 1].
    """

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_PREDICTION

    session: str
    device: str
    seq: int
    probabilities: np.ndarray

    def __post_init__(self) -> None:
        req_id(self.session, "session")
        req_id(self.device, "device")
        req_int(self.seq, "seq")
        p = check_array(self.probabilities, what="probabilities", dtypes=FLOAT_DTYPES, min_rank=1)
        if p.ndim > 2:
            raise MalformedMessage("probabilities must have rank 1 or 2")
        if float(p.min()) < 0.0 or float(p.max()) > 1.0:
            raise MalformedMessage("probabilities must lie in [0, 1]")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def encode(self) -> bytes:
        m: dict[str, object] = {"session": self.session, "device": self.device, "seq": self.seq}
        m["probabilities"] = encode_tensor(self.probabilities)
        return dumps_canonical(m)

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        m = read_map(data, "prediction")
        return guarded_build("prediction", lambda: cls.from_wire(m, limits=limits))

    @classmethod
    def from_wire(cls, m: Mapping[str, Any], *, limits: TensorLimits) -> Self:
        check_keys(m, "prediction", frozenset(field_names(cls)))
        probs = decode_tensor(m["probabilities"], limits=limits)
        return cls(session=m["session"], device=m["device"], seq=m["seq"], probabilities=probs)

    def to_json(self) -> bytes:
        """JSON for the predictions topic; adds ``predicted`` (argmax class per window)."""
        probs = self.probabilities.astype(np.float64)
        m = {
            "session": self.session,
            "device": self.device,
            "seq": self.seq,
            "probabilities": probs.tolist(),
            "predicted": np.argmax(probs, axis=-1).tolist(),
        }
        return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse :meth:`to_json` output; probabilities come back as float32."""
        m = loads_json(data, "prediction JSON")
        return guarded_build("prediction JSON", lambda: cls._from_json_map(m))

    @classmethod
    def _from_json_map(cls, m: Mapping[str, Any]) -> Self:
        keys = frozenset({"session", "device", "seq", "probabilities"})
        check_keys({k: v for k, v in m.items() if k != "predicted"}, "prediction JSON", keys)
        raw = m["probabilities"]
        if not isinstance(raw, list) or not all(
            type(x) in (int, float) or isinstance(x, list) for x in raw
        ):
            raise MalformedMessage("probabilities must be a list of numbers or of lists")
        probs = np.asarray(raw, dtype=np.float64)
        if probs.size > DEFAULT_LIMITS.max_elements:
            raise MalformedMessage("too many probabilities")
        return cls(
            session=m["session"],
            device=m["device"],
            seq=m["seq"],
            probabilities=probs.astype(np.float32),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Endorsement:
    """Gateway -> server: a device envelope, forwarded byte for byte, endorsed by the gateway.

    ``envelope`` must be a structurally valid COSE_Sign1 (checked with
    :func:`protocol.envelope.peek`); the device signature inside is verified
    by the receiver with the device's key, as the gateway did.
    """

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_ENDORSED

    org: str
    gateway: str
    seq: int
    envelope: bytes

    def __post_init__(self) -> None:
        req_id(self.org, "org")
        req_id(self.gateway, "gateway")
        req_int(self.seq, "seq")
        req_bytes(self.envelope, "envelope", max_len=MAX_ENVELOPE_BYTES)
        peek(self.envelope)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def inner(self) -> Envelope:
        """The forwarded envelope's header and payload, signature NOT verified."""
        return peek(self.envelope)

    def encode(self) -> bytes:
        return dumps_canonical({n: getattr(self, n) for n in field_names(type(self))})

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        del limits
        size = MAX_ENVELOPE_BYTES + ENDORSEMENT_OVERHEAD
        return _simple_decode(cls, data, "endorsement", max_size=size)

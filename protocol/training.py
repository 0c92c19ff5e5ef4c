"""Training messages: DP parameters, activation batch, gradient batch, client weights.

CBOR payload schemas (text keys, every key present, ``null`` where optional)::

    DpParams        {"clip_norm": float > 0, "noise_multiplier": float >= 0,
                     "label_mode": "plain" | "randomized_response" | "none",
                     "label_epsilon": float > 0 | null, "mechanism": id}
    ActivationBatch {"session": id, "round": uint, "step": uint, "device": id, "seq": uint,
                     "model_hash": hex64, "dp": DpParams, "activations": tensor,
                     "labels": tensor | null, "epsilon_spent": float >= 0}
    GradientBatch   {"session", "round", "step", "device", "seq", "grad": tensor,
                     "loss": float | null}
    ClientWeights   {"session", "round", "device", "seq", "model_hash",
                     "num_samples": uint >= 1, "weights": [tensor, ...],
                     "weights_dp": "dp_sgd" | "unprotected", "epsilon_spent": float >= 0}

``tensor`` is the map of :mod:`protocol.tensor`. The declared DP parameters
are what the sender *claims* it applied; the receiver checks them against its
policy, it cannot check the noise itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np

from protocol._cbor import dumps_canonical
from protocol._fields import (
    check_keys,
    field_names,
    fields_eq,
    guarded_build,
    read_map,
    req_float,
    req_hex_digest,
    req_id,
    req_int,
    req_literal,
    set_field,
)
from protocol.envelope import (
    CONTENT_TYPE_ACTIVATIONS,
    CONTENT_TYPE_GRADIENTS,
    CONTENT_TYPE_WEIGHTS,
)
from protocol.errors import MalformedMessage
from protocol.tensor import (
    DEFAULT_LIMITS,
    FLOAT_DTYPES,
    INT_DTYPES,
    TensorLimits,
    check_array,
    decode_tensor,
    encode_tensor,
)

__all__ = [
    "LABEL_MODES",
    "PRIVACY_MODES",
    "ActivationBatch",
    "ClientWeights",
    "DpParams",
    "GradientBatch",
]

LABEL_MODES = ("plain", "randomized_response", "none")
# What the session's privacy mode promises about the client half (docs/privacy.md):
# sl-frozen - never updated, never uploaded; sl-dpsgd - changed only by DP-SGD steps
# accounted per batch; fl-dpsgd - record-level DP-FedAvg on the whole model;
# none - explicitly non-private (epsilon is infinite wherever it is shown).
PRIVACY_MODES = ("sl-frozen", "sl-dpsgd", "fl-dpsgd", "none")
WEIGHTS_DP = ("dp_sgd", "unprotected")
MAX_WEIGHT_TENSORS = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class DpParams:
    """Local-DP parameters the sender declares for one activation batch."""

    clip_norm: float
    noise_multiplier: float
    label_mode: Literal["plain", "randomized_response", "none"]
    label_epsilon: float | None
    mode: Literal["sl-frozen", "sl-dpsgd", "fl-dpsgd", "none"]
    mechanism: str = "gaussian"

    def __post_init__(self) -> None:
        req_literal(self.mode, "mode", PRIVACY_MODES)
        set_field(self, "clip_norm", req_float(self.clip_norm, "clip_norm", lo=0.0, lo_open=True))
        set_field(
            self,
            "noise_multiplier",
            req_float(self.noise_multiplier, "noise_multiplier", lo=0.0),
        )
        req_literal(self.label_mode, "label_mode", LABEL_MODES)
        if self.label_mode == "randomized_response":
            eps = req_float(self.label_epsilon, "label_epsilon", lo=0.0, lo_open=True)
            set_field(self, "label_epsilon", eps)
        elif self.label_epsilon is not None:
            raise MalformedMessage("label_epsilon is only meaningful with randomized_response")
        req_id(self.mechanism, "mechanism")
        if (self.mode == "none") != (self.mechanism == "none"):
            raise MalformedMessage(
                f"privacy mode {self.mode!r} contradicts mechanism {self.mechanism!r}"
            )

    def to_wire(self) -> dict[str, object]:
        return {n: getattr(self, n) for n in field_names(DpParams)}

    @classmethod
    def from_wire(cls, obj: object) -> Self:
        m = check_keys(obj, "dp", frozenset(field_names(cls)))
        return cls(**m)


def _check_labels(labels: object, dp: DpParams, batch: int) -> None:
    if dp.label_mode == "none":
        if labels is not None:
            raise MalformedMessage("labels present although label_mode is 'none'")
        return
    arr = check_array(labels, what="labels", dtypes=INT_DTYPES, min_rank=1)
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise MalformedMessage(f"labels must have shape ({batch},), got {arr.shape}")
    if int(arr.min()) < 0:
        raise MalformedMessage("labels must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivationBatch:
    """Device -> server: DP-noised activations of the client half, with labels."""

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_ACTIVATIONS

    session: str
    round: int
    step: int
    device: str
    seq: int
    model_hash: str
    dp: DpParams
    activations: np.ndarray
    labels: np.ndarray | None
    epsilon_spent: float

    def __post_init__(self) -> None:
        _check_header(self)
        req_hex_digest(self.model_hash, "model_hash")
        if not isinstance(self.dp, DpParams):
            raise MalformedMessage("dp must be DpParams")
        acts = check_array(self.activations, what="activations", dtypes=FLOAT_DTYPES, min_rank=1)
        _check_labels(self.labels, self.dp, acts.shape[0])
        set_field(self, "epsilon_spent", req_float(self.epsilon_spent, "epsilon_spent", lo=0.0))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def encode(self) -> bytes:
        m: dict[str, object] = {n: getattr(self, n) for n in _HEADER}
        m.update(
            model_hash=self.model_hash,
            dp=self.dp.to_wire(),
            activations=encode_tensor(self.activations),
            labels=None if self.labels is None else encode_tensor(self.labels),
            epsilon_spent=self.epsilon_spent,
        )
        return dumps_canonical(m)

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        m = read_map(data, "activation batch")
        return guarded_build("activation batch", lambda: cls.from_wire(m, limits=limits))

    @classmethod
    def from_wire(cls, m: Mapping[str, Any], *, limits: TensorLimits) -> Self:
        check_keys(m, "activation batch", frozenset(field_names(cls)))
        labels = m["labels"]
        return cls(
            **_header_kwargs(m),
            model_hash=m["model_hash"],
            dp=DpParams.from_wire(m["dp"]),
            activations=decode_tensor(m["activations"], limits=limits),
            labels=None if labels is None else decode_tensor(labels, limits=limits),
            epsilon_spent=m["epsilon_spent"],
        )


_HEADER = ("session", "round", "step", "device", "seq")


def _check_header(msg: Any) -> None:
    req_id(msg.session, "session")
    req_int(msg.round, "round")
    if hasattr(msg, "step"):
        req_int(msg.step, "step")
    req_id(msg.device, "device")
    req_int(msg.seq, "seq")


def _header_kwargs(m: Mapping[str, Any], names: tuple[str, ...] = _HEADER) -> dict[str, Any]:
    return {n: m[n] for n in names}


@dataclass(frozen=True, slots=True, kw_only=True)
class GradientBatch:
    """Server -> device: gradient of the loss w.r.t. the activations of batch ``seq``."""

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_GRADIENTS

    session: str
    round: int
    step: int
    device: str
    seq: int
    grad: np.ndarray
    loss: float | None

    def __post_init__(self) -> None:
        _check_header(self)
        check_array(self.grad, what="grad", dtypes=FLOAT_DTYPES, min_rank=1)
        if self.loss is not None:
            set_field(self, "loss", req_float(self.loss, "loss"))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def encode(self) -> bytes:
        m: dict[str, object] = {n: getattr(self, n) for n in _HEADER}
        m.update(grad=encode_tensor(self.grad), loss=self.loss)
        return dumps_canonical(m)

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        m = read_map(data, "gradient batch")
        return guarded_build("gradient batch", lambda: cls.from_wire(m, limits=limits))

    @classmethod
    def from_wire(cls, m: Mapping[str, Any], *, limits: TensorLimits) -> Self:
        check_keys(m, "gradient batch", frozenset(field_names(cls)))
        return cls(
            **_header_kwargs(m),
            grad=decode_tensor(m["grad"], limits=limits),
            loss=m["loss"],
        )


_WEIGHTS_HEADER = ("session", "round", "device", "seq")


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientWeights:
    """Device -> gateway at round end: the client half's weights for FedAvg."""

    CONTENT_TYPE: ClassVar[str] = CONTENT_TYPE_WEIGHTS

    session: str
    round: int
    device: str
    seq: int
    model_hash: str
    num_samples: int
    weights: tuple[np.ndarray, ...]
    weights_dp: Literal["dp_sgd", "unprotected"]
    epsilon_spent: float

    def __post_init__(self) -> None:
        _check_header(self)
        req_hex_digest(self.model_hash, "model_hash")
        req_int(self.num_samples, "num_samples", lo=1)
        set_field(self, "weights", check_weights(self.weights))
        req_literal(self.weights_dp, "weights_dp", WEIGHTS_DP)
        set_field(self, "epsilon_spent", req_float(self.epsilon_spent, "epsilon_spent", lo=0.0))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, field_names(type(self)))

    def encode(self) -> bytes:
        m: dict[str, object] = {n: getattr(self, n) for n in _WEIGHTS_HEADER}
        m.update(
            model_hash=self.model_hash,
            num_samples=self.num_samples,
            weights=[encode_tensor(w) for w in self.weights],
            weights_dp=self.weights_dp,
            epsilon_spent=self.epsilon_spent,
        )
        return dumps_canonical(m)

    @classmethod
    def decode(cls, data: bytes, *, limits: TensorLimits = DEFAULT_LIMITS) -> Self:
        m = read_map(data, "client weights")
        return guarded_build("client weights", lambda: cls.from_wire(m, limits=limits))

    @classmethod
    def from_wire(cls, m: Mapping[str, Any], *, limits: TensorLimits) -> Self:
        check_keys(m, "client weights", frozenset(field_names(cls)))
        return cls(
            **_header_kwargs(m, _WEIGHTS_HEADER),
            model_hash=m["model_hash"],
            num_samples=m["num_samples"],
            weights=decode_weights(m["weights"], limits=limits),
            weights_dp=m["weights_dp"],
            epsilon_spent=m["epsilon_spent"],
        )


def check_weights(weights: object) -> tuple[np.ndarray, ...]:
    """A non-empty tuple (lists are accepted and converted) of finite float arrays."""
    if not isinstance(weights, tuple | list) or not weights:
        raise MalformedMessage("weights must be a non-empty tuple of arrays")
    if len(weights) > MAX_WEIGHT_TENSORS:
        raise MalformedMessage(f"more than {MAX_WEIGHT_TENSORS} weight tensors")
    return tuple(
        check_array(w, what=f"weights[{i}]", dtypes=FLOAT_DTYPES) for i, w in enumerate(weights)
    )


def decode_weights(obj: object, *, limits: TensorLimits) -> tuple[np.ndarray, ...]:
    if not isinstance(obj, list | tuple) or not obj or len(obj) > MAX_WEIGHT_TENSORS:
        raise MalformedMessage(f"weights must be an array of 1..{MAX_WEIGHT_TENSORS} tensors")
    return tuple(decode_tensor(w, limits=limits) for w in obj)

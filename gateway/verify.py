"""Admission pipeline: is this MQTT message from one of our devices acceptable?

Theory of operation. :meth:`AdmissionPipeline.admit` takes the raw bytes and
the topic of one message and runs the checks in this fixed order, stopping
at the first failure:

1. size limit (before any parsing);
2. topic: ``splitfed/v1/{our org}/{device}/up``;
3. decode: COSE structure, payload schema, tensor limits, finiteness;
4. signature: the ``kid`` must be a device registered for our org (ledger
   state, cached per block) and the signature must verify with its key;
5. the device is not revoked;
6. the topic's device id and the message's device field equal the ``kid``
   (a registered key cannot publish under another device's id);
7. replay window per device, *checked but not yet marked*: a stale
   sequence number is rejected (``replay``), one more than
   :data:`protocol.replay.MAX_SEQ_JUMP` above the device's highest is
   rejected (``seq_jump``); an exact duplicate (QoS 1 redelivery) yields
   :class:`Duplicate`, which is neither forwarded again nor counted as an
   attack;
8. session, round and model hash of the current round (the round is not
   checked for unlabelled windows: split inference runs between rounds
   too); tensor shapes and label range for that model;
9. DP parameters at least as strong as the session policy; declared epsilon
   within the budget;
10. only now the sequence number is marked in the replay window. A signed
    message that fails 8 or 9 leaves the window as it was, so it cannot
    turn the device's later genuine messages into "replays".

The result is a value, never an exception: :class:`Accepted`,
:class:`Duplicate` or :class:`Rejected` with a :class:`RejectReason`. Only
:class:`protocol.errors.ProtocolError` (bad input) and
:class:`protocol.errors.LedgerError` (registry unreachable) are caught; any
other exception is a bug and propagates. Security claim: an accepted message
was signed by the registered, unrevoked key of the device named in its
topic, once, for the current session/round/model; the gateway forwards the
device's original bytes, so the server can re-check the signature itself.
Not covered: a device whose key is stolen, and the truth of declared DP
parameters. Not thread-safe: one pipeline per admission thread.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import nacl.exceptions
import numpy as np

from gateway.policy import SessionPolicy
from protocol import envelope as env_mod
from protocol import topics
from protocol.errors import (
    LedgerError,
    LimitExceeded,
    ProtocolError,
    ReplayError,
    SeqJumpError,
)
from protocol.messages import ActivationBatch, ClientWeights, decode_any
from protocol.replay import MAX_SEQ_JUMP, ReplayGuard, Verdict
from protocol.tensor import TensorLimits
from service.registry import CachedRegistry

__all__ = [
    "Accepted",
    "AdmissionPipeline",
    "Duplicate",
    "Outcome",
    "RejectReason",
    "Rejected",
]


class RejectReason(enum.Enum):
    """Why a message was dropped; the value is the ``reason`` metric label."""

    OVERSIZE = "oversize"
    BAD_TOPIC = "bad_topic"
    MALFORMED = "malformed"
    LIMIT = "limit_exceeded"
    UNEXPECTED_TYPE = "unexpected_type"
    UNREGISTERED = "unregistered"
    REGISTRY_UNAVAILABLE = "registry_unavailable"
    BAD_SIGNATURE = "bad_signature"
    REVOKED = "revoked"
    IMPERSONATION = "impersonation"
    REPLAY = "replay"
    SEQ_JUMP = "seq_jump"
    NO_SESSION = "no_session"
    WRONG_SESSION = "wrong_session"
    WRONG_ROUND = "wrong_round"
    WRONG_MODEL = "wrong_model"
    WRONG_SHAPE = "wrong_shape"
    DP_BELOW_POLICY = "dp_below_policy"
    BUDGET_EXCEEDED = "budget_exceeded"


Message = ActivationBatch | ClientWeights


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A message that passed every check; ``data`` are the device's original bytes."""

    device: str
    message: Message
    envelope: env_mod.Envelope
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Duplicate:
    """A redelivery of a sequence number already seen from this device."""

    device: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """A dropped message: reason, claimed device (if known) and a short detail."""

    reason: RejectReason
    device: str | None
    detail: str


Outcome = Accepted | Duplicate | Rejected


class AdmissionPipeline:
    """The ordered admission checks of one organisation's gateway."""

    def __init__(
        self,
        *,
        org: str,
        registry: CachedRegistry,
        replay: ReplayGuard,
        max_size: int = env_mod.MAX_ENVELOPE_BYTES,
        limits: TensorLimits | None = None,
        max_seq_jump: int = MAX_SEQ_JUMP,
    ) -> None:
        self.org = org
        self.registry = registry
        self.replay = replay
        self.max_seq_jump = max_seq_jump
        self.max_size = max_size
        self.limits = limits if limits is not None else TensorLimits()

    def admit(
        self, data: bytes, topic: str, *, policy: SessionPolicy | None, round_no: int | None
    ) -> Outcome:
        """Run every check on one message; see the module docstring for the order."""
        if len(data) > self.max_size:
            return Rejected(
                reason=RejectReason.OVERSIZE,
                device=_topic_device(topic),
                detail=f"{len(data)} bytes > {self.max_size}",
            )
        try:
            t = topics.parse(topic)
        except ProtocolError as exc:
            return Rejected(reason=RejectReason.BAD_TOPIC, device=None, detail=str(exc))
        if t.kind != "up" or t.org != self.org or t.device is None:
            return Rejected(reason=RejectReason.BAD_TOPIC, device=t.device, detail=topic)
        try:
            env = env_mod.peek(data, max_size=self.max_size)
            msg = decode_any(env.payload, env.content_type, limits=self.limits)
        except LimitExceeded as exc:
            return Rejected(reason=RejectReason.LIMIT, device=t.device, detail=str(exc))
        except ProtocolError as exc:
            return Rejected(reason=RejectReason.MALFORMED, device=t.device, detail=str(exc))
        if not isinstance(msg, ActivationBatch | ClientWeights):
            return Rejected(
                reason=RejectReason.UNEXPECTED_TYPE, device=t.device, detail=type(msg).__name__
            )
        try:
            info, vk = self.registry.lookup(self.org, env.kid)
        except LedgerError as exc:
            return Rejected(
                reason=RejectReason.REGISTRY_UNAVAILABLE, device=t.device, detail=str(exc)
            )
        if info is None or vk is None:
            return Rejected(
                reason=RejectReason.UNREGISTERED,
                device=t.device,
                detail=f"kid {env.kid!r} not registered for {self.org}",
            )
        try:  # same check as protocol.envelope.verify, without parsing the bytes again
            vk.verify(env.sig_structure(), env.signature)
        except nacl.exceptions.BadSignatureError:
            return Rejected(
                reason=RejectReason.BAD_SIGNATURE,
                device=t.device,
                detail=f"signature does not verify with {env.kid}'s key",
            )
        if info.revoked:
            return Rejected(reason=RejectReason.REVOKED, device=env.kid, detail="key revoked")
        if t.device != env.kid or msg.device != env.kid:
            return Rejected(
                reason=RejectReason.IMPERSONATION,
                device=env.kid,
                detail=f"kid {env.kid} published as topic {t.device}, message device {msg.device}",
            )
        try:
            if self.replay.check(env.kid, msg.seq, max_jump=self.max_seq_jump) is Verdict.DUPLICATE:
                return Duplicate(device=env.kid, seq=msg.seq)
        except SeqJumpError as exc:
            return Rejected(reason=RejectReason.SEQ_JUMP, device=env.kid, detail=str(exc))
        except ReplayError as exc:
            return Rejected(reason=RejectReason.REPLAY, device=env.kid, detail=str(exc))
        bad = _check_session(msg, policy, round_no)
        if bad is not None:
            return Rejected(reason=bad[0], device=env.kid, detail=bad[1])
        self.replay.observe(env.kid, msg.seq)  # checked above; nothing ran in between
        return Accepted(device=env.kid, message=msg, envelope=env, data=data)


def _topic_device(topic: str) -> str | None:
    """The device id in a topic, for labelling a rejection only (never trusted)."""
    try:
        return topics.parse(topic).device
    except ProtocolError:
        return None


def _check_session(
    msg: Message, policy: SessionPolicy | None, round_no: int | None
) -> tuple[RejectReason, str] | None:
    if policy is None:
        return RejectReason.NO_SESSION, "no session is active at this gateway"
    if msg.session != policy.session:
        return RejectReason.WRONG_SESSION, f"session {msg.session!r}"
    inference = isinstance(msg, ActivationBatch) and msg.labels is None
    if not inference and (round_no is None or msg.round != round_no):
        return RejectReason.WRONG_ROUND, f"round {msg.round}, open round {round_no}"
    spec = policy.models.get(msg.model_hash)
    if spec is None:
        return RejectReason.WRONG_MODEL, f"model hash {msg.model_hash[:16]}"
    if msg.epsilon_spent > policy.max_epsilon:
        return (
            RejectReason.BUDGET_EXCEEDED,
            f"epsilon {msg.epsilon_spent:.3f} > {policy.max_epsilon}",
        )
    if isinstance(msg, ClientWeights):
        if policy.privacy_mode == "sl-frozen":
            return (RejectReason.DP_BELOW_POLICY,
                    "sl-frozen session: client weights are never uploaded")
        shapes = tuple(tuple(w.shape) for w in msg.weights)
        if shapes != spec.client_weight_shapes:
            return RejectReason.WRONG_SHAPE, "client weight shapes differ from the manifest"
        if policy.require_dp_weights and msg.weights_dp != "dp_sgd":
            return RejectReason.DP_BELOW_POLICY, f"weights_dp={msg.weights_dp}"
        return None
    a = msg.activations
    if (
        a.ndim < 1
        or tuple(a.shape[1:]) != spec.activation_shape
        or not 1 <= a.shape[0] <= spec.max_batch
    ):
        return (
            RejectReason.WRONG_SHAPE,
            f"activations {a.shape}, expected (B, *{spec.activation_shape})",
        )
    if msg.labels is not None:
        lab = msg.labels
        if lab.shape != (a.shape[0],) or (
            lab.size and (int(np.min(lab)) < 0 or int(np.max(lab)) >= spec.num_classes)
        ):
            return RejectReason.WRONG_SHAPE, "labels do not match the batch or class count"
    dp = msg.dp
    if dp.mode != policy.privacy_mode:
        return (RejectReason.DP_BELOW_POLICY,
                f"privacy mode {dp.mode}, session says {policy.privacy_mode}")
    if dp.noise_multiplier < policy.min_noise_multiplier:
        return (
            RejectReason.DP_BELOW_POLICY,
            f"noise multiplier {dp.noise_multiplier} < {policy.min_noise_multiplier}",
        )
    if policy.max_clip_norm is not None and dp.clip_norm > policy.max_clip_norm:
        return RejectReason.DP_BELOW_POLICY, f"clip norm {dp.clip_norm} > {policy.max_clip_norm}"
    if dp.label_mode not in policy.label_modes:
        return RejectReason.DP_BELOW_POLICY, f"label mode {dp.label_mode}"
    if (
        dp.label_mode == "randomized_response"
        and policy.max_label_epsilon is not None
        and (dp.label_epsilon is None or dp.label_epsilon > policy.max_label_epsilon)
    ):
        return RejectReason.DP_BELOW_POLICY, f"label epsilon {dp.label_epsilon}"
    return None

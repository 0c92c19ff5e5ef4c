"""Admission pipeline: is this MQTT message from one of our devices acceptable?

Theory of operation. :meth:`AdmissionPipeline.admit` takes the raw bytes and
the topic of one message and runs the checks in this fixed order, stopping
at the first failure; steps 1 and 3-5 are the shared
:func:`protocol.admit.admit` (the server opens envelopes the same way):

1. size limit (before any parsing);
2. topic: ``splitfed/v1/{our org}/{device}/up``;
3. header only: COSE structure, kid, content type (an activation batch or
   client weights);
4. signature: the ``kid`` must be a device registered for our org (ledger
   state, cached per block) and the signature must verify with its key -
   before any tensor is decoded;
5. decode: payload schema, tensor limits, finiteness;
6. the device is not revoked;
7. the topic's device id and the message's device field equal the ``kid``
   (a registered key cannot publish under another device's id);
8. replay window per device, *checked but not yet marked*: a stale
   sequence number is rejected (``replay``), one more than
   :data:`protocol.replay.MAX_SEQ_JUMP` above the device's highest is
   rejected (``seq_jump``); an exact duplicate (QoS 1 redelivery) yields
   :class:`Duplicate`, which is neither forwarded again nor counted as an
   attack;
9. session, round and model hash of the current round (the round is not
   checked for unlabelled windows: split inference runs between rounds
   too); tensor shapes and label range for that model; DP parameters at
   least as strong as the session policy; declared epsilon within the budget;
10. only now the sequence number is marked in the replay window. A signed
    message that fails 9 leaves the window as it was, so it cannot
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

import nacl.signing

from gateway.policy import SessionPolicy
from protocol import envelope as env_mod
from protocol import topics
from protocol.admit import Refused, admit
from protocol.errors import LedgerError, ProtocolError, ReplayError, SeqJumpError
from protocol.messages import ActivationBatch, ClientWeights
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
        topic_device = t.device
        revoked: list[bool] = []

        def key_for(env: env_mod.Envelope) -> nacl.signing.VerifyKey | Refused:
            try:
                info, vk = self.registry.lookup(self.org, env.kid)
            except LedgerError as exc:
                return Refused(RejectReason.REGISTRY_UNAVAILABLE.value, str(exc))
            if info is None or vk is None:
                return Refused(RejectReason.UNREGISTERED.value,
                               f"kid {env.kid!r} not registered for {self.org}")  # fmt: skip
            revoked.append(info.revoked)
            return vk

        def check(env: env_mod.Envelope, msg: Message) -> Refused | None:
            return self._policy(env, msg, topic_device, policy, round_no, revoked[0])

        out = admit(
            data, types=_TYPES, key_for=key_for, policy=check, max_size=self.max_size,
            limits=self.limits,
        )  # fmt: skip
        if isinstance(out, Refused):
            if out.reason == _DUPLICATE:
                return Duplicate(device=out.kid or "", seq=int(out.detail))
            device = out.kid if out.reason in _POLICY_REASONS else topic_device
            return Rejected(reason=RejectReason(out.reason), device=device, detail=out.detail)
        self.replay.observe(out.envelope.kid, out.message.seq)  # checked in _policy
        return Accepted(device=out.envelope.kid, message=out.message, envelope=out.envelope,
                        data=out.data)  # fmt: skip

    def _policy(
        self,
        env: env_mod.Envelope,
        msg: Message,
        topic_device: str,
        policy: SessionPolicy | None,
        round_no: int | None,
        revoked: bool,
    ) -> Refused | None:
        """Steps 5-9 on a signed, decoded message (the replay window is only checked)."""
        kid = env.kid
        if revoked:
            return Refused(RejectReason.REVOKED.value, "key revoked", kid)
        if topic_device != kid or msg.device != kid:
            return Refused(
                RejectReason.IMPERSONATION.value,
                f"kid {kid} published as topic {topic_device}, message device {msg.device}",
                kid,
            )
        try:
            if self.replay.check(kid, msg.seq, max_jump=self.max_seq_jump) is Verdict.DUPLICATE:
                return Refused(_DUPLICATE, str(msg.seq), kid)
        except SeqJumpError as exc:
            return Refused(RejectReason.SEQ_JUMP.value, str(exc), kid)
        except ReplayError as exc:
            return Refused(RejectReason.REPLAY.value, str(exc), kid)
        bad = _check_session(msg, policy, round_no)
        if bad is not None:
            return Refused(bad[0].value, bad[1], kid)
        return None


_TYPES: tuple[type[Message], ...] = (ActivationBatch, ClientWeights)
_DUPLICATE = "duplicate"  # not a rejection: turned into Duplicate by admit()
_POLICY_REASONS = frozenset({
    RejectReason.REVOKED.value, RejectReason.IMPERSONATION.value, RejectReason.SEQ_JUMP.value,
    RejectReason.REPLAY.value, RejectReason.NO_SESSION.value, RejectReason.WRONG_SESSION.value,
    RejectReason.WRONG_ROUND.value, RejectReason.WRONG_MODEL.value,
    RejectReason.WRONG_SHAPE.value, RejectReason.DP_BELOW_POLICY.value,
    RejectReason.BUDGET_EXCEEDED.value,
})  # fmt: skip


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
            lab.size and (int(lab.min()) < 0 or int(lab.max()) >= spec.num_classes)
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

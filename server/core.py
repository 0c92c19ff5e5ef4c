"""The central server as a sans-I/O state machine: messages in, actions out.

Theory of operation. Phases of a round::

    TRAINING --(round policy: quorum/deadline)--> COLLECTING --(all group
    aggregates or deadline)--> PROPOSED --(ledger: finalised)--> next round
                                        \\--(ledger: rejected)--> next round
                                             from the last finalised weights

* ``on_central_up(topic, payload)``: a gateway endorsement is verified with
  that gateway's key, then the device envelope inside with the device's
  registered key (end to end: a gateway cannot alter what a device sent),
  then the device's sequence number against the server's own replay window.
  An activation batch with labels trains the group's server half and yields
  a server-signed :class:`GradientBatch` on ``central/{org}/down``; one
  without labels yields a :class:`Prediction` (JSON) on the device's
  ``predictions`` topic (split inference). A forwarded client-weights upload
  marks the device finished. A gateway-signed :class:`ClientWeights` is that
  group's round aggregate.
* ``tick(now)``: applies the round policy and the collection deadline.
* ``on_proposal_status(status)``: the decision on the proposal (from the
  app's :class:`server.proposals.ProposalLifecycle`): finalised -> next round
  from it; rejected, expired or abandoned -> next round from the last
  finalised version (the next proposal is numbered above every version on
  the ledger, ``last_proposed``, and so supersedes the undecided one).
* ``adopt(proposal, halves)``: a restarted server resumes at its own
  proposal still open on the ledger (halves from its state directory) and
  announces the candidate again.

Drops are counted (``splitfed_server_rejected_total{reason}``), never raised.
Not thread-safe: the app drives it from one thread.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.signing
import numpy as np

from models.fedavg import AggregationError, WeightedUpdate, fedavg
from protocol import envelope as env_mod
from protocol import topics
from protocol.admit import Refused, admit
from protocol.control import CommandKind
from protocol.effects import Publish
from protocol.endorse import SERVER_KID, endorsement_refusal, gateway_kid, org_of_gateway_kid
from protocol.envelope import MAX_MQTT_PAYLOAD
from protocol.errors import LedgerError, ModelError, ProtocolError
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    Endorsement,
    GradientBatch,
    ModelAnnouncement,
    Prediction,
    seal,
    weights_digest,
)
from protocol.replay import MAX_SEQ_JUMP, ReplayGuard, Verdict
from server.aggregate import CutResult, GroupAggregate, aggregate_groups
from server.proposals import Proposal, ProposalStatus, next_version
from server.round_policy import RoundPolicy, RoundTracker
from server.sfl import SplitTrainer
from service.metrics import MetricsRegistry
from service.registry import CachedRegistry

__all__ = ["Phase", "ServerCore", "SessionPlan", "SubmitTx"]

log = logging.getLogger(__name__)

Evaluator = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitTx:
    """Submit a ledger tx of ``kind`` with ``body``."""

    kind: str
    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPlan:
    """What the server runs: from the ledger session record and the model manifest."""

    session: str
    rounds: int
    groups: Mapping[str, str]  # org -> group
    model_id: str
    cut: int
    client_sha256: str
    server_sha256: str
    client_weight_shapes: tuple[tuple[int, ...], ...]
    lr: float = 0.01
    collect_deadline_s: float = 60.0
    # the session's privacy mode (protocol.training.PRIVACY_MODES): in sl-frozen no device
    # uploads its client half, so a round ends on the server's own schedule with the
    # client half unchanged
    privacy_mode: str = "sl-frozen"
    # extra server-half steps per received batch, on batches drawn from the rows already
    # received this session (post-processing of released rows: no privacy cost)
    replay_steps: int = 0
    replay_capacity: int = 4096
    # batches each device trains per round (sent with start_round); a device that sent
    # that many counts as finished, which is how sl-frozen rounds (no uploads) close early
    steps_per_round: int | None = None


# How often a round in which no batch arrived is opened again before it is given up
# (each time with the round policy's full deadline).
MAX_EMPTY_EXTENSIONS = 3


class Phase(enum.Enum):
    IDLE = "idle"
    TRAINING = "training"
    COLLECTING = "collecting"
    PROPOSED = "proposed"
    DONE = "done"


class ServerCore:
    """Split-federated training coordinator; see the module docstring."""

    def __init__(
        self,
        *,
        plan: SessionPlan,
        signing_key: nacl.signing.SigningKey,
        gateway_keys: Mapping[str, nacl.signing.VerifyKey],
        registry: CachedRegistry,
        trainer: SplitTrainer,
        client_weights: Sequence[np.ndarray],
        evaluator: Evaluator,
        round_policy: RoundPolicy,
        metrics: MetricsRegistry,
        start_seq: int = 0,
        version: int = 0,
        last_proposed: int = 0,
    ) -> None:
        self.plan = plan
        self._key = signing_key
        self._gw_keys = dict(gateway_keys)
        self.registry = registry
        self.trainer = trainer
        self.client_weights = tuple(np.array(w) for w in client_weights)
        self._final_client = self.client_weights
        self._final_server = trainer.weights()
        self._evaluate = evaluator
        self._policy = round_policy
        self.metrics = metrics
        self._seq = start_seq
        self.version = version  # last finalised version
        self._proposed: Proposal | None = None
        self._last_proposed = last_proposed  # highest version on the ledger (any proposer)
        self._candidate_server: tuple[np.ndarray, ...] | None = None
        self.replay = ReplayGuard()  # per gateway kid: endorsement and aggregate seqs
        self._dev_replay: dict[str, ReplayGuard] = {}  # per org, per device
        self.phase = Phase.IDLE
        self.round = -1
        self.tracker: RoundTracker | None = None
        self._aggs: dict[str, GroupAggregate] = {}
        self._round_rows = 0
        self._device_batches: dict[str, int] = {}
        self._extensions = 0
        self._replay: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._replay_rng = np.random.default_rng()
        self._collect_since = 0.0
        self.history: list[dict[str, Any]] = []
        for name, kind, text in [
            ("batches", "counter", "Activation batches trained, by org"),
            ("predictions", "counter", "Split-inference windows answered, by org"),
            ("rejected", "counter", "Messages dropped, by reason"),
            ("round", "gauge", "Current round"),
            ("accuracy_ratio", "gauge", "Held-out accuracy (0..1) of the last aggregated model"),
            ("model_version", "gauge", "Last finalised model version"),
        ]:
            metrics.declare(name, kind, text)

    # -- helpers -------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _drop(self, reason: str, detail: str) -> list[Publish | SubmitTx]:
        self.metrics.inc("rejected", {"reason": reason})
        log.debug("dropped: %s (%s)", reason, detail[:200])
        return []

    def _broadcast(
        self, kind: CommandKind, args: Mapping[str, str | int | float] | None = None
    ) -> list[Publish | SubmitTx]:
        out: list[Publish | SubmitTx] = []
        cmd = Command(
            session=self.plan.session,
            round=self.round,
            device=None,
            kind=kind,
            args=dict(args or {}),
            seq=self._next_seq(),
        )
        data = seal(cmd, signing_key=self._key, kid=SERVER_KID)
        for org in sorted(self.plan.groups):
            out.append(Publish(topic=topics.central_down(org), payload=data))
        return out

    def _replay_train(self, group: str, acts: np.ndarray, labels: np.ndarray) -> None:
        """Keep the batch's rows and take ``replay_steps`` steps on rows drawn from the buffer.

        Every row in the buffer was released (and charged) by its device; training on it
        again is post-processing, so the server half learns from each noisy row several
        times at no privacy cost. The gradient sent back is the live batch's only.
        """
        if self.plan.replay_steps <= 0:
            return
        buf = self._replay.setdefault(group, [])
        buf.extend(zip(acts, labels, strict=True))
        if len(buf) > self.plan.replay_capacity:
            del buf[: len(buf) - self.plan.replay_capacity]
        n = acts.shape[0]
        for _ in range(self.plan.replay_steps):
            idx = self._replay_rng.choice(len(buf), size=min(n, len(buf)), replace=False)
            xs = np.stack([buf[i][0] for i in idx])
            ys = np.array([buf[i][1] for i in idx], dtype=np.int32)
            try:
                self.trainer.train(group, xs, ys)
            except ModelError as exc:
                log.warning("replay step refused: %s", exc)
                return

    def _device_replay(self, org: str) -> ReplayGuard:
        return self._dev_replay.setdefault(org, ReplayGuard())

    # -- rounds --------------------------------------------------------------------
    def start_round(self, round_no: int, now: float) -> list[Publish | SubmitTx]:
        """Open ``round_no`` at every gateway."""
        if round_no >= self.plan.rounds:
            self.phase = Phase.DONE
            return []
        self.round = round_no
        self.phase = Phase.TRAINING
        self.tracker = RoundTracker(policy=self._policy, started_at=now)
        self._aggs = {}
        self._round_rows = 0
        self.metrics.set("round", round_no)
        self._device_batches = {}
        self._extensions = 0
        return self._broadcast("start_round", self._start_args())

    def _start_args(self) -> dict[str, str | int | float]:
        args: dict[str, str | int | float] = {"version": self.version, "lr": self.plan.lr}
        if self.plan.steps_per_round is not None:
            args["steps"] = self.plan.steps_per_round
        return args

    def tick(self, now: float) -> list[Publish | SubmitTx]:
        """Apply the round policy and the collection deadline."""
        if self.phase is Phase.TRAINING and self.tracker is not None:
            d = self.tracker.decide(now)
            if d.close and self._round_rows == 0 and self._extensions < MAX_EMPTY_EXTENSIONS:
                # Nothing arrived before the deadline (broker, ledger or gateways were down):
                # closing now would skip this round number for good. Open it again with a
                # fresh deadline; devices that missed start_round join, the others ignore it.
                self._extensions += 1
                log.warning("round %d: no batch before the deadline; extending it (%d of %d)",
                            self.round, self._extensions, MAX_EMPTY_EXTENSIONS)
                self.tracker = RoundTracker(policy=self._policy, started_at=now)
                return self._broadcast("start_round", self._start_args())
            if d.close:
                log.info(
                    "round %d closes (%s): %d of %d devices finished",
                    self.round,
                    d.reason.value if d.reason else "?",
                    d.finished,
                    d.participants,
                )
                self.phase = Phase.COLLECTING
                self._collect_since = now
                return self._broadcast("stop_round", {"commit": int(d.commit)})
        if self.phase is Phase.COLLECTING:
            groups = set(self.plan.groups.values())
            if (
                self.plan.privacy_mode == "sl-frozen"
                or set(self._aggs) >= groups
                or now - self._collect_since >= self.plan.collect_deadline_s
            ):
                return self._finish_round(now)
        return []

    def _finish_round(self, now: float) -> list[Publish | SubmitTx]:
        shapes = {self.plan.cut: self.plan.client_weight_shapes}
        res: CutResult | None
        if self.plan.privacy_mode == "sl-frozen":
            # the client half is frozen: nothing to average, the round trained the server half
            res = (CutResult(cut=self.plan.cut, weights=self.client_weights,
                             num_samples=self._round_rows,
                             groups=tuple(sorted(set(self.plan.groups.values()))), refused={})
                   if self._round_rows > 0 else None)
        else:
            try:
                res = aggregate_groups(self._group_aggregates(), shapes)[self.plan.cut]
            except AggregationError as exc:
                log.error("aggregation failed: %s", exc)
                res = None
        loss = self.trainer.mean_loss()
        server_w = self.trainer.end_round()
        if res is None or res.weights is None:
            log.warning(
                "round %d produced no aggregate; next round from version %d",
                self.round,
                self.version,
            )
            self.trainer.set_weights(self._final_server)
            return self.start_round(self.round + 1, now)
        acc = float(self._evaluate(res.weights, server_w))
        self.metrics.set("accuracy_ratio", acc)
        self.client_weights = res.weights
        self._candidate_server = tuple(np.array(w) for w in server_w)
        ver = next_version(latest_finalised=self.version, last_proposed=self._last_proposed)
        self._last_proposed = ver
        self._proposed = Proposal(
            session_id=self.plan.session,
            version=ver,
            round=self.round,
            weights_sha256=weights_digest(res.weights),
            client_sha256=self.plan.client_sha256,
            server_sha256=self.plan.server_sha256,
            metrics={"accuracy": acc, "samples": float(res.num_samples)},
        )
        self.history.append(
            {
                "round": self.round,
                "accuracy": acc,
                "version": ver,
                "groups": list(res.groups),
                "refused": dict(res.refused),
                "loss": loss,
            }
        )
        self.phase = Phase.PROPOSED
        return [
            SubmitTx(kind="model_propose", body=self._proposed.body()),
            *self._announce_candidate(server_w, res.num_samples),
        ]

    def _announce_candidate(
        self, server_w: tuple[np.ndarray, ...], samples: int
    ) -> list[Publish | SubmitTx]:
        """Send the candidate to every gateway: server half first, then the client half.

        Validator gateways evaluate the pair on their own held-out data and
        vote; every gateway keeps the client half and publishes it (retained,
        with the ledger proof) once the version is finalised.
        """
        p = self._proposed
        assert p is not None
        half = ClientWeights(
            session=p.session_id,
            round=self.round,
            device=SERVER_KID,
            seq=self._next_seq(),
            model_hash=p.server_sha256,
            num_samples=max(1, samples),
            weights=server_w,
            weights_dp="unprotected",
            epsilon_spent=0.0,
        )
        ann = ModelAnnouncement(
            session=p.session_id,
            version=p.version,
            model_id=self.plan.model_id,
            cut=self.plan.cut,
            client_sha256=p.client_sha256,
            client_artifact=None,
            weights=self.client_weights,
            weights_sha256=p.weights_sha256,
            proof=None,
        )
        out: list[Publish | SubmitTx] = []
        for data in (
            seal(half, signing_key=self._key, kid=SERVER_KID),
            seal(ann, signing_key=self._key, kid=SERVER_KID),
        ):
            out += [
                Publish(topic=topics.central_down(org), payload=data)
                for org in sorted(self.plan.groups)
            ]
        return out

    def candidate_halves(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """``(client half, server half)`` of the pending proposal (saved before proposing)."""
        assert self._proposed is not None and self._candidate_server is not None
        return self.client_weights, self._candidate_server

    def adopt(
        self,
        proposal: Proposal,
        client: Sequence[np.ndarray],
        server: Sequence[np.ndarray],
        now: float,
    ) -> list[Publish | SubmitTx]:
        """Resume at ``proposal`` (already on the ledger): a restarted server's own candidate.

        The candidate is announced again, so gateways that restarted too (or a
        validator whose vote is still missing) get it; nothing is proposed.
        """
        self.round = proposal.round
        self.phase = Phase.PROPOSED
        self.tracker = None
        self._proposed = proposal
        self._last_proposed = max(self._last_proposed, proposal.version)
        self.client_weights = tuple(np.array(w) for w in client)
        self._candidate_server = tuple(np.array(w) for w in server)
        self.trainer.set_weights(self._candidate_server)
        self.metrics.set("round", proposal.round)
        samples = int(proposal.metrics.get("samples", 1))
        return self._announce_candidate(self._candidate_server, samples)

    def reannounce(self) -> list[Publish | SubmitTx]:
        """The pending candidate to every gateway again (validators missing a vote)."""
        if self.phase is not Phase.PROPOSED or self._candidate_server is None:
            return []
        assert self._proposed is not None
        samples = int(self._proposed.metrics.get("samples", 1))
        return self._announce_candidate(self._candidate_server, samples)

    def note_proposed(self, version: int) -> None:
        """The ledger holds a proposal of ``version`` (any proposer): number the next above it."""
        self._last_proposed = max(self._last_proposed, version)

    def load_finalised(
        self, version: int, client: Sequence[np.ndarray], server: Sequence[np.ndarray]
    ) -> None:
        """Start from a finalised version (a restarted server, weights from its state file)."""
        self.version = version
        self.client_weights = tuple(np.array(w) for w in client)
        self._final_client = self.client_weights
        self.trainer.set_weights(server)
        self._final_server = self.trainer.weights()
        self.metrics.set("model_version", version)

    def finalised_halves(self) -> tuple[int, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """``(version, client half, server half)`` of the last finalised version."""
        return self.version, self._final_client, self._final_server

    @property
    def proposal(self) -> Proposal | None:
        return self._proposed

    def on_proposal_status(self, status: ProposalStatus, now: float) -> list[Publish | SubmitTx]:
        """The ledger's verdict on the pending proposal."""
        if self.phase is not Phase.PROPOSED or self._proposed is None:
            return []
        p = self._proposed
        if status is ProposalStatus.FINALISED:
            self.version = p.version
            self._final_client = self.client_weights
            self._final_server = self.trainer.weights()
            self.metrics.set("model_version", p.version)
            return self.start_round(self.round + 1, now)
        if status in (ProposalStatus.REJECTED, ProposalStatus.EXPIRED, ProposalStatus.ABANDONED):
            log.warning(
                "version %d %s; devices keep version %d",
                p.version,
                {
                    ProposalStatus.REJECTED: "rejected by the validators",
                    ProposalStatus.EXPIRED: "not decided before the proposal deadline",
                    ProposalStatus.ABANDONED: "abandoned (superseded, or refused by the ledger)",
                }[status],
                self.version,
            )
            self.client_weights = self._final_client
            self.trainer.set_weights(self._final_server)
            return self.start_round(self.round + 1, now)
        return []

    # -- gateways -----------------------------------------------------------------
    def on_central_up(self, topic: str, payload: bytes) -> list[Publish | SubmitTx]:
        """A message from a gateway: its endorsement, then the device envelope inside.

        Each envelope is opened once, by :func:`protocol.admit.admit` (size, header,
        signature, decode, policy): the gateway's with the gateway key of the topic's
        org, the device's with the key the ledger registered for it.
        """
        try:
            t = topics.parse(topic)
        except ProtocolError as exc:
            return self._drop(type(exc).__name__, str(exc))
        if t.kind != "central_up" or t.org not in self.plan.groups:
            return self._drop("bad_topic", topic)
        org = t.org
        outer = admit(payload, types=_OUTER, max_size=MAX_MQTT_PAYLOAD,
                      key_for=lambda env: self._gateway_key(org, env),
                      policy=lambda env, m: _endorsement_refusal(m, org))  # fmt: skip
        if isinstance(outer, Refused):
            return self._refused(outer)
        if isinstance(outer.message, ClientWeights):
            return self._group_upload(org, outer.envelope, outer.message)
        endo = outer.message
        try:
            if self.replay.observe(gateway_kid(org), endo.seq) is Verdict.DUPLICATE:
                return []
        except ProtocolError as exc:
            return self._drop(type(exc).__name__, str(exc))
        inner = admit(endo.envelope, types=_INNER,
                      key_for=lambda env: self._device_key(org, env),
                      policy=_device_is_signer)  # fmt: skip
        if isinstance(inner, Refused):
            return self._refused(inner)
        msg = inner.message
        try:
            # bounded jump: one signed message must not push the device's window far ahead
            dev_replay = self._device_replay(org)
            if dev_replay.observe(msg.device, msg.seq, max_jump=MAX_SEQ_JUMP) is Verdict.DUPLICATE:
                return []
        except ProtocolError as exc:
            return self._drop(type(exc).__name__, str(exc))
        if isinstance(msg, ClientWeights):
            if self.tracker is not None and msg.round == self.round:
                self.tracker.finished(f"{org}/{msg.device}")
            return []
        return self._activations(org, msg)

    def _gateway_key(self, org: str, env: env_mod.Envelope) -> nacl.signing.VerifyKey | Refused:
        gw_key = self._gw_keys.get(org)
        try:
            if gw_key is None or org_of_gateway_kid(env.kid) != org:
                return Refused("unknown_gateway", env.kid)
        except ProtocolError as exc:
            return Refused(type(exc).__name__, str(exc), env.kid, exc)
        return gw_key

    def _device_key(self, org: str, env: env_mod.Envelope) -> nacl.signing.VerifyKey | Refused:
        try:
            _, vk = self.registry.lookup(org, env.kid)
        except LedgerError as exc:
            return Refused("registry_unavailable", str(exc), env.kid)
        return Refused("unregistered", env.kid, env.kid) if vk is None else vk

    def _refused(self, r: Refused) -> list[Publish | SubmitTx]:
        """Count a refusal; protocol errors keep their class name as the reason label."""
        return self._drop(type(r.error).__name__ if r.error is not None else r.reason, r.detail)

    def _activations(self, org: str, msg: ActivationBatch) -> list[Publish | SubmitTx]:
        group = self.plan.groups[org]
        if msg.model_hash != self.plan.client_sha256:
            return self._drop("wrong_model", msg.model_hash[:16])
        acts = msg.activations.astype(np.float32)
        if msg.labels is None:
            try:
                probs = self.trainer.predict(group, acts)
            except ModelError as exc:
                return self._drop("model_refused", str(exc))
            self.metrics.inc("predictions", {"org": org}, amount=float(acts.shape[0]))
            pred = Prediction(
                session=msg.session,
                device=msg.device,
                seq=msg.seq,
                probabilities=np.asarray(probs, np.float32),
            )
            return [Publish(topic=topics.predictions(org, msg.device), payload=pred.to_json())]
        if (
            self.phase is not Phase.TRAINING
            or msg.session != self.plan.session
            or msg.round != self.round
        ):
            return self._drop("not_training", f"round {msg.round}")
        if self.tracker is not None:
            self.tracker.joined(f"{org}/{msg.device}")
        labels = msg.labels.astype(np.int32)
        try:
            loss, grad = self.trainer.train(group, acts, labels)
        except ModelError as exc:  # shapes/labels the runtime refuses: counted, not fatal
            return self._drop("model_refused", str(exc))
        self._round_rows += acts.shape[0]
        self._replay_train(group, acts, labels)
        who = f"{org}/{msg.device}"
        self._device_batches[who] = self._device_batches.get(who, 0) + 1
        if (self.plan.privacy_mode == "sl-frozen" and self.tracker is not None
                and self.plan.steps_per_round is not None
                and self._device_batches[who] >= self.plan.steps_per_round):
            self.tracker.finished(who)  # nothing to upload: its last batch ends its round
        self.metrics.inc("batches", {"org": org})
        g = GradientBatch(
            session=msg.session,
            round=msg.round,
            step=msg.step,
            device=msg.device,
            seq=msg.seq,
            grad=np.asarray(grad, np.float32),
            loss=float(loss),
        )
        return [
            Publish(
                topic=topics.central_down(org),
                payload=seal(g, signing_key=self._key, kid=SERVER_KID),
            )
        ]

    def _group_upload(
        self, org: str, env: env_mod.Envelope, msg: ClientWeights
    ) -> list[Publish | SubmitTx]:
        """The group's aggregate, signed by its gateway (already verified by admit)."""
        try:
            if self.replay.observe(env.kid, msg.seq) is Verdict.DUPLICATE:
                return []
        except ProtocolError as exc:
            return self._drop(type(exc).__name__, str(exc))
        if (
            msg.session != self.plan.session
            or msg.round != self.round
            or self.phase is not Phase.COLLECTING
        ):
            return self._drop("late_aggregate", f"{org} round {msg.round}")
        self._aggs[org] = GroupAggregate(
            group=org,
            cut=self.plan.cut,
            weights=msg.weights,
            num_samples=msg.num_samples,
            aggregate_sha256=weights_digest(msg.weights),
        )
        return []

    def _group_aggregates(self) -> list[GroupAggregate]:
        """Org uploads combined per group (orgs of one group averaged by samples)."""
        by_group: dict[str, list[GroupAggregate]] = {}
        for org, a in sorted(self._aggs.items()):
            by_group.setdefault(self.plan.groups[org], []).append(a)
        out = []
        for group, items in sorted(by_group.items()):
            ws = (
                items[0].weights
                if len(items) == 1
                else fedavg(
                    [
                        WeightedUpdate(weights=a.weights, num_samples=a.num_samples, source=a.group)
                        for a in items
                    ]
                )
            )
            out.append(
                GroupAggregate(
                    group=group,
                    cut=self.plan.cut,
                    weights=ws,
                    num_samples=sum(a.num_samples for a in items),
                )
            )
        return out


_OUTER: tuple[type[Endorsement | ClientWeights], ...] = (Endorsement, ClientWeights)
_INNER: tuple[type[ActivationBatch | ClientWeights], ...] = (ActivationBatch, ClientWeights)


def _endorsement_refusal(msg: Endorsement | ClientWeights, org: str) -> Refused | None:
    if isinstance(msg, ClientWeights):
        return None
    problem = endorsement_refusal(msg, org)
    return None if problem is None else Refused(type(problem).__name__, str(problem), None, problem)


def _device_is_signer(
    env: env_mod.Envelope, msg: ActivationBatch | ClientWeights
) -> Refused | None:
    if msg.device != env.kid:
        return Refused("unexpected_type", env.content_type, env.kid)
    return None

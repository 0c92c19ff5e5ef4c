"""The gateway as a sans-I/O state machine: messages in, actions out.

Theory of operation. The app feeds :class:`GatewayCore` three kinds of input
and executes the :class:`Publish` / :class:`SubmitRecord` actions it returns:

* ``on_device_up(topic, payload)``: admission (:mod:`gateway.verify`); an
  accepted activation batch becomes a Merkle leaf of the open round (journal
  first) and is forwarded, endorsed, to ``splitfed/v1/central/{org}/up``; an
  accepted client-half upload is kept for the group average and its
  endorsement forwarded too (the server counts it as "device finished").
  Duplicates are dropped silently; rejections are counted
  (``splitfed_gateway_rejected_total{reason}``) and logged at most once
  per device and reason per minute.
* ``on_device_state(topic, payload)``: birth/death JSON; tracked devices and
  an ``events`` line.
* ``on_central_down(payload)``: messages from the server, signature checked
  with the server key: gradients are relayed byte for byte to the device's
  ``down`` topic (the device checks the server signature itself);
  ``start_round`` opens a round and is relayed to the devices;
  ``stop_round`` closes the round: FedAvg of the group, round-record body for
  the ledger, group aggregate (a :class:`ClientWeights` signed by the
  gateway) to the server; other commands are relayed; a finalised
  :class:`ModelAnnouncement` becomes an :class:`Announce` action (the app
  attaches the ledger proof and publishes it retained on ``{org}/model``).

Forwarding and restarts. A forward of a journaled message carries a
:class:`ForwardRef`; the app reports back with :meth:`GatewayCore.on_forwarded`
once the broker acknowledged it, and the round journals that. When a round
is resumed after a restart, every journaled message whose forward was never
acknowledged is forwarded again (the redelivered device message itself is a
duplicate and is dropped). A message is counted in the round record only
when the server's gradient for it is relayed to its device (see
:mod:`gateway.rounds`).

Limits. Messages from the server are size-checked
(:data:`protocol.envelope.MAX_MQTT_PAYLOAD`) before any parsing, like device
messages in :mod:`gateway.verify`.

Persisted counters. Rejections, duplicates and dropped server messages are
counted in the metrics and, when a :class:`CounterStore` is given (the
journal database), also persisted in batches (every
``COUNTER_FLUSH_EVERY`` increments, at every :meth:`GatewayCore.tick` and
at :meth:`GatewayCore.flush_counters`), so a restarted gateway reports
totals across instances; a crash loses at most the unflushed batch.
:meth:`GatewayCore.tick` also writes the "N suppressed" summaries of the log
limiter whose window has closed.

Not thread-safe: the app drives it from one thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import nacl.signing
import numpy as np

from gateway.errors import RoundStateError
from gateway.policy import SessionPolicy
from gateway.ratelimit import LogLimiter
from gateway.rounds import GatewayRound, Phase, RoundJournal
from gateway.verify import Accepted, AdmissionPipeline, Duplicate, Rejected
from models.fedavg import AggregationError
from protocol import topics
from protocol.effects import ForwardRef, Publish
from protocol.endorse import SERVER_KID, endorse, gateway_kid
from protocol.envelope import MAX_MQTT_PAYLOAD
from protocol.errors import ProtocolError, SplitfedError
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    DeviceState,
    GradientBatch,
    ModelAnnouncement,
    seal,
    unseal,
)
from service.metrics import MetricsRegistry

__all__ = [
    "Action",
    "Announce",
    "CounterStore",
    "GatewayCore",
    "SubmitRecord",
]

log = logging.getLogger(__name__)
M_ACCEPTED = "accepted"
M_REJECTED = "rejected"
M_DUPLICATE = "duplicates"
M_SERVER_REJECTED = "server_rejected"
PERSISTED = frozenset({M_REJECTED, M_DUPLICATE, M_SERVER_REJECTED})
COUNTER_FLUSH_EVERY = 256


class CounterStore(Protocol):
    """Durable metric totals, keyed by (name, labels as sorted JSON)."""

    def add_counters(self, increments: Mapping[tuple[str, str], float]) -> None: ...

    def load_counters(self) -> dict[tuple[str, str], float]: ...


M_DEVICE_EPSILON = "splitfed_device_epsilon_spent"  # the one per-device series


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitRecord:
    """Submit a ``round_record`` tx with this body to the ledger."""

    body: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Announce:
    """A proposed model version from the server.

    The app publishes it retained on ``{org}/model`` once the ledger proves
    its finalisation; a validator organisation also evaluates
    (``server_weights`` + the announced client half) and votes.
    """

    announcement: ModelAnnouncement
    server_weights: tuple[np.ndarray, ...] | None = None


Action = Publish | SubmitRecord | Announce


class GatewayCore:
    """One organisation's gateway logic; see the module docstring."""

    def __init__(
        self,
        *,
        org: str,
        group: str,
        signing_key: nacl.signing.SigningKey,
        server_key: nacl.signing.VerifyKey,
        pipeline: AdmissionPipeline,
        journal: RoundJournal,
        metrics: MetricsRegistry,
        limiter: LogLimiter,
        hasher: Callable[[tuple[np.ndarray, ...]], str],
        prior_spend: Callable[[str, str], float],
        start_seq: int = 0,
        counter_store: CounterStore | None = None,
    ) -> None:
        self.org = org
        self.group = group
        self._key = signing_key
        self._server_key = server_key
        self.pipeline = pipeline
        self._journal = journal
        self.metrics = metrics
        self._limiter = limiter
        self._hasher = hasher
        self._prior_spend = prior_spend
        self._seq = start_seq
        self.policy: SessionPolicy | None = None
        self.round: GatewayRound | None = None
        self.devices: dict[str, bool] = {}  # device -> online
        self.block_height = -1
        self._candidate_server: tuple[np.ndarray, ...] | None = None
        for name, kind, text in [
            (M_ACCEPTED, "counter", "Device messages accepted, by type"),
            (M_REJECTED, "counter", "Device messages rejected, by reason"),
            (M_DUPLICATE, "counter", "QoS 1 redeliveries recognised and dropped"),
            ("forwarded", "counter", "Messages forwarded to the server"),
            ("reforwarded", "counter", "Journaled messages forwarded again after a restart"),
            ("trained_samples", "counter", "Rows whose gradient was relayed, by device"),
            ("relayed", "counter", "Server messages relayed to devices, by type"),
            (M_SERVER_REJECTED, "counter", "Server messages dropped, by reason"),
            ("rounds", "counter", "Rounds ended, by outcome"),
            ("round", "gauge", "Current round number (-1: none open)"),
            ("block_height", "gauge", "Last ledger height seen"),
            ("devices_online", "gauge", "Devices whose last state was a birth"),
            (M_DEVICE_EPSILON, "gauge", "Epsilon spent by a device (its last accepted claim)"),
        ]:
            metrics.declare(name, kind, text)
        metrics.set("round", -1)
        self._store = counter_store
        self._pending: dict[tuple[str, str], float] = {}
        if counter_store is not None:
            for (name, labels), value in sorted(counter_store.load_counters().items()):
                if name in PERSISTED and value > 0:
                    metrics.inc(name, json.loads(labels), amount=value)

    # -- helpers ----------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _event(self, kind: str, **fields: Any) -> Publish:
        body = {"event": kind, "org": self.org, "block_height": self.block_height, **fields}
        return Publish(
            topic=topics.events(self.org), payload=json.dumps(body, sort_keys=True).encode(), qos=1
        )

    def _count(self, name: str, labels: Mapping[str, str]) -> None:
        """Increment a persisted counter (metrics now, the store in batches)."""
        self.metrics.inc(name, labels)
        if self._store is None:
            return
        key = (name, json.dumps(dict(labels), sort_keys=True))
        self._pending[key] = self._pending.get(key, 0.0) + 1.0
        if sum(self._pending.values()) >= COUNTER_FLUSH_EVERY:
            self.flush_counters()

    def flush_counters(self) -> None:
        """Write the pending counter increments to the store (one transaction)."""
        if self._store is None or not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            self._store.add_counters(pending)
        except SplitfedError as exc:  # keep counting in memory; retry at the next flush
            for k, v in pending.items():
                self._pending[k] = self._pending.get(k, 0.0) + v
            log.warning("cannot persist counters: %s", exc)

    def tick(self) -> None:
        """Periodic work (the app calls it about once per poll interval)."""
        for s in self._limiter.expired():
            log.warning(
                "%d more messages from %s rejected as %s in the last %.0f s (suppressed)",
                s.suppressed,
                s.device,
                s.reason,
                s.interval,
            )
        self.flush_counters()

    def _reject(self, r: Rejected) -> None:
        self._count(M_REJECTED, {"reason": r.reason.value})
        d = self._limiter.check(r.device, r.reason.value)
        if d.emit:
            log.warning(
                "rejected message from %s: %s (%s); %d similar suppressed",
                r.device or "?",
                r.reason.value,
                r.detail[:200],
                d.suppressed,
            )

    def set_policy(self, policy: SessionPolicy | None) -> None:
        """The active session's admission policy (from the ledger session record)."""
        self.policy = policy

    def on_block(self, height: int) -> list[Action]:
        """A new ledger block: refresh the registry cache (revocations take effect)."""
        if height == self.block_height:
            return []
        self.block_height = height
        self.pipeline.registry.on_block(height)
        self.metrics.set("block_height", height)
        return []

    # -- devices ----------------------------------------------------------------
    def on_device_up(self, topic: str, payload: bytes) -> list[Action]:
        rnd = self.round if self.round is not None and self.round.phase is Phase.OPEN else None
        out = self.pipeline.admit(
            payload, topic, policy=self.policy, round_no=None if rnd is None else rnd.round_no
        )
        if isinstance(out, Rejected):
            self._reject(out)
            return []
        if isinstance(out, Duplicate):
            self._count(M_DUPLICATE, {})
            return []
        return self._accepted(out, rnd)

    def _accepted(self, acc: Accepted, rnd: GatewayRound | None) -> list[Action]:
        msg = acc.message
        self.devices.setdefault(acc.device, True)
        if rnd is None or (isinstance(msg, ActivationBatch) and msg.labels is None):
            # split inference: forwarded, not a training leaf (admit() let only these through
            # without an open round)
            self.metrics.inc(M_ACCEPTED, {"type": "inference"})
            return self._forward(acc.data)
        if isinstance(msg, ActivationBatch):
            new = rnd.add_activation(
                device=acc.device,
                seq=msg.seq,
                data=acc.data,
                rows=int(msg.activations.shape[0]),
                epsilon_total=msg.epsilon_spent,
            )
            kind = "activations"
        else:
            new = (
                rnd.add_weights(
                    device=acc.device,
                    seq=msg.seq,
                    num_samples=msg.num_samples,
                    weights=msg.weights,
                    epsilon_total=msg.epsilon_spent,
                    weights_dp=msg.weights_dp,
                    data=acc.data,
                )
                or None
            )
            kind = "weights"
        if new is None:  # counted before a restart: the journal knows it
            self._count(M_DUPLICATE, {})
            return []
        self.metrics.inc(M_ACCEPTED, {"type": kind})
        self.metrics.set(M_DEVICE_EPSILON, msg.epsilon_spent,
                         {"org": self.org, "device": acc.device})
        ref = ForwardRef(
            session=rnd.session, round_no=rnd.round_no, device=acc.device, seq=msg.seq
        )
        return self._forward(acc.data, ref)

    def _forward(self, data: bytes, ref: ForwardRef | None = None) -> list[Action]:
        self.metrics.inc("forwarded")
        fwd = endorse(data, signing_key=self._key, org=self.org, seq=self._next_seq())
        return [Publish(topic=topics.central_up(self.org), payload=fwd, forward_of=ref)]

    def on_forwarded(self, ref: ForwardRef) -> None:
        """The broker acknowledged the forward ``ref``: it need not be sent again."""
        rnd = self.round
        if rnd is not None and (rnd.session, rnd.round_no) == (ref.session, ref.round_no):
            rnd.mark_forwarded(ref.device, ref.seq)

    def _reforward(self, rnd: GatewayRound) -> list[Action]:
        """After a restart: forward what was journaled but never acknowledged, once."""
        out: list[Action] = []
        for device, seq, data in rnd.unforwarded():
            ref = ForwardRef(session=rnd.session, round_no=rnd.round_no, device=device, seq=seq)
            self.metrics.inc("reforwarded")
            out += self._forward(data, ref)
        if out:
            log.info("forwarding %d journaled messages again after a restart", len(out))
        return out

    def on_device_state(self, topic: str, payload: bytes) -> list[Action]:
        try:
            t = topics.parse(topic)
            st = DeviceState.from_json(payload)
        except ProtocolError as exc:
            self.metrics.inc(M_REJECTED, {"reason": "bad_state"})
            log.debug("bad state message on %s: %s", topic[:100], exc)
            return []
        if t.kind != "state" or t.org != self.org or st.device != t.device or st.org != self.org:
            self.metrics.inc(M_REJECTED, {"reason": "bad_state"})
            return []
        self.devices[st.device] = st.online
        self.metrics.set("devices_online", sum(self.devices.values()))
        return [
            self._event(
                "device_birth" if st.online else "device_death", device=st.device, bd_seq=st.bd_seq
            )
        ]

    # -- server -----------------------------------------------------------------
    def on_central_down(self, payload: bytes) -> list[Action]:
        if len(payload) > MAX_MQTT_PAYLOAD:  # before any parsing
            self._count(M_SERVER_REJECTED, {"reason": "oversize"})
            return []
        try:
            _, msg = unseal(
                payload,
                verify_key=self._server_key,
                expected_kid=SERVER_KID,
                limits=self.pipeline.limits,
            )
        except ProtocolError as exc:
            self._count(M_SERVER_REJECTED, {"reason": type(exc).__name__})
            log.warning("dropped message on central down: %s", exc)
            return []
        if isinstance(msg, GradientBatch):
            self.metrics.inc("relayed", {"type": "gradients"})
            rnd = self.round
            if rnd is not None and (rnd.session, rnd.round_no) == (msg.session, msg.round):
                rows = rnd.mark_trained(msg.device, msg.seq)
                if rows is not None:
                    self.metrics.inc("trained_samples", {"device": msg.device}, amount=rows)
            return [Publish(topic=topics.down(self.org, msg.device), payload=payload)]
        if isinstance(msg, Command):
            return self._command(msg, payload)
        if isinstance(msg, ClientWeights) and msg.device == SERVER_KID:
            self._candidate_server = msg.weights  # the server half of the next announcement
            return []
        if isinstance(msg, ModelAnnouncement) and msg.weights is not None:
            server_w, self._candidate_server = self._candidate_server, None
            return [Announce(announcement=msg, server_weights=server_w)]
        self._count(M_SERVER_REJECTED, {"reason": "unexpected_type"})
        return []

    def _relay(self, cmd: Command, payload: bytes) -> list[Action]:
        targets = [cmd.device] if cmd.device is not None else sorted(self.devices)
        self.metrics.inc("relayed", {"type": f"command_{cmd.kind}"}, amount=len(targets))
        return [Publish(topic=topics.down(self.org, d), payload=payload) for d in targets]

    def _command(self, cmd: Command, payload: bytes) -> list[Action]:
        if cmd.kind == "start_round":
            return self.open_round(cmd.session, cmd.round) + self._relay(cmd, payload)
        if cmd.kind == "stop_round" and cmd.device is None:
            return self._relay(cmd, payload) + self.close_round(cmd.session, cmd.round)
        return self._relay(cmd, payload)

    def open_round(self, session: str, round_no: int) -> list[Action]:
        """Open (or, after a restart, resume) ``round_no``; abandons an older open round."""
        cur = self.round
        if cur is not None and (cur.session, cur.round_no) == (session, round_no):
            return []
        out: list[Action] = []
        if cur is not None and cur.phase is Phase.OPEN:
            cur.abandon(f"superseded by round {round_no}")
            self.metrics.inc("rounds", {"outcome": "abandoned"})
            out.append(self._event("round_abandoned", session=cur.session, round=cur.round_no))
        restored = GatewayRound.restore(
            org=self.org, session=session, round_no=round_no, journal=self._journal
        )
        if restored is not None:
            for dev, seq in restored.seen_items():
                self.pipeline.replay.observe(dev, seq)
            self.round = restored
            if restored.phase is Phase.OPEN:
                out += self._reforward(restored)
        else:
            prior = {d: self._prior_spend(session, d) for d in sorted(self.devices)}
            self.round = GatewayRound(
                org=self.org,
                session=session,
                round_no=round_no,
                journal=self._journal,
                prior_epsilon=prior,
            )
        self.metrics.set("round", round_no)
        out.append(self._event("round_started", session=session, round=round_no))
        return out

    def resume(self, session: str, round_no: int) -> list[Action]:
        """After a restart: continue the journaled round ``round_no`` if it was still open."""
        restored = GatewayRound.restore(
            org=self.org, session=session, round_no=round_no, journal=self._journal
        )
        if restored is None or restored.phase is not Phase.OPEN:
            return []
        for dev, seq in restored.seen_items():
            self.pipeline.replay.observe(dev, seq)
        self.round = restored
        self.metrics.set("round", round_no)
        return [
            self._event(
                "round_resumed", session=session, round=round_no, envelopes=restored.leaf_count
            ),
            *self._reforward(restored),
        ]

    def close_round(self, session: str, round_no: int) -> list[Action]:
        """Aggregate the group, build the record and the group upload; idempotent."""
        rnd = self.round
        if rnd is None or (rnd.session, rnd.round_no) != (session, round_no):
            return []
        try:
            if rnd.phase is Phase.OPEN:
                res = rnd.close(hasher=self._hasher, group=self.group)
            elif rnd.phase is Phase.CLOSED:
                res = rnd.result(hasher=self._hasher, group=self.group)
            else:
                return []
        except (AggregationError, RoundStateError) as exc:
            log.error("round %s/%d cannot close: %s", session, round_no, exc)
            rnd.abandon(str(exc))
            self.metrics.inc("rounds", {"outcome": "abandoned"})
            return [self._event("round_abandoned", session=session, round=round_no)]
        self.metrics.inc("rounds", {"outcome": "closed"})
        self.metrics.set("round", -1)
        if self.policy is not None and self.policy.privacy_mode == "none":
            for v in res.record["devices"].values():  # infinite: recorded as null, not 0
                v["epsilon"] = v["epsilon_total"] = None
        out: list[Action] = [SubmitRecord(body=res.record)]
        if res.aggregate is not None and self.policy is not None:
            model_hash = next(iter(sorted(self.policy.models)))
            upload = ClientWeights(
                session=session,
                round=round_no,
                device=gateway_kid(self.org),
                seq=self._next_seq(),
                model_hash=model_hash,
                num_samples=res.num_samples,
                weights=res.aggregate,
                weights_dp="dp_sgd" if res.weights_dp == "dp_sgd" else "unprotected",
                epsilon_spent=0.0,
            )
            out.append(
                Publish(
                    topic=topics.central_up(self.org),
                    payload=seal(upload, signing_key=self._key, kid=gateway_kid(self.org)),
                )
            )
        eps = {d: v["epsilon_total"] for d, v in res.record["devices"].items()}
        out.append(
            self._event(
                "round_finished",
                session=session,
                round=round_no,
                envelopes=res.record["envelope_count"],
                aggregate_sha256=res.aggregate_sha256 or "",
                epsilon=eps,
            )
        )
        return out

"""``splitfed-gateway run``: wires the gateway core to MQTT, the ledger and the disk.

Theory of operation. One main thread owns the :class:`GatewayCore`: it
drains the MQTT inbox (paho's thread only enqueues), dispatches by topic,
executes the returned actions (publish, submit a round record, announce a
finalised model with its proof) and only then PUBACKs the message. Every
``poll_interval_s`` it asks the ledger for its height (a new block drops
the registry cache, so revocations apply from that block on), loads the
session policy once the session exists, retries pending record submissions
and model announcements. In a validator organisation every candidate the
server announces goes to the :class:`~gateway.validator.VoteTracker`: once
its proposal is on the ledger it is evaluated on the organisation's own
held-out data and voted on (``model_vote`` as ``<org>/validator``); a failed
submit is retried with backoff (same signed bytes) until the vote is on the
ledger or the proposal is decided or superseded. Ledger or broker outages
are logged and retried, never fatal; ``stop()`` ends the loop from any
thread (SIGTERM in the CLI).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from gateway.config import GatewayConfig
from gateway.core import Action, Announce, GatewayCore, SubmitRecord
from gateway.journal import SqliteJournal
from gateway.ledger_io import policy_from_session, submit_record
from gateway.ratelimit import LogLimiter
from gateway.validator import VoteOutcome, VoteTracker
from gateway.verify import AdmissionPipeline
from models.evaluate import HeldOutEvaluator, evaluation_clip
from models.manifest import find_manifest
from protocol import topics
from protocol.effects import ForwardRef, Publish
from protocol.endorse import gateway_kid
from protocol.errors import LedgerError, SplitfedError
from protocol.keys import load_signing_key, verify_key_from_hex
from protocol.ledger.tx import decode_tx, make_tx
from protocol.messages import ModelAnnouncement, seal, weights_digest
from protocol.replay import ReplayGuard
from protocol.vote import vote_decision
from service.ledger import LedgerRegistry
from service.ledger_client import LedgerClient
from service.link import Inbound, PahoLink
from service.metrics import MetricsRegistry
from service.metrics_http import MetricsServer
from service.notify import SystemdNotifier, Watchdog
from service.registry import CachedRegistry

__all__ = ["GatewayApp"]

log = logging.getLogger(__name__)


class GatewayApp:
    """The gateway process (see module docstring)."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self.notifier = SystemdNotifier()  # READY by service.lifecycle.serve; a no-op off systemd
        self._watchdog = Watchdog(self.notifier)
        self._key = load_signing_key(config.signing_key)
        self.ledger = LedgerClient(config.ledger_url)
        server_hex = config.server_pubkey or self._server_key_from_ledger()
        self.metrics = MetricsRegistry(prefix="splitfed_gateway_")
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.journal = SqliteJournal(config.state_dir / "rounds.db")
        pipeline = AdmissionPipeline(
            org=config.org,
            registry=CachedRegistry(LedgerRegistry(self.ledger)),
            replay=ReplayGuard(),
            max_size=config.max_message_bytes,
        )
        self.core = GatewayCore(
            org=config.org,
            group=config.group,
            signing_key=self._key,
            server_key=verify_key_from_hex(server_hex),
            pipeline=pipeline,
            journal=self.journal,
            metrics=self.metrics,
            limiter=LogLimiter(clock=time.monotonic, interval=config.log_interval_s),
            hasher=weights_digest,
            prior_spend=self._prior_spend,
            start_seq=time.time_ns() // 1000,
            counter_store=self.journal,
        )
        # forwards of journaled messages not yet acknowledged by the broker
        self._unconfirmed: list[tuple[Any, ForwardRef]] = []
        self._validator_key = (
            None if config.validator is None else load_signing_key(config.validator.signing_key)
        )
        self._evaluator: HeldOutEvaluator | None = None
        self._baseline: float | None = None
        self._pending_records: list[Mapping[str, Any]] = []
        self._pending_models: dict[int, ModelAnnouncement] = {}
        # candidates (both halves) this validator org has still to vote on, by version
        self._candidates: dict[int, tuple[ModelAnnouncement, tuple[Any, ...]]] = {}
        self.votes = None if config.validator is None else VoteTracker(org=config.org)
        self.link = PahoLink(
            config.mqtt,
            subscriptions=[
                topics.devices_filter(config.org, "up"),
                topics.devices_filter(config.org, "state"),
                topics.central_down(config.org),
            ],
        )
        self.metrics_server: MetricsServer | None = None

    def _server_key_from_ledger(self) -> str:
        v = self.ledger.state("id/server")
        if not isinstance(v, str):
            raise LedgerError("the ledger does not hold a server key (id/server)")
        return v

    def _prior_spend(self, session: str, device: str) -> float:
        try:
            return self.ledger.device_spend(session, f"{self.config.org}/{device}")
        except LedgerError:
            return 0.0

    # -- actions ---------------------------------------------------------------------
    def _execute(self, actions: list[Action]) -> None:
        announced = False
        for a in actions:
            if isinstance(a, Publish):
                info = self.link.publish(a.topic, a.payload, qos=a.qos, retain=a.retain)
                if a.forward_of is not None:
                    self._unconfirmed.append((info, a.forward_of))
            elif isinstance(a, SubmitRecord):
                self._pending_records.append(a.body)
            elif isinstance(a, Announce):
                ann = a.announcement
                self._pending_models[ann.version] = ann
                if (
                    self.votes is not None
                    and a.server_weights is not None
                    and ann.session == self.config.session
                ) and self.votes.add(
                    session=ann.session,
                    version=ann.version,
                    weights_sha256=ann.weights_sha256,
                    now=time.monotonic(),
                ):
                    self._candidates[ann.version] = (ann, a.server_weights)
                    announced = True
        if announced:  # try at once; retries run on the ledger poll
            self._drive_votes(time.monotonic())
        self._flush()

    def _drive_votes(self, now: float) -> None:
        """One step of every pending vote: receipts, proposal records, evaluate, submit."""
        vt = self.votes
        if vt is None or not vt.versions:
            return
        try:
            for version, txid in vt.awaiting():
                r = self.ledger.receipt(txid)
                if r is not None:
                    vt.on_receipt(version, valid=r.valid, reason=r.reason, now=now)
                    if not r.valid:
                        self.metrics.inc(
                            "votes_invalid", help_text="Vote txs marked invalid by the ledger"
                        )
                        log.error("vote on version %d marked invalid: %s", version, r.reason)
            latest = self.ledger.model(self.config.session)
            vt.observe(
                self.ledger.proposals(self.config.session),
                latest_finalised=None if latest is None else latest.version,
                now=now,
            )
            for _, version in vt.needs_evaluation():
                body = self._vote_body(version)
                if body is not None:
                    vt.set_vote(version, body)
            for req in vt.due(now):
                raw = req.raw
                if raw is None:
                    assert self._validator_key is not None
                    raw = make_tx(
                        "model_vote",
                        req.body,
                        signing_key=self._validator_key,
                        submitter=f"{self.config.org}/validator",
                        chain_id=self.config.chain_id,
                    )
                    vt.signed(req.version, raw, decode_tx(raw).txid)
                try:
                    self.ledger.submit(raw)
                    vt.sent(req.version, now)
                except LedgerError as exc:
                    delay = vt.send_failed(req.version, now)
                    log.warning(
                        "vote on version %d not submitted (retry in %.1f s): %s",
                        req.version,
                        delay,
                        exc,
                    )
        except LedgerError as exc:
            log.warning("votes: ledger unreachable: %s", exc)
        for d in vt.take_done():
            self._candidates.pop(d.version, None)
            if d.outcome is not VoteOutcome.VOTED:
                log.warning("vote on version %d dropped: %s", d.version, d.reason)
                continue
            if d.body is None:  # cast by an earlier run of this gateway
                log.info("vote on version %d is on the ledger already", d.version)
                continue
            accept, acc = bool(d.body["accept"]), d.body.get("metric")
            if accept and isinstance(acc, float):
                self._baseline = acc
            self._publish_event(
                "model_vote",
                session=self.config.session,
                version=d.version,
                accept=accept,
                accuracy=acc if isinstance(acc, float) else None,
            )
            self.metrics.inc("votes", {"accept": str(accept).lower()})
            log.info(
                "voted %s on version %d (accuracy %s on own held-out data)",
                "accept" if accept else "reject",
                d.version,
                "n/a" if acc is None else f"{acc:.4f}",
            )

    def _flush(self) -> None:
        while self._pending_records:
            body = self._pending_records[0]
            try:
                txid = submit_record(
                    self.ledger,
                    body,
                    org=self.config.org,
                    signing_key=self._key,
                    chain_id=self.config.chain_id,
                )
                log.info("round %s record submitted: %s", body.get("round"), txid[:16])
            except LedgerError as exc:
                log.warning("round record not submitted yet: %s", exc)
                return
            self._pending_records.pop(0)
        for version, ann in sorted(self._pending_models.items()):
            try:
                rec = self.ledger.model(ann.session)
                if rec is None or rec.version < version:
                    continue
                if rec.version > version:  # superseded: this proposal was not finalised
                    del self._pending_models[version]
                    continue
                if rec.version == version and rec.weights_sha256 == ann.weights_sha256:
                    if self.ledger.certified_height() < rec.height:
                        continue  # devices need the finality certificate: wait for it
                    proof = self.ledger.proof(rec.txid)
                    final = ModelAnnouncement(
                        session=ann.session,
                        version=ann.version,
                        model_id=ann.model_id,
                        cut=ann.cut,
                        client_sha256=ann.client_sha256,
                        client_artifact=None,
                        weights=ann.weights,
                        weights_sha256=ann.weights_sha256,
                        proof=proof,
                    )
                    self.link.publish(
                        topics.model(self.config.org),
                        seal(final, signing_key=self._key, kid=gateway_kid(self.config.org)),
                        retain=True,
                    )
                    log.info("published finalised model version %d", version)
                    self._publish_event(
                        "model_published",
                        session=ann.session,
                        version=version,
                        weights_sha256=ann.weights_sha256,
                        height=rec.height,
                    )
            except (LedgerError, SplitfedError) as exc:
                log.warning("model %d not announced yet: %s", version, exc)
                continue
            del self._pending_models[version]

    def _publish_event(self, kind: str, **fields: Any) -> None:
        body = {
            "event": kind,
            "org": self.config.org,
            "block_height": self.core.block_height,
            **fields,
        }
        self.link.publish(topics.events(self.config.org), json.dumps(body, sort_keys=True).encode())

    def _vote_body(self, version: int) -> dict[str, Any] | None:
        """Evaluate candidate ``version`` on own held-out data; the ``model_vote`` body.

        ``None`` while the ledger cannot be read (tried again on the next poll);
        a candidate that cannot be evaluated at all is voted against.
        """
        v = self.config.validator
        cand = self._candidates.get(version)
        if v is None or cand is None or cand[0].weights is None:
            if self.votes is not None:
                self.votes.drop(version, "no candidate weights to evaluate")
            return None
        ann, server_weights = cand
        weights = cand[0].weights
        assert weights is not None
        try:
            if self._evaluator is None:
                s = self.ledger.session(ann.session)
                if s is None:
                    return None
                m = find_manifest(s.client_sha256, self.config.manifest)
                self._evaluator = HeldOutEvaluator(
                    m,
                    data_dir=v.data_dir,
                    max_windows=v.max_windows,
                    clip_norm=evaluation_clip(s.dp),
                )
        except LedgerError as exc:
            log.warning("candidate %d not evaluated yet: %s", version, exc)
            return None
        except SplitfedError as exc:  # no artifact, unreadable data: this org cannot vote
            if self.votes is not None:
                self.votes.drop(version, f"cannot evaluate: {exc}")
            return None
        try:
            acc = self._evaluator(weights, server_weights)
        except SplitfedError as exc:  # wrong shapes etc.: a corrupted candidate
            log.warning("candidate %d cannot be evaluated: %s", version, exc)
            acc = float("nan")
        accept = vote_decision(
            candidate_accuracy=acc,
            baseline_accuracy=self._baseline,
            max_drop=v.max_drop,
            min_accuracy=v.min_accuracy,
        )
        body: dict[str, Any] = {
            "session_id": ann.session,
            "version": version,
            "accept": accept,
            "metric_name": "accuracy",
        }
        if math.isfinite(acc):
            body["metric"] = float(acc)
        return body

    # -- loop ------------------------------------------------------------------------
    def _poll_ledger(self) -> None:
        try:
            self._execute(self.core.on_block(self.ledger.height()))
            self._drive_votes(time.monotonic())
            if self.core.policy is None:
                s = self.ledger.session(self.config.session)
                if s is not None:
                    m = find_manifest(s.client_sha256, self.config.manifest)
                    self.core.set_policy(policy_from_session(s, m))
                    # commands also reach registered devices whose birth was not seen yet
                    for d in self.ledger.devices(self.config.org):
                        if not d.revoked:
                            self.core.devices.setdefault(d.device, False)
                    log.info("session %s loaded (client %s)", s.session_id, s.client_sha256[:12])
        except LedgerError as exc:
            log.warning("ledger unreachable: %s", exc)

    def _dispatch(self, item: Inbound) -> None:
        try:
            t = topics.parse(item.topic)
        except SplitfedError:
            return
        if t.kind == "up":
            self._execute(self.core.on_device_up(item.topic, item.payload))
        elif t.kind == "state":
            self._execute(self.core.on_device_state(item.topic, item.payload))
        elif t.kind == "central_down":
            self._execute(self.core.on_central_down(item.payload))

    def start(self) -> None:
        """Bind metrics, read the ledger once, connect to the broker."""
        if self.config.metrics_port is not None:
            self.metrics_server = MetricsServer(
                self.metrics, host=self.config.metrics_host, port=self.config.metrics_port
            )
        self._poll_ledger()
        last = self.journal.latest_round(self.config.session)
        resumed = [] if last is None else self.core.resume(self.config.session, last)
        self.link.connect()
        self._execute(resumed)

    def run(self) -> None:
        """Process messages until :meth:`stop`."""
        next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            self._watchdog.tick(now)
            if now >= next_poll:
                self._poll_ledger()
                self._flush()
                self.core.tick()
                next_poll = now + self.config.poll_interval_s
            self._confirm_forwards()
            try:
                item = self.link.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            self._dispatch(item)
            self.link.ack(item)

    def _confirm_forwards(self) -> None:
        """Tell the core which forwards the broker acknowledged (journaled as forwarded)."""
        if not self._unconfirmed:
            return
        waiting = []
        for info, ref in self._unconfirmed:
            if info.is_published():
                self.core.on_forwarded(ref)
            else:
                waiting.append((info, ref))
        self._unconfirmed = waiting

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Disconnect and release everything; idempotent."""
        self._confirm_forwards()
        self.core.flush_counters()
        self.link.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        self.journal.close()

"""``splitfed-server run``: wires the server core to MQTT, LiteRT and the ledger.

Theory of operation. One main thread owns the :class:`ServerCore`: it drains
the MQTT inbox (gateway uploads on ``splitfed/v1/central/+/up``), executes
the actions (publishes; a ``model_propose`` starts a
:class:`~server.proposals.ProposalLifecycle` after the candidate's halves are
saved), PUBACKs, and every ``poll_interval_s`` ticks the round policy and
drives the lifecycle: read the receipt of its tx in flight, read the
proposal's record (matched by version and weights hash), submit what it says
is due (``model_propose`` / ``model_finalise`` signed as ``server``, the same
bytes again after a failure), and hand its decision to the core.

On start the server reads the session's proposals: the next proposal is
numbered above all of them. If one is still open and the state directory
holds its candidate, the server adopts it (announces it again, waits for the
votes); if not, the proposal cannot be completed and the next one supersedes
it (contract rule, ``docs/ledger.md``). Ledger and broker outages are logged
and retried with backoff, never fatal; invalid txs are counted
(``splitfed_server_ledger_invalid_total{kind}``) and bounded per proposal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from models.evaluate import HeldOutEvaluator, evaluation_clip
from models.manifest import find_manifest
from models.runtime import ClientRuntime, ServerRuntime
from protocol import topics
from protocol.effects import Publish
from protocol.endorse import gateway_identity
from protocol.errors import ConfigError, LedgerError, SplitfedError, SpoolError
from protocol.keys import load_signing_key, verify_key_from_hex
from protocol.ledger.tx import decode_tx, make_tx
from server.config import ServerConfig
from server.core import Phase, ServerCore, SessionPlan, SubmitTx
from server.proposals import Proposal, ProposalLifecycle, open_proposal
from server.sfl import SflMode, SplitTrainer
from server.state import load_candidate, load_finalised, save_candidate, save_finalised
from service.ledger import LedgerRegistry
from service.ledger_client import LedgerClient
from service.link import PahoLink
from service.metrics import MetricsRegistry
from service.metrics_http import MetricsServer
from service.notify import SystemdNotifier, Watchdog
from service.registry import CachedRegistry

__all__ = ["ServerApp"]

log = logging.getLogger(__name__)


class ServerApp:
    """The central server process (see module docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._stop = threading.Event()
        self.notifier = SystemdNotifier()  # READY by service.lifecycle.serve; a no-op off systemd
        self._watchdog = Watchdog(self.notifier)
        self._key = load_signing_key(config.signing_key)
        self.ledger = LedgerClient(config.ledger_url)
        s = self.ledger.session(config.session)
        if s is None:
            raise ConfigError(
                f"session {config.session!r} is not on the ledger "
                "(run `splitfed-server session create` first)"
            )
        self.session = s
        m = find_manifest(s.client_sha256, config.manifest)
        if config.data_dir is None:
            raise ConfigError("server.data_dir (held-out evaluation data) is required to run")
        groups = {org: g for g, orgs in s.groups.items() for org in orgs}
        gw_keys = {}
        for org in groups:
            v = self.ledger.state(f"id/{gateway_identity(org)}")
            if not isinstance(v, str):
                raise ConfigError(f"the ledger has no gateway key for org {org!r}")
            gw_keys[org] = verify_key_from_hex(v)
        plan = SessionPlan(
            session=s.session_id,
            rounds=s.rounds,
            groups=groups,
            model_id=m.model_id,
            cut=m.cut,
            client_sha256=s.client_sha256,
            server_sha256=s.server_sha256,
            client_weight_shapes=tuple(m.client_weight_shapes),
            lr=config.lr,
            collect_deadline_s=config.collect_deadline_s,
            privacy_mode=str(s.extra.get("privacy_mode", "sl-frozen")),
            replay_steps=config.replay_steps,
            steps_per_round=config.steps_per_round,
        )
        mode = SflMode.SFLV2 if s.sfl_mode in ("v2", "sflv2") else SflMode.SFLV1
        trainer = SplitTrainer(
            mode=mode,
            groups=set(groups.values()),
            make_half=lambda: ServerRuntime.from_manifest(m),
            lr=config.lr,
        )
        self.metrics = MetricsRegistry(prefix="splitfed_server_")
        self.metrics.declare("ledger_invalid", "counter", "Server txs marked invalid, by kind")
        latest = self.ledger.model(s.session_id)
        records = self.ledger.proposals(s.session_id)
        versions = [int(r["version"]) for r in records if isinstance(r.get("version"), int)]
        rounds = [int(r["round"]) for r in records if isinstance(r.get("round"), int)]
        # the first round to run: after the last proposed round (older ledgers: one per proposal)
        self._first_round = max(rounds) + 1 if rounds else len(records)
        self.core = ServerCore(
            plan=plan,
            signing_key=self._key,
            gateway_keys=gw_keys,
            registry=CachedRegistry(LedgerRegistry(self.ledger)),
            trainer=trainer,
            client_weights=ClientRuntime.from_manifest(m).get_weights(),
            evaluator=HeldOutEvaluator(
                m, data_dir=config.data_dir, clip_norm=evaluation_clip(s.dp)
            ),
            round_policy=config.round_policy,
            metrics=self.metrics,
            start_seq=time.time_ns() // 1000,
            version=0 if latest is None else latest.version,
            last_proposed=max(versions, default=0),
        )
        resave = False  # the finalised halves came from the candidate file: write them
        if latest is not None and config.state_dir is not None:
            halves = load_finalised(
                config.state_dir, version=latest.version, weights_sha256=latest.weights_sha256
            )
            if halves is None:  # finalised just before a crash: it was the saved candidate
                cand = load_candidate(
                    config.state_dir, version=latest.version, weights_sha256=latest.weights_sha256
                )
                halves = None if cand is None else (cand[1], cand[2])
                resave = halves is not None
            if halves is not None:
                self.core.load_finalised(latest.version, *halves)
                log.info("resumed from finalised version %d", latest.version)
            else:
                log.warning(
                    "no saved halves for finalised version %d: starting from the "
                    "artifact's initial weights",
                    latest.version,
                )
        self._saved_version = -1 if resave else self.core.version
        self.lifecycle: ProposalLifecycle | None = None
        self.invalid_txs = 0  # receipts of this process's txs marked invalid
        self._resumed: list[Publish | SubmitTx] | None = None
        rec = open_proposal(records, latest_finalised=self.core.version)
        if rec is not None:
            self._resume_open(rec)
        self.link = PahoLink(config.mqtt, subscriptions=[topics.central_filter("up")])
        self.metrics_server: MetricsServer | None = None

    def _resume_open(self, rec: Mapping[str, Any]) -> None:
        """A proposal is open on the ledger at start: adopt it if ours, else leave it."""
        ver, wsha = int(rec["version"]), str(rec.get("weights_sha256"))
        cand = (
            None
            if self.config.state_dir is None
            else load_candidate(self.config.state_dir, version=ver, weights_sha256=wsha)
        )
        plan = self.core.plan
        if (
            cand is None
            or rec.get("client_sha256") != plan.client_sha256
            or rec.get("server_sha256") != plan.server_sha256
        ):
            log.warning(
                "version %d is open on the ledger but its candidate is not in the state "
                "directory: it cannot be completed, the next proposal (version %d) supersedes it",
                ver,
                ver + 1,
            )
            return
        rnd, client, server = cand
        metrics = {
            str(k): float(v)
            for k, v in dict(rec.get("metrics") or {}).items()
            if isinstance(v, int | float)
        }
        proposal = Proposal(
            session_id=plan.session,
            version=ver,
            round=rnd,
            weights_sha256=wsha,
            client_sha256=plan.client_sha256,
            server_sha256=plan.server_sha256,
            metrics=metrics,
        )
        now = time.monotonic()
        self._resumed = self.core.adopt(proposal, client, server, now)
        self.lifecycle = self._new_lifecycle(proposal, now, on_ledger=True)
        log.info("adopted open proposal: version %d of round %d", ver, rnd)

    def _new_lifecycle(self, p: Proposal, now: float, *, on_ledger: bool) -> ProposalLifecycle:
        return ProposalLifecycle(
            p, now=now, deadline_s=self.config.proposal_deadline_s, on_ledger=on_ledger
        )

    def _execute(self, actions: list[Publish | SubmitTx]) -> None:
        proposed = False
        for a in actions:
            if isinstance(a, Publish):
                self.link.publish(a.topic, a.payload, qos=a.qos, retain=a.retain)
            elif a.kind == "model_propose" and self.core.proposal is not None:
                p = self.core.proposal
                if self.config.state_dir is not None:
                    try:
                        save_candidate(
                            self.config.state_dir, p.version, p.round, *self.core.candidate_halves()
                        )
                    except SpoolError as exc:  # a restart then supersedes instead of adopting
                        log.error("candidate of version %d not saved: %s", p.version, exc)
                self.lifecycle = self._new_lifecycle(p, time.monotonic(), on_ledger=False)
                proposed = True
            else:
                log.error("unexpected tx from the core: %s", a.kind)
        if proposed:  # submit at once; later steps run on the poll
            self._drive_proposal(time.monotonic())

    def _drive_proposal(self, now: float) -> None:
        """One step of the proposal lifecycle: receipt, record, submit, decision."""
        lc = self.lifecycle
        if lc is None:
            return
        try:
            txid = lc.awaiting_receipt
            r = None if txid is None else self.ledger.receipt(txid)
            if r is not None:
                kind = lc.in_flight_kind or "tx"
                lc.on_receipt(valid=r.valid, reason=r.reason, now=now)
                if not r.valid:
                    self.invalid_txs += 1
                    self.metrics.inc("ledger_invalid", {"kind": kind})
                    log.error("%s %s was marked invalid: %s", kind, r.txid[:16], r.reason)
            if not lc.decided:
                v = lc.proposal.version
                recs = self.ledger.proposals(lc.proposal.session_id)
                for x in recs:
                    if isinstance(x.get("version"), int):
                        self.core.note_proposed(int(x["version"]))
                lc.observe(
                    next((x for x in recs if x.get("version") == v), None),
                    vote_quorum=self.session.vote_quorum,
                    validators=len(self.ledger.validators()),
                    now=now,
                )
            if lc.reannounce_due(now):
                log.info(
                    "version %d: votes missing, candidate announced again", lc.proposal.version
                )
                self._execute(self.core.reannounce())
            req = lc.due(now)
            if req is not None:
                raw = req.raw
                if raw is None:
                    raw = make_tx(
                        req.kind,
                        req.body,
                        signing_key=self._key,
                        submitter="server",
                        chain_id=self.config.chain_id,
                    )
                    lc.signed(raw, decode_tx(raw).txid)
                try:
                    txid = self.ledger.submit(raw)
                    lc.sent(now)
                    log.info("%s submitted: %s", req.kind, txid[:16])
                except LedgerError as exc:
                    delay = lc.send_failed(now)
                    log.warning("%s not submitted (retry in %.1f s): %s", req.kind, delay, exc)
        except LedgerError as exc:
            log.warning("ledger unreachable: %s", exc)
        if lc.decided:
            log.info("version %d: %s (%s)", lc.proposal.version, lc.outcome.value, lc.reason)
            self.lifecycle = None
            actions = self.core.on_proposal_status(lc.outcome, now)
            self._save_finalised()
            self._execute(actions)

    def _save_finalised(self) -> None:
        if self.config.state_dir is not None and self.core.version != self._saved_version:
            try:
                save_finalised(self.config.state_dir, *self.core.finalised_halves())
                self._saved_version = self.core.version
            except SpoolError as exc:
                log.error("finalised halves not saved (retried): %s", exc)

    def _poll(self) -> None:
        now = time.monotonic()
        try:
            self.core.registry.on_block(self.ledger.height())
            self._execute(self.core.tick(now))
            self._drive_proposal(now)
            self._save_finalised()
        except LedgerError as exc:
            log.warning("ledger unreachable: %s", exc)

    def start(self) -> None:
        if self.config.metrics_port is not None:
            self.metrics_server = MetricsServer(
                self.metrics, host=self.config.metrics_host, port=self.config.metrics_port
            )
        self.link.connect()
        if self._resumed is not None:
            self._execute(self._resumed)  # the adopted candidate, announced again
        else:
            self._execute(self.core.start_round(self._first_round, time.monotonic()))

    def run(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set() and self.core.phase is not Phase.DONE:
            now = time.monotonic()
            self._watchdog.tick(now)
            if now >= next_poll:
                self._poll()
                next_poll = now + self.config.poll_interval_s
            try:
                item = self.link.inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            try:
                self._execute(self.core.on_central_up(item.topic, item.payload))
            except SplitfedError as exc:
                log.error("message on %s not handled: %s", item.topic, exc)
            self.link.ack(item)
        log.info("server finished: %s", self.core.history)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self.link.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

"""``splitfed-server run``: wires the server core to MQTT, LiteRT and the ledger.

Theory of operation. One main thread owns the :class:`ServerCore`: it drains
the MQTT inbox (gateway uploads on ``splitfed/v1/central/+/up``), executes
the actions (publish; sign and submit ``model_propose`` / ``model_finalise``
txs as ``server``), PUBACKs, and every ``poll_interval_s`` ticks the round
policy and asks the ledger for the proposal's status (votes, finalisation).
Ledger and broker outages are logged and retried, never fatal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from gateway.core import Publish
from gateway.endorse import gateway_identity
from gateway.evaluate import HeldOutEvaluator, evaluation_clip
from gateway.ledger_io import LedgerRegistry, find_manifest
from gateway.metrics import MetricsRegistry
from gateway.metrics_http import MetricsServer
from gateway.mqtt_io import PahoLink
from gateway.registry import CachedRegistry
from ledger_node.client import LedgerClient
from ledger_node.tx import make_tx
from models.runtime import ClientRuntime, ServerRuntime
from protocol import topics
from protocol.errors import ConfigError, LedgerError, SplitfedError
from protocol.keys import load_signing_key, verify_key_from_hex
from server.config import ServerConfig
from server.core import Phase, ServerCore, SessionPlan, SubmitTx
from server.proposals import proposal_status
from server.sfl import SflMode, SplitTrainer
from server.state import load_finalised, save_finalised

__all__ = ["ServerApp"]

log = logging.getLogger(__name__)


class ServerApp:
    """The central server process (see module docstring)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._stop = threading.Event()
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
        )
        mode = SflMode.SFLV2 if s.sfl_mode in ("v2", "sflv2") else SflMode.SFLV1
        trainer = SplitTrainer(
            mode=mode,
            groups=set(groups.values()),
            make_half=lambda: ServerRuntime.from_manifest(m),
            lr=config.lr,
        )
        self.metrics = MetricsRegistry(prefix="splitfed_server_")
        latest = self.ledger.model(s.session_id)
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
        )
        if latest is not None and config.state_dir is not None:
            halves = load_finalised(
                config.state_dir, version=latest.version, weights_sha256=latest.weights_sha256
            )
            if halves is not None:
                self.core.load_finalised(latest.version, *halves)
                log.info("resumed from finalised version %d", latest.version)
            else:
                log.warning(
                    "no saved halves for finalised version %d: starting from the "
                    "artifact's initial weights",
                    latest.version,
                )
        self._saved_version = self.core.version
        self._pending: list[SubmitTx] = []
        self._finalise_txid: str | None = None
        self.link = PahoLink(config.mqtt, subscriptions=[topics.central_filter("up")])
        self.metrics_server: MetricsServer | None = None

    def _execute(self, actions: list[Publish | SubmitTx]) -> None:
        for a in actions:
            if isinstance(a, Publish):
                self.link.publish(a.topic, a.payload, qos=a.qos, retain=a.retain)
            else:
                self._pending.append(a)
        while self._pending:
            tx = self._pending[0]
            if tx.kind == "model_finalise" and not self._finalise_due():
                self._pending.pop(0)  # one finalise in flight at a time
                continue
            try:
                txid = self.ledger.submit(
                    make_tx(
                        tx.kind,
                        tx.body,
                        signing_key=self._key,
                        submitter="server",
                        chain_id=self.config.chain_id,
                    )
                )
                log.info("%s submitted: %s", tx.kind, txid[:16])
                if tx.kind == "model_finalise":
                    self._finalise_txid = txid
            except LedgerError as exc:
                log.warning("%s not submitted yet: %s", tx.kind, exc)
                return
            self._pending.pop(0)

    def _finalise_due(self) -> bool:
        """False while a submitted finalise tx has no receipt yet; logs an invalid one."""
        if self._finalise_txid is None:
            return True
        r = self.ledger.receipt(self._finalise_txid)
        if r is None:
            return False
        if not r.valid:
            log.error("model_finalise %s was marked invalid: %s", r.txid[:16], r.reason)
        self._finalise_txid = None
        return True

    def _poll(self) -> None:
        now = time.monotonic()
        try:
            self.core.registry.on_block(self.ledger.height())
            self._execute(self.core.tick(now))
            p = self.core.proposal
            if self.core.phase is Phase.PROPOSED and p is not None:
                recs = [
                    r for r in self.ledger.proposals(p.session_id) if r.get("version") == p.version
                ]
                status = proposal_status(
                    recs[0] if recs else None,
                    vote_quorum=self.session.vote_quorum,
                    validators=len(self.ledger.validators()),
                )
                self._execute(self.core.on_proposal_status(status, now))
            if self.config.state_dir is not None and self.core.version != self._saved_version:
                save_finalised(self.config.state_dir, *self.core.finalised_halves())
                self._saved_version = self.core.version
        except LedgerError as exc:
            log.warning("ledger unreachable: %s", exc)

    def start(self) -> None:
        if self.config.metrics_port is not None:
            self.metrics_server = MetricsServer(
                self.metrics, host=self.config.metrics_host, port=self.config.metrics_port
            )
        self.link.connect()
        first = len(self.ledger.proposals(self.session.session_id))
        self._execute(self.core.start_round(first, time.monotonic()))

    def run(self) -> None:
        next_poll = 0.0
        while not self._stop.is_set() and self.core.phase is not Phase.DONE:
            now = time.monotonic()
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

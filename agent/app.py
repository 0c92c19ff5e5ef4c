"""The running edge agent: sensors -> client half -> local DP -> signed release -> MQTT.

Theory of operation
-------------------
Threads: one per sensor window source (reads windows into a bounded queue;
a dead or slow sensor only stalls its own thread), the MQTT network thread
(:class:`agent.mqtt.PahoPublisher`, which hands received messages to a
bounded inbox), and the main loop, which owns all training state:

1. new windows become records (:class:`agent.records.RecordStore`) with ids
   from a counter kept in the spool database, so ids survive restarts;
2. messages from the ``down`` topic are verified with the server's key
   (gradients, commands) and the org's ``model`` topic is checked by
   :class:`agent.model_sync.ModelGate`; anything forged or malformed is
   counted and dropped;
3. while a round is open (:class:`agent.rounds.DeviceRound`) and fewer than
   ``max_pending`` batches await gradients, a batch is privatised
   (:class:`agent.trainer.ClientTrainer`) and released through
   :class:`agent.outbox.Outbox` (privacy spend fsynced before the message
   is spooled; the publisher sends from the spool);
4. gradients run the backward pass; overdue ones expire;
5. when the round's batches are done (or the server closes the round) the
   client-half weights are uploaded;
6. the systemd watchdog is pinged and the status file rewritten.

A budget that would be exceeded halts releases for good (state, log and
status say so); the agent keeps running so operators can see why.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

import numpy as np

from agent.config import AgentConfig
from agent.model_sync import ModelGate
from agent.mqtt import PahoPublisher
from agent.outbox import Outbox
from agent.pending import Pending, PendingBatches
from agent.privacy.accountant import Accountant
from agent.privacy.mechanisms import secure_rng
from agent.records import RecordStore, record_digest
from agent.rounds import DeviceRound, Phase, RoundPlan
from agent.sensors.app import SensorSet, open_sensors
from agent.sensors.base import Window, WindowSource
from agent.spool import Spool, SpoolFull
from agent.status import write_status
from agent.trainer import ClientTrainer, Prepared
from models.runtime import ClientRuntime
from protocol import keys, topics
from protocol.errors import BudgetExceeded, ProtocolError, SensorError, SplitfedError
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    GradientBatch,
    ModelAnnouncement,
    open_sealed,
    seal,
)
from service.notify import SystemdNotifier

log = logging.getLogger(__name__)

__all__ = ["AgentApp"]

STATUS_PERIOD_S = 2.0
WATCHDOG_PERIOD_S = 5.0
RECORD_ID_KEY = "record_next_id"


class _SensorThread(threading.Thread):
    """Reads one window source into the shared queue until stopped."""

    def __init__(self, name: str, source: WindowSource, out: queue.Queue[tuple[str, Window]],
                 stop: threading.Event, errors: Counter[str]) -> None:
        super().__init__(name=f"sensor-{name}", daemon=True)
        self.source, self.out, self.stop_event, self.errors = source, out, stop, errors
        self.sensor = name

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                window = self.source.next_window(timeout=1.0)
            except SensorError as exc:
                self.errors[f"{self.sensor}:{type(exc).__name__}"] += 1
                self.stop_event.wait(0.2)
                continue
            except Exception:  # a bug in a reader must not kill the agent silently
                log.exception("sensor %s: reader failed", self.sensor)
                self.errors[f"{self.sensor}:crash"] += 1
                self.stop_event.wait(1.0)
                continue
            try:
                self.out.put((self.sensor, window), timeout=1.0)
            except queue.Full:
                self.errors[f"{self.sensor}:queue_full"] += 1


class AgentApp:
    """Wires the agent's parts; :meth:`run` until :meth:`stop`."""

    def __init__(self, config: AgentConfig, *, rng: np.random.Generator | None = None,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        dev = config.device
        self.org, self.device = dev.org, dev.id
        dev.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.signing_key = keys.load_signing_key(dev.key_file)
        self.server_key = keys.load_verify_key(config.model.server_key)
        self.runtime = ClientRuntime.from_manifest(config.model.manifest)
        self.trainer = ClientTrainer(self.runtime, config.privacy, rng=rng or secure_rng(),
                                     wire_dtype=config.training.wire_dtype)
        self.trusted_model_keys = [self.server_key]
        self.gate = self._make_gate()
        self.records = RecordStore(capacity=config.training.record_capacity,
                                   rng=rng or secure_rng())
        self.pending = PendingBatches(max_pending=config.training.max_pending,
                                      timeout_s=config.training.gradient_timeout_s)
        self.round = DeviceRound()
        self.spool = Spool(config.spool_path, max_messages=config.spool.max_messages,
                           max_bytes=config.spool.max_bytes, overflow=config.spool.overflow)
        self.accountant = Accountant(epsilon_budget=config.privacy.epsilon_budget,
                                     delta=config.privacy.delta,
                                     state_path=config.accountant_path,
                                     adjacency=config.privacy.adjacency)
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=1024)
        self.publisher = PahoPublisher(config.mqtt, self.spool, on_message=self._on_message,
                                       state_detail=self._state_detail)
        self.outbox = Outbox(self.accountant, self.spool, self.publisher,
                             private=config.privacy.enabled,
                             labels_public=config.privacy.labels == "public")
        self.notifier = notifier or SystemdNotifier()
        self.windows: queue.Queue[tuple[str, Window]] = queue.Queue(maxsize=256)
        self.counters: Counter[str] = Counter()
        self.sensor_errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._sensors: SensorSet | None = None
        self._threads: list[_SensorThread] = []
        self._last_status = 0.0
        self._last_watchdog = 0.0
        if self.accountant.halted:
            self.round.halt(self.accountant.halt_reason or "privacy budget exhausted")

    # -- set-up ---------------------------------------------------------------------
    def _make_gate(self) -> ModelGate:
        model = self.config.model
        validators: dict[str, str] | None = None
        chain_id: str | None = None
        if model.genesis is not None:
            from protocol.ledger.genesis import load_genesis

            genesis = load_genesis(model.genesis)
            chain_id = genesis.chain_id
            validators = {o.id: o.validator for o in genesis.orgs if o.validator}
            for o in genesis.orgs:
                if o.id == self.org and o.gateway:
                    self.trusted_model_keys.append(keys.verify_key_from_hex(o.gateway))
        return ModelGate(session=None, client_sha256=self.runtime.sha256, chain_id=chain_id,
                         validators=validators, require_proof=model.require_proof)

    def start(self) -> None:
        """Open sensors and the broker connection; returns at once."""
        self._sensors = open_sensors(self.config.sensors)
        for name, source in self._sensors.windows.items():
            t = _SensorThread(name, source, self.windows, self._stop, self.sensor_errors)
            t.start()
            self._threads.append(t)
        self.publisher.start()
        self.notifier.ready(status="sampling")

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Stop threads, publish death, close files (idempotent)."""
        self._stop.set()
        self.notifier.stopping()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        if self._sensors is not None:
            self._sensors.close()
            self._sensors = None
        self.publisher.close()
        self._write_status()
        self.accountant.close()
        self.spool.close()

    def run(self) -> None:
        """Main loop: until :meth:`stop` (SIGTERM) is called."""
        self.start()
        try:
            while not self._stop.is_set():
                busy = self.step(time.monotonic())
                if not busy:
                    self._wait_for_work(0.05)
        finally:
            self.close()

    # -- one iteration --------------------------------------------------------------
    def step(self, now: float) -> bool:
        """Do what is due; True if anything happened (the loop then runs again at once)."""
        busy = self._take_windows()
        busy |= self._take_messages()
        for p in self.pending.expire(now):
            self.counters["gradients_expired"] += 1
            self.round.note_finished(p.round)
        busy |= self._maybe_release(now)
        busy |= self._maybe_infer()
        busy |= self._maybe_upload()
        if now - self._last_watchdog >= WATCHDOG_PERIOD_S:
            self.notifier.watchdog()
            self._last_watchdog = now
        if now - self._last_status >= STATUS_PERIOD_S:
            self._write_status()
            self._last_status = now
        return busy

    def _wait_for_work(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(*item)

    def _take_windows(self) -> bool:
        n = 0
        while True:
            try:
                _sensor, w = self.windows.get_nowait()
            except queue.Empty:
                return n > 0
            # One window is one record, whatever the source does: a meter still showing
            # the capture a crashed agent already took, a replay or simulator that loops,
            # or a sensor that serves the same capture again all give the same content,
            # and the same content maps to the same record id (persisted in the spool
            # database before the window can be released), so its spend accumulates on
            # one id instead of starting afresh. Two distinct windows with identical bytes
            # become one record: that over-counts, never under-counts.
            rid, new = self.spool.record_id_for(record_digest(w.x, w.label))
            if not new and rid in self.records:
                self.counters["duplicate_captures"] += 1
                continue
            if not new:
                self.counters["records_seen_again"] += 1
            self.records.add(rid, w.x, w.label)
            self.counters["windows"] += 1
            n += 1

    def _take_messages(self) -> bool:
        n = 0
        while n < 64:
            try:
                topic, payload = self.inbox.get_nowait()
            except queue.Empty:
                break
            self._handle(topic, payload)
            n += 1
        return n > 0

    # -- incoming -------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        """Runs on the MQTT thread: hand over only."""
        try:
            self.inbox.put_nowait((topic, payload))
        except queue.Full:
            self.counters["inbox_full"] += 1

    def _handle(self, topic: str, payload: bytes) -> None:
        try:
            if topic == topics.model(self.org):
                self._handle_model(payload)
            elif topic == topics.down(self.org, self.device):
                msg = open_sealed(payload, verify_key=self.server_key)
                if isinstance(msg, GradientBatch):
                    self._handle_gradient(msg)
                elif isinstance(msg, Command):
                    self._handle_command(msg)
                else:
                    self.counters["rejected_unexpected_type"] += 1
        except ProtocolError as exc:
            self.counters[f"rejected_{type(exc).__name__}"] += 1
            log.warning("dropped message on %s: %s", topic, exc)

    def _handle_model(self, payload: bytes) -> None:
        last: ProtocolError | None = None
        for key in self.trusted_model_keys:
            try:
                msg = open_sealed(payload, verify_key=key)
                break
            except ProtocolError as exc:
                last = exc
        else:
            assert last is not None
            raise last
        if not isinstance(msg, ModelAnnouncement):
            self.counters["rejected_unexpected_type"] += 1
            return
        try:
            weights = self.gate.check(msg)
            self.runtime.set_weights(weights)
        except SplitfedError as exc:  # ModelRejectedError, or weights the runtime refuses
            self.counters["model_refused"] += 1
            log.warning("refused model version %d: %s", msg.version, exc)
            return
        self.gate.loaded(msg.version)
        self.counters["model_loaded"] += 1
        log.info("loaded client half version %d", msg.version)

    def _handle_command(self, cmd: Command) -> None:
        if cmd.device is not None and cmd.device != self.device:
            return
        if cmd.kind == "start_round":
            args = cmd.args
            try:
                training = self.config.training
                plan = RoundPlan(session=cmd.session, round=cmd.round,
                                 steps=int(args.get("steps", training.steps_per_round)),
                                 batch_size=int(args.get("batch_size", training.batch_size)),
                                 lr=float(args.get("lr", 0.01)))
            except (SplitfedError, TypeError, ValueError) as exc:
                self.counters["rejected_bad_command"] += 1
                log.warning("bad start_round: %s", exc)
                return
            if self.round.start(plan):
                self.gate.session = plan.session
                self.trainer.samples_trained = 0
                log.info("round %d started: %d steps", plan.round, plan.steps)
        elif cmd.kind in ("stop_round", "upload_weights"):
            self.round.stop(cmd.round)
        elif cmd.kind == "sync":
            self._write_status()
        elif cmd.kind == "stop":
            self.round.halt("stopped by server command")

    def _handle_gradient(self, msg: GradientBatch) -> None:
        if msg.device != self.device:
            self.counters["rejected_wrong_device"] += 1
            return
        p = self.pending.take(msg.seq)
        if p is None:
            self.counters["gradients_unmatched"] += 1
            return
        lr = self.round.plan.lr if self.round.plan is not None else 0.01
        try:
            self.trainer.apply_gradient(p.x, msg.grad, ids=p.ids, lr=lr,
                                        charge=self.accountant.spend)
            self.counters["gradients_applied"] += 1
        except BudgetExceeded as exc:
            self._halt(str(exc))
        except ProtocolError as exc:
            self.counters["rejected_bad_gradient"] += 1
            log.warning("bad gradient for seq %d: %s", msg.seq, exc)
        self.round.note_finished(p.round)

    # -- outgoing -------------------------------------------------------------------
    def _halt(self, reason: str) -> None:
        if not self.round.halted:
            log.error("privacy budget exhausted, no further releases: %s", reason)
        self.round.halt(reason)
        self.notifier.status(f"halted: {reason}")
        self.publisher.update_state()  # retained birth now says halted

    def _release(self, prepared: Prepared, *, round_no: int, step: int,
                 session: str) -> int | None:
        eps_after = self.accountant.epsilon_after(prepared.events)

        def build(seq: int) -> tuple[str, bytes]:
            msg = ActivationBatch(session=session, round=round_no, step=step,
                                  device=self.device, seq=seq,
                                  model_hash=self.runtime.sha256, dp=prepared.dp,
                                  activations=prepared.activations, labels=prepared.labels,
                                  epsilon_spent=eps_after)
            return topics.up(self.org, self.device), seal(msg, signing_key=self.signing_key,
                                                          kid=self.device)

        try:
            return self.outbox.release(build, prepared.events).seq
        except BudgetExceeded as exc:
            self._halt(str(exc))
        except SpoolFull:
            self.counters["spool_full"] += 1
        return None

    def _maybe_release(self, now: float) -> bool:
        plan = self.round.plan
        if plan is None or not self.round.may_release(pending_full=self.pending.full()):
            self.round.note_no_more_releases(len(self.pending))
            return False
        batch = self.records.next_batch(min(plan.batch_size, self.runtime.manifest.max_batch))
        if batch is None:
            return False
        prepared = self.trainer.prepare(batch)
        step = self.round.released
        seq = self._release(prepared, round_no=plan.round, step=step, session=plan.session)
        if seq is None:
            return False
        self.round.note_released()
        self.pending.add(Pending(seq=seq, round=plan.round, step=step, ids=prepared.ids,
                                 x=prepared.x, sent_at=now))
        self.counters["batches_released"] += 1
        return True

    def _maybe_infer(self) -> bool:
        session = self.round.session
        if session is None or self.round.halted:
            return False
        batch = self.records.take_unlabelled(min(self.config.training.inference_batch,
                                                 self.runtime.manifest.max_batch))
        if batch is None:
            return False
        prepared = self.trainer.prepare(batch)
        round_no = self.round.plan.round if self.round.plan else 0
        if self._release(prepared, round_no=round_no, step=0, session=session) is not None:
            self.counters["inference_released"] += 1
        return True

    def _maybe_upload(self) -> bool:
        plan = self.round.plan
        if self.round.phase != Phase.UPLOAD_DUE or plan is None:
            return False
        self.pending.clear()
        samples = self.trainer.samples_trained
        # sl-frozen: the client half is never uploaded (it is the announced one, unchanged)
        if samples > 0 and self.trainer.uploads_weights:
            weights = self.runtime.get_weights()
            eps = self.accountant.epsilon

            def build(seq: int) -> tuple[str, bytes]:
                msg = ClientWeights(session=plan.session, round=plan.round, device=self.device,
                                    seq=seq, model_hash=self.runtime.sha256,
                                    num_samples=samples, weights=weights,
                                    weights_dp=("dp_sgd" if self.config.privacy.enabled
                                                else "unprotected"),
                                    epsilon_spent=eps)
                return topics.up(self.org, self.device), seal(
                    msg, signing_key=self.signing_key, kid=self.device)

            try:
                self.outbox.send(build)
            except SpoolFull:
                self.counters["spool_full"] += 1
                return False
            self.counters["weights_uploaded"] += 1
        self.round.note_uploaded()
        log.info("round %d done: %d samples", plan.round, samples)
        return True

    # -- status ---------------------------------------------------------------------
    def _state_detail(self) -> dict[str, str | int | float]:
        """Extra fields of the retained birth message (no secrets, no data)."""
        return self.outbox.state_detail()

    def status(self) -> dict[str, Any]:
        sensors = self._sensors.counters() if self._sensors is not None else {}
        plan = self.round.plan
        return {
            "org": self.org, "device": self.device, "time": time.time(),
            "connected": self.publisher.connected,
            "round": {"phase": self.round.phase.value, "round": plan.round if plan else None,
                      "session": self.round.session, "last_completed": self.round.last_completed,
                      "released": self.round.released, "finished": self.round.finished,
                      "halted": self.round.halted_reason},
            "privacy": self.outbox.status(),
            "records": {"held": len(self.records), "epoch": self.records.epoch,
                        "evicted": self.records.evicted},
            "pending": len(self.pending), "model_version": self.gate.version,
            "model_sha256": self.runtime.sha256,
            "counters": dict(self.counters),
            "sensor_errors": dict(self.sensor_errors),
            "sensors": {name: _counters_dict(c) for name, c in sensors.items()},
            "mqtt": _counters_dict(self.publisher.stats),
        }

    def _write_status(self) -> None:
        try:
            write_status(self.config.status_path, self.status())
        except OSError as exc:
            log.warning("cannot write status file: %s", exc.strerror)


def _counters_dict(obj: object) -> dict[str, Any]:
    fields = getattr(obj, "__dataclass_fields__", None)
    if fields is None:
        return {}
    return {name: getattr(obj, name) for name in fields}


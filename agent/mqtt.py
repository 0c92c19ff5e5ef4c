"""MQTT 5 adapter (paho-mqtt 2): drains the offline spool to the broker.

Theory of operation
-------------------
One *network thread* owns the paho client; nothing else touches it.  It runs
sessions back to back:

1. bdSeq := spool meta ``bd_seq`` + 1 (persisted before connecting).  A new
   paho client is built with the Last Will = death certificate
   (``DeviceState(online=False, bd_seq)``, retained, QoS 1) by the shared
   factory :func:`service.mqtt.make_client` (TLS and username/password read
   from files, TCP_NODELAY, the TLS fd fix), then ``connect(clean_start=False)``
   with a Session Expiry Interval, so the broker keeps our subscriptions and
   queued ``down`` messages while we are away (persistent session).
2. On a successful CONNACK: subscribe to ``down`` and the org ``model``
   topic (QoS 1), publish the birth certificate (retained, same bdSeq, with
   ``state_detail()`` such as epsilon spent and halted; re-published on
   ``update_state()``), and start sending the spool from its oldest row.
   With ``sparkplug = true`` the will is instead the Sparkplug B NDEATH and
   NBIRTH/DBIRTH follow the JSON birth; an NCMD ``Node Control/Rebirth``
   re-sends them (see :mod:`agent.sparkplug`).
3. Pump: at most ``max_inflight`` spool rows are unacknowledged at once, sent
   in spool order.  A row is deleted from the spool only in ``on_publish``
   (the PUBACK) with a success reason code - rows acknowledged during one
   ``loop()`` call are deleted in one transaction; a failure reason code (e.g.
   0x87 not authorised) moves it to the spool's dead-letter table.
4. When the connection drops, the in-flight map is discarded and the next
   session re-sends from the oldest remaining row, in the original order
   (the broker may therefore see duplicates: receivers de-duplicate by the
   envelope sequence number - at-least-once delivery, exactly-once effect).
5. Between sessions: :class:`service.mqtt.Backoff`, exponential with full
   jitter in [backoff/2, backoff], reset after a session that reached CONNACK.

Every paho callback is wrapped: an exception is logged and counted in
``stats.callback_errors`` and never propagates into paho's loop.  A
*supervisor thread* restarts the network thread if it ever dies (counted in
``stats.loop_restarts``).  ``close()`` publishes an explicit death
certificate, waits briefly for its PUBACK, and disconnects cleanly.

Paho return codes and exceptions are translated to
:class:`protocol.errors.TransportError` at this boundary.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from agent.sparkplug import SparkplugSession, SparkplugTopics, bd_seq_of, is_rebirth
from agent.spool import Spool
from protocol import topics
from protocol.control import DeviceState
from protocol.errors import ConfigError, SpoolError, TopicError, TransportError
from service.mqtt import MqttSettings, connect_properties, make_client

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., None])
MessageHandler = Callable[[str, bytes], None]
StateDetail = Callable[[], Mapping[str, str | int | float]]


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttConfig:
    """Broker connection settings.  Secrets are file paths, never values."""

    host: str
    port: int = 8883
    org: str
    device: str
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600
    max_inflight: int = 20
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    close_timeout: float = 3.0
    sparkplug: bool = False
    sparkplug_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = []
        try:
            self.link_settings()  # the broker rules every role shares
        except ConfigError as exc:
            problems.extend(exc.problems)
        try:
            topics.state(self.org, self.device)
        except TopicError as exc:
            problems.append(str(exc))
        if not 1 <= self.max_inflight <= 65535:
            problems.append("mqtt.max_inflight must be in 1..65535")
        if problems:
            raise ConfigError(problems)

    def link_settings(self) -> MqttSettings:
        """The shared broker settings of this device's client (:mod:`service.mqtt`)."""
        return MqttSettings(
            host=self.host, port=self.port, client_id=self.effective_client_id,
            username=self.username, password_file=self.password_file, ca_file=self.ca_file,
            cert_file=self.cert_file, key_file=self.key_file, keepalive=self.keepalive,
            session_expiry=self.session_expiry, backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"{self.org}.{self.device}"


@dataclass(slots=True)
class PublisherStats:
    connects: int = 0
    connect_failures: int = 0
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    received: int = 0
    callback_errors: int = 0
    loop_restarts: int = 0
    last_error: str | None = None


class PahoPublisher:
    """Publishes the spool over MQTT 5 with paho-mqtt 2 (see module docstring)."""

    def __init__(self, config: MqttConfig, spool: Spool, *,
                 on_message: MessageHandler | None = None,
                 state_detail: StateDetail | None = None) -> None:
        self.config = config
        self.spool = spool
        self.stats = PublisherStats()
        self._on_message_cb = on_message
        self.state_detail = state_detail  # settable after construction (Outbox.state_detail)
        self._state_dirty = threading.Event()
        self._client: paho.Client | None = None
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._net: threading.Thread | None = None
        self._sup: threading.Thread | None = None
        self._settings = config.link_settings()
        self._backoff = self._settings.backoff
        # per-session state, only touched by the network thread
        self._inflight: dict[int, int] = {}
        self._acked: list[int] = []
        self._sent_upto = 0
        self._session_over = False
        self._connack_ok = False
        self.bd_seq = 0
        self._spb: SparkplugSession | None = None
        self._rebirth = threading.Event()
        self.sparkplug_channels: dict[str, int] = {}  # DBIRTH "Channels" per sensor device

    # -- public API ------------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._sup is not None:
                return
            self._start_network()
            self._sup = threading.Thread(target=self._supervise, daemon=True,
                                         name=f"mqtt-supervisor-{self.config.device}")
            self._sup.start()

    def kick(self) -> None:
        """New rows are in the spool: wake the network thread now (it also polls every 50 ms)."""
        client = self._client
        pair = getattr(client, "_sockpairW", None)
        if pair is not None:
            with contextlib.suppress(OSError):  # closed by a session ending concurrently
                pair.send(b"0")  # what paho's own publish() does to interrupt select()

    def update_state(self) -> None:
        """Re-publish the retained birth certificate with fresh ``state_detail`` (e.g. halted)."""
        self._state_dirty.set()
        self.kick()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until connected, subscribed (SUBACK) and the birth certificate is sent."""
        return self._connected.wait(timeout)

    def close(self) -> None:
        """Publish an explicit death, disconnect, and join the threads."""
        self._closing.set()
        if self._sup is not None:  # first: it must not start a new network thread meanwhile
            self._sup.join(5.0)
        if self._net is not None:
            self._net.join(self.config.close_timeout + 5.0)
        self._sup = self._net = None

    # -- threads -------------------------------------------------------------------------------
    def _start_network(self) -> None:
        self._net = threading.Thread(target=self._network_thread, daemon=True,
                                     name=f"mqtt-network-{self.config.device}")
        self._net.start()

    def _supervise(self) -> None:
        while not self._closing.wait(0.2):
            net = self._net
            if net is not None and not net.is_alive() and not self._closing.is_set():
                self.stats.loop_restarts += 1
                log.error("MQTT network loop died; restarting it (restart %d)",
                          self.stats.loop_restarts)
                self._start_network()

    def _network_thread(self) -> None:
        try:
            self._network_main()
        except BaseException as exc:  # the supervisor restarts us; never let it escape silently
            self.stats.last_error = repr(exc)
            log.exception("MQTT network loop crashed")
        finally:
            self._connected.clear()

    def _network_main(self) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                self._run_session()
            except (TransportError, SpoolError) as exc:  # spool: e.g. disk full; retry later
                self.stats.connect_failures += 1
                self.stats.last_error = str(exc)
                log.warning("MQTT session ended: %s", exc)
            failures = 0 if self._connack_ok else failures + 1
            if self._closing.is_set():
                break
            self._closing.wait(self._backoff.delay(failures))

    # -- one session ---------------------------------------------------------------------------
    def _run_session(self) -> None:
        cfg = self.config
        self.bd_seq = self.spool.increment_meta("bd_seq")
        self._inflight, self._acked, self._sent_upto = {}, [], 0
        self._session_over = self._connack_ok = False
        client = self._make_client()
        self._client = client
        try:
            props = connect_properties(self._settings)
            try:
                rc = client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive,
                                    clean_start=False, properties=props)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise TransportError(f"connect to {cfg.host}:{cfg.port} failed: {exc}") from exc
            _check_rc(rc, "connect")
            deadline = time.monotonic() + cfg.connect_timeout
            while not self._closing.is_set() and not self._session_over:
                rc = client.loop(timeout=0.05)
                self._flush_acks()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise TransportError(f"connection lost: {paho.error_string(rc)}")
                if self._connack_ok:
                    if self._rebirth.is_set():
                        self._rebirth.clear()
                        self._sparkplug_births(client)
                    if self._state_dirty.is_set():
                        self._state_dirty.clear()
                        client.publish(topics.state(cfg.org, cfg.device),
                                       self._state_payload(online=True), qos=1, retain=True)
                    self._pump(client)
                elif time.monotonic() > deadline:
                    raise TransportError(f"no CONNACK within {cfg.connect_timeout}s")
            if self._closing.is_set() and self._connack_ok and not self._session_over:
                self._say_goodbye(client)
        finally:
            self._client = None
            self._flush_acks()
            self._connected.clear()
            client._reset_sockets()  # paho keeps a socketpair per client; release it now

    def _make_client(self) -> paho.Client:
        cfg = self.config
        client = make_client(self._settings)  # credentials, TLS, TCP_NODELAY; TransportError
        client.max_inflight_messages_set(max(cfg.max_inflight, 20))
        self._spb = None
        if cfg.sparkplug:
            # MQTT has one will per connection: with Sparkplug on it is the NDEATH (the JSON
            # death on the state topic is then only published on a clean close)
            self._spb = SparkplugSession(SparkplugTopics(cfg.org, cfg.device),
                                         bd_seq_of(self.bd_seq), cfg.sparkplug_devices,
                                         self.sparkplug_channels)
            will_topic, will_payload = self._spb.will()
            client.will_set(will_topic, will_payload, qos=1, retain=False)
        else:
            client.will_set(topics.state(cfg.org, cfg.device),
                            self._state_payload(online=False), qos=1, retain=True)
        client.on_connect = self._guard(self._on_connect)
        client.on_disconnect = self._guard(self._on_disconnect)
        client.on_publish = self._guard(self._on_publish)
        client.on_message = self._guard(self._on_message)
        client.on_subscribe = self._guard(self._on_subscribe)
        return client

    def _state_payload(self, *, online: bool) -> bytes:
        detail: Mapping[str, str | int | float] = {}
        if online and self.state_detail is not None:
            detail = self.state_detail()
        return DeviceState(org=self.config.org, device=self.config.device, online=online,
                           bd_seq=self.bd_seq, detail=detail).to_json()

    def _pump(self, client: paho.Client) -> None:
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for msg in self.spool.peek_batch(room, after_id=self._sent_upto):
            info = client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise TransportError(f"publish failed: {paho.error_string(info.rc)}")
            self._sent_upto = msg.id
            self.stats.sent += 1
            if msg.qos == 0:
                self.spool.ack(msg.id)  # QoS 0 has no PUBACK: sent is all we get
            else:
                self._inflight[info.mid] = msg.id

    def _flush_acks(self) -> None:
        """Delete every row PUBACKed during the last loop() call in one transaction."""
        if self._acked:
            acked, self._acked = self._acked, []
            self.spool.ack_many(acked)
            self.stats.acked += len(acked)

    def _sparkplug_births(self, client: paho.Client) -> None:
        if self._spb is None:
            return
        detail = self.state_detail() if self.state_detail is not None else {}
        for topic, payload in self._spb.births_for(detail, self.spool.depth):
            client.publish(topic, payload, qos=0, retain=False)

    def _say_goodbye(self, client: paho.Client) -> None:
        if self._spb is not None:
            for topic, payload in self._spb.deaths():
                client.publish(topic, payload, qos=1 if "NDEATH" in topic else 0, retain=False)
        info = client.publish(topics.state(self.config.org, self.config.device),
                              self._state_payload(online=False), qos=1, retain=True)
        deadline = time.monotonic() + self.config.close_timeout
        while not info.is_published() and time.monotonic() < deadline and not self._session_over:
            if client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
        client.disconnect()
        client.loop(timeout=0.05)

    # -- paho callbacks (network thread) ------------------------------------------------
    def _guard(self, fn: F) -> F:
        def wrapper(*args: Any) -> None:
            try:
                fn(*args)
            except Exception:
                self.stats.callback_errors += 1
                log.exception("error in MQTT callback %s (ignored)", fn.__name__)
        return wrapper  # type: ignore[return-value]

    def _on_connect(self, client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        if reason.is_failure:
            self.stats.last_error = f"CONNACK refused: {reason}"
            log.error("broker refused the connection: %s", reason)
            self._session_over = True
            return
        cfg = self.config
        self.stats.connects += 1
        subs = [(topics.down(cfg.org, cfg.device), 1), (topics.model(cfg.org), 1)]
        if self._spb is not None:
            subs.append((self._spb.topics.ncmd, 1))
        client.subscribe(subs)
        client.publish(topics.state(cfg.org, cfg.device), self._state_payload(online=True),
                       qos=1, retain=True)
        self._sparkplug_births(client)
        self._connack_ok = True
        log.info("MQTT connected to %s:%d (bdSeq %d, spool depth %d)", cfg.host, cfg.port,
                 self.bd_seq, self.spool.depth)

    def _on_subscribe(self, _client: paho.Client, _userdata: Any, _mid: int, reasons: Any,
                      _props: Any) -> None:
        bad = [r for r in reasons if r.is_failure]
        if bad:
            self.stats.last_error = f"subscription refused: {bad}"
            log.error("broker refused our subscriptions: %s", bad)
        self._connected.set()  # connected AND subscribed: commands will not be missed

    def _on_disconnect(self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        self._session_over = True
        self._connected.clear()
        log.info("MQTT disconnected: %s", reason)

    def _on_publish(self, _client: paho.Client, _userdata: Any, mid: int, reason: Any,
                    _props: Any) -> None:
        spool_id = self._inflight.pop(mid, None)
        if spool_id is None:
            return  # birth/death certificate
        if reason.is_failure:
            self.stats.rejected += 1
            log.error("broker rejected spooled message %d: %s; moved to dead letters",
                      spool_id, reason)
            self.spool.dead_letter(spool_id, str(reason))
            return
        self._acked.append(spool_id)  # deleted by _flush_acks after this loop() call

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.received += 1
        if self._spb is not None and message.topic == self._spb.topics.ncmd:
            if is_rebirth(bytes(message.payload)):
                self._rebirth.set()  # answered by the session loop: NBIRTH + DBIRTHs again
            return
        if self._on_message_cb is not None:
            self._on_message_cb(message.topic, bytes(message.payload))


def _check_rc(rc: MQTTErrorCode | int, what: str) -> None:
    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise TransportError(f"{what} failed: {paho.error_string(rc)}")

"""MQTT 5 link for the gateway and the server (paho-mqtt 2.2 adapter).

One paho client, persistent session (``clean_start=False`` + session expiry,
so the broker queues QoS 1 messages while the process restarts), QoS 1
subscriptions, and *manual* acknowledgement: a received message is put on an
in-process queue and PUBACKed only after the application handled it
(:meth:`PahoLink.ack`), i.e. after the round journal was written. A crash
between delivery and ack makes the broker redeliver, which the admission
pipeline recognises as a duplicate. Paho's return codes and exceptions are
translated into :class:`protocol.errors.TransportError` here; callbacks are
guarded so an exception never kills paho's network thread.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.mqtt import tcp_no_delay
from protocol.errors import ConfigError, TransportError

__all__ = ["Inbound", "MqttSettings", "PahoLink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """Broker connection; secrets are file paths, never values."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    session_expiry: int = 3600

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"mqtt.port {self.port} out of range")
        if not self.client_id:
            problems.append("mqtt.client_id is empty")
        if (self.cert_file is None) != (self.key_file is None):
            problems.append("mqtt.cert_file and mqtt.key_file go together")
        if self.keepalive < 5 or self.session_expiry < 0:
            problems.append("mqtt.keepalive must be >= 5 and session_expiry >= 0")
        if problems:
            raise ConfigError(problems)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A received message; pass it back to :meth:`PahoLink.ack` once handled."""

    topic: str
    payload: bytes
    mid: int
    qos: int


class PahoLink:
    """Subscribe, receive into a queue, publish; see the module docstring."""

    def __init__(
        self, settings: MqttSettings, *, subscriptions: list[str], max_queue: int = 10_000
    ) -> None:
        self.settings = settings
        self.subscriptions = list(subscriptions)
        self.inbox: queue.Queue[Inbound] = queue.Queue(maxsize=max_queue)
        self.connected = threading.Event()
        self._subscribed = threading.Event()
        self.dropped = 0
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_queued_messages_set(0)
        if settings.username is not None:
            pw = None
            if settings.password_file is not None:
                try:
                    pw = settings.password_file.read_text().strip()
                except OSError as exc:
                    raise TransportError(f"cannot read MQTT password file: {exc}") from exc
            c.username_pw_set(settings.username, pw)
        if settings.ca_file is not None:
            try:
                c.tls_set(
                    ca_certs=str(settings.ca_file),
                    certfile=None if settings.cert_file is None else str(settings.cert_file),
                    keyfile=None if settings.key_file is None else str(settings.key_file),
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise TransportError(f"TLS setup failed: {exc}") from exc
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = tcp_no_delay  # never raises; see agent.mqtt.tcp_no_delay
        self._client = c

    # -- paho callbacks (network thread; never raise) ---------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        try:
            if getattr(reason_code, "is_failure", False):
                log.error("MQTT connect refused: %s", reason_code)
                return
            self.connected.set()
            if self.subscriptions:
                client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.subscriptions])
            else:
                self._subscribed.set()
        except Exception:  # a paho callback must never raise into the network thread
            log.exception("on_connect failed")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: object,
        properties: object,
    ) -> None:
        try:
            bad = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]  # type: ignore[attr-defined]
            if bad:
                log.error("MQTT subscription refused: %s", bad)
            self._subscribed.set()
        except Exception:
            log.exception("on_subscribe failed")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: object,
        properties: object,
    ) -> None:
        self.connected.clear()
        log.warning("MQTT disconnected: %s", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            self.inbox.put_nowait(Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos))
        except queue.Full:
            self.dropped += 1  # not acked: the broker redelivers after reconnect
        except Exception:
            log.exception("on_message failed")

    # -- application side ---------------------------------------------------------------
    def connect(self, *, timeout: float = 10.0) -> None:
        """Connect, subscribe, start the network thread; wait until subscribed."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry
        try:
            self._client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive,
                clean_start=False,
                properties=props,
            )
        except (OSError, ValueError) as exc:
            raise TransportError(
                f"cannot connect to MQTT broker {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        self._client.loop_start()
        deadline = time.monotonic() + timeout
        if not self._subscribed.wait(max(0.0, deadline - time.monotonic())):
            self.close()
            raise TransportError("MQTT broker did not accept the connection/subscriptions in time")

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        """Queue a publish; the returned info's ``is_published()`` turns true on PUBACK."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise TransportError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return info

    def ack(self, item: Inbound) -> None:
        """PUBACK a handled message (QoS 1)."""
        if item.qos > 0:
            self._client.ack(item.mid, item.qos)

    def close(self) -> None:
        """Disconnect and stop the network thread; idempotent."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            # paho keeps a wake-up socketpair per client until garbage collection; release it
            self._client._reset_sockets()

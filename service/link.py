"""MQTT 5 subscribe/publish link of the gateway and the server (paho-mqtt 2.2 adapter).

One paho client built by :func:`service.mqtt.make_client` (TCP_NODELAY, TLS fd
fix, jittered reconnect in paho's threaded loop), persistent session
(``clean_start=False`` + session expiry, so the broker queues QoS 1 messages
while the process restarts), QoS 1
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
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from protocol.errors import TransportError
from service.mqtt import MqttSettings, connect_properties, make_client

__all__ = ["Inbound", "PahoLink"]

log = logging.getLogger(__name__)


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
        c = make_client(settings, manual_ack=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
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
        props = connect_properties(self.settings)
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

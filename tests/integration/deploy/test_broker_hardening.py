"""Broker hardening against hostile clients, with a real Mosquitto on a free port.

* client ids are bound to usernames: a device's password cannot take over the
  gateway's (or the server's, or another device's) session;
* a PUBLISH bigger than the largest legal message is refused (the sender is
  disconnected) and an honest client's connection and messages are unaffected;
* the per-client queue is capped in bytes: a persistent subscriber that is away
  while a flood arrives gets at most ``max_queued_bytes`` of it, not the flood.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deploy.broker import BrokerLimits, MosquittoBroker, device_acl
from protocol import topics
from protocol.envelope import MAX_MQTT_PACKET, MAX_MQTT_PAYLOAD
from tests.integration.conftest import MQTT_ORG, MQTT_USERS
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

ALL = f"splitfed/v1/{MQTT_ORG}/#"


class Client:
    """A paho client that records connects, disconnects and received payloads."""

    def __init__(self, broker: MosquittoBroker, *, user: str, client_id: str,
                 subscribe: str | None = None, persistent: bool = False,
                 v5: bool = True) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, bytes]] = []
        self.connects = 0
        self.disconnects: list[str] = []
        self.subscribed = threading.Event()
        self._subscribe = subscribe
        proto = paho.MQTTv5 if v5 else paho.MQTTv311
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
        c.username_pw_set(user, MQTT_USERS[user])
        c.reconnect_delay_set(30, 30)  # a takeover must show up as a disconnect, not be healed
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        kw: dict[str, Any] = {}
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600 if persistent else 0
            kw = {"clean_start": not persistent, "properties": props}
        c.connect(broker.host, broker.port, keepalive=10, **kw)
        c.loop_start()
        self.client = c
        wait_for(lambda: self.connects > 0, 10, f"{user} connected")
        if subscribe is not None:
            wait_for(self.subscribed.is_set, 10, f"{user} subscribed")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            with self.lock:
                self.connects += 1
            if self._subscribe is not None:
                client.subscribe(self._subscribe, qos=1)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self.lock:
            self.disconnects.append(str(reason))

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        with self.lock:
            self.received.append((m.topic, bytes(m.payload)))

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [p for _, p in self.received]

    def publish(self, topic: str, payload: bytes) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.client._reset_sockets()


@pytest.fixture
def clients() -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(broker: MosquittoBroker, **kw: Any) -> Client:
        c = Client(broker, **kw)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.mark.parametrize("victim", ["gateway", "server", "dev2"])
def test_device_password_cannot_take_over_another_client_id(
    mosquitto: MosquittoBroker, clients: Callable[..., Client], victim: str
) -> None:
    victim_id = f"splitfed-{victim}"
    v = clients(mosquitto, user=victim, client_id=victim_id, subscribe=ALL, persistent=True)
    # dev1's credentials, the victim's client id
    attacker = clients(mosquitto, user="dev1", client_id=victim_id, subscribe=ALL,
                       persistent=True)
    assert attacker.connects == 1  # it may connect, but only as itself ("dev1")
    # an honest message after the attacker's CONNECT still reaches the victim's session
    # (from another user: a second connection of the victim's own user *is* its session)
    other = "server" if victim == "gateway" else "gateway"
    honest = clients(mosquitto, user=other, client_id=f"{other}-publisher")
    honest.publish(topics.state(MQTT_ORG, "dev2"), b"still there?").wait_for_publish(10)
    wait_for(lambda: b"still there?" in v.payloads(), 10, "the victim receives the message")
    assert v.disconnects == [] and v.connects == 1, v.disconnects
    # the attacker's ACL is dev1's: it reads nothing of the org's traffic (dev2's state)
    assert b"still there?" not in attacker.payloads()


def test_oversize_publish_is_refused_and_honest_client_unaffected(
    mosquitto: MosquittoBroker, clients: Callable[..., Client]
) -> None:
    gw = clients(mosquitto, user="gateway", client_id="gw", subscribe=ALL, persistent=True)
    honest = clients(mosquitto, user="dev2", client_id="dev2")
    # MQTT 3.1.1: paho knows no broker maximum, so the oversize packet really goes out
    attacker = clients(mosquitto, user="dev1", client_id="dev1", v5=False)
    big = b"x" * (MAX_MQTT_PACKET + 1)
    attacker.publish(topics.up(MQTT_ORG, "dev1"), big)
    wait_for(lambda: bool(attacker.disconnects), 20, "the broker drops the oversize sender")
    # the largest legal payload still passes (topic the gateway may write)
    legal = b"y" * MAX_MQTT_PAYLOAD
    gw.publish(topics.central_up(MQTT_ORG), legal).wait_for_publish(20)
    honest.publish(topics.up(MQTT_ORG, "dev2"), b"honest").wait_for_publish(10)
    wait_for(lambda: b"honest" in gw.payloads(), 10, "the honest message")
    assert honest.disconnects == [] and gw.disconnects == []
    assert all(len(p) <= MAX_MQTT_PAYLOAD for p in gw.payloads())
    assert big not in gw.payloads()
    assert "max_packet_size" in mosquitto.write_config().read_text()


def test_queue_of_an_absent_subscriber_is_capped_in_bytes(
    mosquitto_factory: Callable[..., MosquittoBroker], clients: Callable[..., Client]
) -> None:
    cap = 1024 * 1024
    broker = mosquitto_factory(
        users=MQTT_USERS, acl=device_acl(MQTT_ORG, readers=("gateway", "server")),
        limits=BrokerLimits(max_queued_bytes=cap, max_queued_messages=10_000))
    gw = clients(broker, user="gateway", client_id="gw", subscribe=ALL, persistent=True)
    gw.close()  # away; its persistent session queues QoS 1 messages
    flood = clients(broker, user="dev1", client_id="dev1")
    size, count = 100_000, 40  # 4 MB > 1 MiB cap
    infos = [flood.publish(topics.up(MQTT_ORG, "dev1"), bytes([i]) * size)
             for i in range(count)]
    for info in infos:
        info.wait_for_publish(10)
    back = clients(broker, user="gateway", client_id="gw", subscribe=ALL, persistent=True)
    # the queue is delivered at once on reconnect; then a marker proves it was all of it
    flood.publish(topics.up(MQTT_ORG, "dev1"), b"marker").wait_for_publish(10)
    wait_for(lambda: b"marker" in back.payloads(), 15, "marker after the queued messages")
    queued = [p for p in back.payloads() if p != b"marker"]
    assert 0 < len(queued) < count
    assert sum(map(len, queued)) <= cap + size  # the cap, give or take the last message

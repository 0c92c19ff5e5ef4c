"""Sparkplug B lifecycle on a real Mosquitto, decoded by an independent Sparkplug package.

We encode with the Tahu helper of ``sparkplug-b-packets``; the observer here
decodes with the protobuf classes of ``esio-spb-builder`` (another PyPI
package) and encodes the NCMD rebirth with them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from esio_spb_builder.core import sparkplug_b_pb2 as other_pb2
from paho.mqtt.enums import CallbackAPIVersion

from agent.mqtt import MqttConfig, PahoPublisher
from agent.spool import Spool
from deploy.broker import MosquittoBroker
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


class Observer:
    """Subscribes to ``spBv1.0/#`` and decodes every message with the other package."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.lock = threading.Lock()
        self.msgs: list[tuple[str, Any]] = []
        self.ready = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="spb-host", protocol=paho.MQTTv5)
        c.on_connect = lambda cl, *a: (cl.subscribe("spBv1.0/#", qos=1), self.ready.set())
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=5)
        c.loop_start()
        self.client = c
        wait_for(self.ready.is_set, 10, "observer connection")

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.msgs.append((msg.topic, other_pb2.Payload.FromString(bytes(msg.payload))))

    def of(self, kind: str) -> list[tuple[str, Any]]:
        with self.lock:
            return [(t, p) for t, p in self.msgs if t.split("/")[2] == kind]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()


def metrics(p: Any) -> dict[str, Any]:
    out = {}
    for m in p.metrics:
        out[m.name] = getattr(m, m.WhichOneof("value")) if m.WhichOneof("value") else None
    return out


@pytest.fixture
def broker(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    return mosquitto_factory()


@pytest.fixture
def observer(broker: MosquittoBroker) -> Iterator[Observer]:
    o = Observer(broker)
    try:
        yield o
    finally:
        o.close()


def test_births_rebirth_will_and_clean_death(broker: MosquittoBroker, observer: Observer,
                                             tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    cfg = MqttConfig(host=broker.host, port=broker.port, org="acme", device="dev1",
                     sparkplug=True, sparkplug_devices=("press-1", "pq-2"), keepalive=5)
    detail = {"epsilon": 1.25, "epsilon_budget": 8.0, "delta": 1e-5, "halted": 0,
              "records": 42}
    pub = PahoPublisher(cfg, spool, state_detail=lambda: detail)
    pub.sparkplug_channels = {"press-1": 2, "pq-2": 1}
    pub.start()
    try:
        wait_for(lambda: len(observer.of("DBIRTH")) == 2, 15, "NBIRTH and two DBIRTHs")
        [(topic, nb)] = observer.of("NBIRTH")
        assert topic == "spBv1.0/acme/NBIRTH/dev1"
        first_bd = pub.bd_seq % 256
        m = metrics(nb)
        assert m["bdSeq"] == first_bd and nb.seq == 0
        assert m["Node Control/Rebirth"] is False
        assert m["Privacy/Epsilon Spent"] == 1.25 and m["Privacy/Epsilon Budget"] == 8.0
        assert m["Privacy/Halted"] is False and m["Records/Released"] == 42
        assert m["Spool/Depth"] == 0
        dbirths = observer.of("DBIRTH")
        assert [t for t, _ in dbirths] == ["spBv1.0/acme/DBIRTH/dev1/press-1",
                                           "spBv1.0/acme/DBIRTH/dev1/pq-2"]
        assert [p.seq for _, p in dbirths] == [1, 2]
        assert metrics(dbirths[0][1])["Channels"] == 2

        # rebirth on NCMD Node Control/Rebirth, encoded by the other package
        cmd = other_pb2.Payload()
        rb = cmd.metrics.add()
        rb.name, rb.datatype, rb.boolean_value = "Node Control/Rebirth", 11, True
        detail["halted"] = 1
        observer.client.publish("spBv1.0/acme/NCMD/dev1", cmd.SerializeToString(), qos=1)
        wait_for(lambda: len(observer.of("NBIRTH")) == 2, 15, "rebirth")
        wait_for(lambda: len(observer.of("DBIRTH")) == 4, 15, "device rebirths")
        nb2 = observer.of("NBIRTH")[1][1]
        assert metrics(nb2)["bdSeq"] == first_bd and nb2.seq == 0  # same MQTT session
        assert metrics(nb2)["Privacy/Halted"] is True

        # connection lost without DISCONNECT: the broker publishes our will, the NDEATH
        sock = pub._client.socket() if pub._client is not None else None
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        wait_for(lambda: len(observer.of("NDEATH")) == 1, 20, "NDEATH will")
        [(topic, nd)] = observer.of("NDEATH")
        assert topic == "spBv1.0/acme/NDEATH/dev1"
        assert metrics(nd) == {"bdSeq": first_bd}
        # the next session: bdSeq + 1 (persisted), NBIRTH again
        wait_for(lambda: len(observer.of("NBIRTH")) == 3, 20, "NBIRTH after reconnect")
        assert metrics(observer.of("NBIRTH")[2][1])["bdSeq"] == (first_bd + 1) % 256
        assert int(spool.get_meta("bd_seq") or 0) == pub.bd_seq
    finally:
        pub.close()
    # clean close: DDEATH per device, then NDEATH with the session's bdSeq
    wait_for(lambda: len(observer.of("NDEATH")) == 2, 15, "explicit NDEATH")
    assert metrics(observer.of("NDEATH")[1][1]) == {"bdSeq": (first_bd + 1) % 256}
    assert [t for t, _ in observer.of("DDEATH")] == ["spBv1.0/acme/DDEATH/dev1/press-1",
                                                     "spBv1.0/acme/DDEATH/dev1/pq-2"]
    spool.close()


def test_without_sparkplug_nothing_is_published_on_spbv1(broker: MosquittoBroker,
                                                         observer: Observer,
                                                         tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    pub = PahoPublisher(MqttConfig(host=broker.host, port=broker.port, org="acme",
                                   device="dev1"), spool)
    pub.start()
    try:
        assert pub.wait_connected(15)
    finally:
        pub.close()
    spool.close()
    assert observer.of("NBIRTH") == [] and observer.of("NDEATH") == []

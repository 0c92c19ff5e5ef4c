"""Broker outage and in-process publisher behaviour against a real Mosquitto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import nacl.signing
import pytest

from agent.mqtt import MqttConfig, PahoPublisher
from agent.outbox import Outbox
from agent.privacy import Accountant, GaussianRelease
from agent.spool import Spool
from deploy.broker import MosquittoBroker
from protocol import envelope, topics
from tests.integration.agent.transport._helpers import Subscriber
from tests.integration.conftest import MQTT_ORG, MQTT_USERS
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration


class Device:
    def __init__(self, tmp: Path, broker: MosquittoBroker, *, device: str = "dev1",
                 on_message: object = None) -> None:
        pw = tmp / f"{device}.password"
        pw.write_text(MQTT_USERS[device] + "\n")
        self.device = device
        self.key = nacl.signing.SigningKey.generate()
        self.spool = Spool(tmp / f"{device}-spool.db")
        self.acc = Accountant(epsilon_budget=1e6, delta=1e-5, state_path=tmp / f"{device}.json")
        cfg = MqttConfig(host=broker.host, port=broker.port, org=MQTT_ORG, device=device,
                         username=device, password_file=pw, backoff_initial=0.05,
                         backoff_max=0.3, keepalive=5, max_inflight=5)
        self.pub = PahoPublisher(cfg, self.spool, on_message=on_message)  # type: ignore[arg-type]
        self.outbox = Outbox(self.acc, self.spool, self.pub)

    def release(self, topic: str | None = None) -> int:
        def build(seq: int) -> tuple[str, bytes]:
            body = json.dumps({"seq": seq}).encode()
            sealed = envelope.sign(body, signing_key=self.key, kid=self.device,
                                   content_type="application/json")
            return topic or topics.up(MQTT_ORG, self.device), sealed
        return self.outbox.release(build, [GaussianRelease(noise_multiplier=8.0)]).seq

    def close(self) -> None:
        self.pub.close()
        self.spool.close()


@pytest.fixture
def sub(mosquitto: MosquittoBroker) -> Iterator[Subscriber]:
    s = Subscriber(mosquitto)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def dev(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Device]:
    d = Device(tmp_path, mosquitto)
    try:
        yield d
    finally:
        d.close()


def test_broker_outage_every_message_once_in_order(mosquitto: MosquittoBroker, sub: Subscriber,
                                                   dev: Device) -> None:
    dev.pub.start()
    assert dev.pub.wait_connected(10)
    for _ in range(30):
        dev.release()
    wait_for(lambda: len(sub.unique_in_order()) >= 10, 20, "first messages")
    mosquitto.stop()                      # outage while messages are still flowing
    for _ in range(30):                   # keep producing: they go to the spool
        dev.release()
    assert dev.spool.depth > 0
    assert not dev.pub.connected
    mosquitto.start()                     # same port, persistence on
    for _ in range(20):
        dev.release()
    wait_for(lambda: len(sub.unique_in_order()) == 80, 30, "all 80 messages after the outage")
    wait_for(lambda: dev.spool.depth == 0, 10, "spool drained")
    assert sub.unique_in_order() == list(range(80))
    assert dev.pub.stats.connects >= 2 and dev.pub.stats.callback_errors == 0
    # births carry an increasing bdSeq; the second session's birth is retained
    births = [s for s in sub.states if s["online"]]
    assert len({b["bd_seq"] for b in births}) >= 2
    assert births[-1]["bd_seq"] == dev.pub.bd_seq


def test_clean_close_publishes_death_with_same_bdseq(sub: Subscriber, dev: Device) -> None:
    dev.pub.start()
    assert dev.pub.wait_connected(10)
    wait_for(lambda: any(s["online"] for s in sub.states), 10, "birth")
    bd = dev.pub.bd_seq
    dev.pub.close()
    wait_for(lambda: any(not s["online"] for s in sub.states), 10, "death")
    death = [s for s in sub.states if not s["online"]][-1]
    assert death["bd_seq"] == bd and death["device"] == "dev1"


def test_acl_rejection_goes_to_dead_letters_and_queue_moves_on(sub: Subscriber,
                                                               dev: Device) -> None:
    dev.pub.start()
    assert dev.pub.wait_connected(10)
    dev.release(topic=topics.up(MQTT_ORG, "dev2"))   # dev1 may not publish as dev2
    dev.release()
    wait_for(lambda: dev.spool.depth == 0, 10, "spool drained")
    assert dev.spool.dead == 1 and dev.pub.stats.rejected == 1
    # PUBACK precedes delivery to subscribers: wait for it, then check nothing else came
    wait_for(lambda: sub.unique_in_order() == [1], 10, "the permitted message")
    time.sleep(0.2)
    assert sub.unique_in_order() == [1]


def test_callback_errors_are_contained_and_dead_loop_restarted(
        tmp_path: Path, mosquitto: MosquittoBroker, sub: Subscriber,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(topic: str, payload: bytes) -> None:
        raise RuntimeError("handler bug")

    d = Device(tmp_path, mosquitto, on_message=boom)
    try:
        real = d.pub._run_session
        calls = {"n": 0}

        def flaky() -> None:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("simulated crash of the network loop")
            real()

        monkeypatch.setattr(d.pub, "_run_session", flaky)
        d.pub.start()
        assert d.pub.wait_connected(10)
        assert d.pub.stats.loop_restarts == 1
        sub.client.publish(topics.down(MQTT_ORG, "dev1"), b"cmd", qos=1)
        wait_for(lambda: d.pub.stats.callback_errors >= 1, 10, "guarded callback error")
        d.release()
        wait_for(lambda: sub.unique_in_order() == [0], 10, "message after the errors")
    finally:
        d.close()


def test_wrong_password_is_reported_not_raised(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    d = Device(tmp_path, mosquitto)
    (tmp_path / "dev1.password").write_text("wrong\n")
    try:
        d.pub.start()
        wait_for(lambda: d.pub.stats.last_error is not None, 10, "refusal")
        assert not d.pub.connected
        assert "refused" in (d.pub.stats.last_error or "") or d.pub.stats.connect_failures
    finally:
        d.close()


@pytest.mark.slow
def test_soak_repeated_outages_and_broker_crash(mosquitto: MosquittoBroker, sub: Subscriber,
                                                dev: Device) -> None:
    """Five outages (four clean stops, one SIGKILL of the broker) while producing."""
    dev.pub.start()
    assert dev.pub.wait_connected(10)
    produced = 0
    for cycle in range(5):
        for _ in range(100):
            dev.release()
            produced += 1
        wait_for(lambda: dev.spool.depth == 0, 30, "spool drained before the outage")
        # drained = PUBACKed: a broker crash now must not lose them for a persistent
        # subscriber that already received them
        wait_for(lambda n=produced: len(sub.unique_in_order()) == n, 30, "delivered")
        if cycle == 2:
            mosquitto.kill()
        else:
            mosquitto.stop()
        for _ in range(50):
            dev.release()
            produced += 1
        mosquitto.start()
    wait_for(lambda: len(sub.unique_in_order()) == produced, 60, "everything after the outages")
    assert sub.unique_in_order() == list(range(produced))
    assert dev.pub.stats.connects >= 6

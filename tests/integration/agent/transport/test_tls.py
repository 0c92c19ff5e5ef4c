"""TLS with client certificates plus username/password file, against a real Mosquitto."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.mqtt import MqttConfig, PahoPublisher
from agent.outbox import Outbox
from agent.privacy import Accountant, GaussianRelease
from agent.spool import Spool
from deploy.broker import MosquittoBroker, device_acl, make_local_pki
from protocol import topics
from tests.integration.conftest import MQTT_ORG, MQTT_USERS
from tests.integration.helpers import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed"),
]


def _device(tmp_path: Path, broker: MosquittoBroker, **tls: Path) -> tuple[PahoPublisher, Spool]:
    pw = tmp_path / "dev1.password"
    pw.write_text(MQTT_USERS["dev1"] + "\n")
    spool = Spool(tmp_path / "spool.db")
    cfg = MqttConfig(host=broker.host, port=broker.port, org=MQTT_ORG, device="dev1",
                     username="dev1", password_file=pw, backoff_initial=0.05, backoff_max=0.2,
                     **tls)  # type: ignore[arg-type]
    return PahoPublisher(cfg, spool), spool


def test_tls_client_cert_publish_and_untrusted_ca_refused(
        tmp_path: Path, mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    pki = make_local_pki(tmp_path / "pki", clients=("dev1",))
    broker = mosquitto_factory(users=MQTT_USERS, acl=device_acl(MQTT_ORG), tls=pki.server)
    cert, key = pki.clients["dev1"]
    pub, spool = _device(tmp_path, broker, ca_file=pki.ca, cert_file=cert, key_file=key)
    acc = Accountant(epsilon_budget=100.0, delta=1e-5, state_path=tmp_path / "p.json")
    try:
        outbox = Outbox(acc, spool, pub)
        pub.start()
        assert pub.wait_connected(15), pub.stats.last_error
        outbox.release(lambda seq: (topics.up(MQTT_ORG, "dev1"), b"sealed"),
                       [GaussianRelease(noise_multiplier=8.0)])
        wait_for(lambda: spool.depth == 0, 10, "PUBACK over TLS")
        assert pub.stats.acked == 1
    finally:
        pub.close()
        spool.close()

    # a client that trusts another CA must not connect (server authentication works)
    other = make_local_pki(tmp_path / "other")
    (tmp_path / "second").mkdir()
    pub2, spool2 = _device(tmp_path / "second", broker, ca_file=other.ca, cert_file=cert,
                           key_file=key)
    try:
        pub2.start()
        wait_for(lambda: pub2.stats.connect_failures >= 1, 15, "TLS failure")
        assert not pub2.connected
        assert "certificate" in (pub2.stats.last_error or "").lower()
    finally:
        pub2.close()
        spool2.close()

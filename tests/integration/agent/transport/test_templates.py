"""The shipped production broker config and ACL template work with a real Mosquitto."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.mqtt import MqttConfig, PahoPublisher
from agent.spool import Spool
from deploy.broker import free_port, make_local_pki
from protocol import topics
from tests.integration.agent.transport._helpers import REPO
from tests.integration.helpers import wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("mosquitto") is None or shutil.which("openssl") is None,
                       reason="mosquitto and openssl needed"),
]


@pytest.fixture
def production_broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    pki = make_local_pki(tmp_path / "etc", clients=("dev1",))
    etc = tmp_path / "etc"
    port = free_port()
    conf = (REPO / "deploy/mosquitto/splitfed.conf").read_text()
    conf = (conf.replace("/etc/mosquitto/splitfed/", f"{etc}/")
            .replace("/var/lib/mosquitto/", f"{tmp_path}/")
            .replace("listener 8883", f"listener {port} 127.0.0.1")
            .replace("log_dest syslog", f"log_dest file {tmp_path}/mosquitto.log"))
    if os.geteuid() == 0:
        conf += f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (tmp_path / "m.conf").write_text(conf)
    acl = (REPO / "deploy/mosquitto/acl.template").read_text().replace("@ORG@", "acme")
    (etc / "acl").write_text(acl)
    (etc / "passwd").touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(etc / "passwd"), "dev1", "dev1-pw"], check=True,
                   capture_output=True, timeout=30)
    assert pki.server.certfile == etc / "server.crt"
    proc = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "m.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield port, etc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_production_config_tls_password_and_acl(tmp_path: Path,
                                                production_broker: tuple[int, Path]) -> None:
    port, etc = production_broker
    (tmp_path / "pw").write_text("dev1-pw\n")
    spool = Spool(tmp_path / "spool.db")
    cfg = MqttConfig(host="127.0.0.1", port=port, org="acme", device="dev1", username="dev1",
                     password_file=tmp_path / "pw", ca_file=etc / "ca.crt",
                     cert_file=etc / "dev1.crt", key_file=etc / "dev1.key",
                     backoff_initial=0.05, backoff_max=0.3)
    pub = PahoPublisher(cfg, spool)
    try:
        spool.put(topics.up("acme", "dev1"), b"own topic")
        spool.put(topics.up("acme", "dev2"), b"someone else's topic")
        pub.start()
        assert pub.wait_connected(20), pub.stats.last_error
        wait_for(lambda: spool.depth == 0, 10, "both messages answered")
        assert pub.stats.acked == 1 and spool.dead == 1
    finally:
        pub.close()
        spool.close()

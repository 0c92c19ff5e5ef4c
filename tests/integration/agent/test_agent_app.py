"""The whole agent, in-process, against real parts.

Real Mosquitto (password auth + per-device ACL), a real pymodbus TCP server
simulating a PLAID smart-plug meter (capture buffer with the class in a
status register), the real LiteRT client half, and a small stand-in server
half in the test (real LiteRT ``server.tflite``) that returns signed
gradients. The agent reads, trains, and publishes signed, decodable
messages; forged gradients are rejected and counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.app import AgentApp
from agent.config import load_config
from deploy.broker import MosquittoBroker
from models.manifest import list_artifacts
from models.runtime import ServerRuntime
from protocol import keys, topics
from protocol.messages import (
    ActivationBatch,
    ClientWeights,
    Command,
    GradientBatch,
    open_sealed,
    seal,
)
from tests.integration.conftest import MQTT_ORG, MQTT_USERS
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

DEVICE = "dev1"


class StandInServer:
    """Plays gateway+server: verifies device messages, trains the server half, signs gradients."""

    def __init__(self, broker: MosquittoBroker, *, manifest: Any, device_key: Any,
                 server_key: Any) -> None:
        self.server = ServerRuntime.from_manifest(manifest)
        self.device_key, self.server_key = device_key, server_key
        self.lock = threading.Lock()
        self.activations: list[ActivationBatch] = []
        self.weights: list[ClientWeights] = []
        self.losses: list[float] = []
        self.forge_next = False
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="stand-in-server",
                                  protocol=paho.MQTTv5)
        self.client.username_pw_set("server", MQTT_USERS["server"])
        self.client.on_message = self._on_message
        self.ready = threading.Event()
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.subscribe(topics.devices_filter(MQTT_ORG, "up"), qos=1)
        self.client.loop_start()
        wait_for(self.ready.is_set, 10, "stand-in server subscription")

    def command(self, **kw: Any) -> None:
        msg = Command(device=DEVICE, **kw)
        self.client.publish(topics.down(MQTT_ORG, DEVICE),
                            seal(msg, signing_key=self.server_key, kid="server"), qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        msg = open_sealed(bytes(m.payload), verify_key=self.device_key)  # raises if forged
        if isinstance(msg, ClientWeights):
            with self.lock:
                self.weights.append(msg)
            return
        assert isinstance(msg, ActivationBatch)
        assert msg.labels is not None
        loss, grad = self.server.train(msg.activations.astype(np.float32), msg.labels, lr=0.01)
        with self.lock:
            self.activations.append(msg)
            self.losses.append(loss)
            forge = self.forge_next
            self.forge_next = False
        reply = GradientBatch(session=msg.session, round=msg.round, step=msg.step,
                              device=msg.device, seq=msg.seq, grad=grad, loss=loss)
        signer = keys.generate_signing_key() if forge else self.server_key
        self.client.publish(topics.down(MQTT_ORG, DEVICE),
                            seal(reply, signing_key=signer, kid="server"), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho 2.2 keeps its wake-up socket pair open otherwise


@pytest.fixture
def agent_setup(tmp_path: Path, mosquitto: MosquittoBroker,
                data_dir: Path) -> Iterator[tuple[AgentApp, StandInServer, Path]]:
    manifests = [m for m in list_artifacts() if m.input_shape[0] == 1]
    if not manifests:
        pytest.fail("no committed model artifact with one input channel")
    manifest = manifests[0]
    state = tmp_path / "state"
    device_key = keys.generate_signing_key()
    keys.save_signing_key(device_key, state / "device.key")
    server_key = keys.generate_signing_key()
    (tmp_path / "server.pub").write_text(keys.public_key_hex(server_key))
    (tmp_path / "dev1.password").write_text(MQTT_USERS[DEVICE])
    from models.manifest import artifact_dir

    manifest_path = artifact_dir(manifest.model_id, manifest.cut) / "manifest.json"
    (tmp_path / "agent.toml").write_text(f"""
[device]
org = "{MQTT_ORG}"
id = "{DEVICE}"
state_dir = "{state}"

[mqtt]
host = "{mosquitto.host}"
port = {mosquitto.port}
username = "{DEVICE}"
password_file = "dev1.password"

[model]
manifest = "{manifest_path}"
server_key = "server.pub"
require_proof = false

[privacy]
epsilon_budget = 1000.0
noise_multiplier = 0.5
clip_norm = 5.0
labels = "public"
mode = "sl-dpsgd"
dp_sgd_noise_multiplier = 0.5

[training]
gradient_timeout_s = 20.0

[[sensors.devices]]
name = "plug"
transport = "simulated"
dataset = "{data_dir / 'PLAID_TRAIN.ts'}"
indices = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
mode = "capture"
sample_rate = 200.0
window = {{ length = {manifest.input_shape[1]} }}
""")
    cfg = load_config(tmp_path / "agent.toml", environ={})
    app = AgentApp(cfg, rng=np.random.default_rng(7))
    server = StandInServer(mosquitto, manifest=manifest, device_key=device_key.verify_key,
                           server_key=server_key)
    runner = threading.Thread(target=app.run, name="agent-main")
    runner.start()
    try:
        yield app, server, tmp_path
    finally:
        app.stop()
        runner.join(timeout=20)
        server.close()


def test_agent_trains_a_round_and_publishes_signed_messages(
        agent_setup: tuple[AgentApp, StandInServer, Path]) -> None:
    app, server, _ = agent_setup
    wait_for(lambda: app.publisher.connected, 15, "agent connection")
    wait_for(lambda: len(app.records) >= 4, 30, "windows from the simulated Modbus meter")
    before = [w.copy() for w in app.runtime.get_weights()]
    server.command(session="s1", round=0, kind="start_round",
                   args={"steps": 6, "batch_size": 4, "lr": 0.05})
    wait_for(lambda: len(server.weights) == 1, 90, "round-end client weights")

    acts = server.activations
    assert len(acts) == 6
    assert [a.seq for a in acts] == sorted(a.seq for a in acts)
    assert all(a.session == "s1" and a.device == DEVICE for a in acts)
    assert all(a.model_hash == app.runtime.sha256 for a in acts)
    assert all(a.dp.noise_multiplier == 0.5 and a.dp.clip_norm == 5.0 for a in acts)
    eps = [a.epsilon_spent for a in acts]
    assert eps == sorted(eps) and eps[0] > 0
    # labels come from the meter's status register: real PLAID classes
    assert all(a.labels is not None and int(a.labels.max()) < 11 for a in acts)

    up = server.weights[0]
    assert up.num_samples == sum(a.activations.shape[0] for a in acts)
    assert up.weights_dp == "dp_sgd"
    assert any(not np.array_equal(b, w) for b, w in zip(before, up.weights, strict=True)), \
        "client weights did not change: backward never ran"
    assert app.counters["gradients_applied"] == 6
    # what the device reported equals what its accountant persisted
    assert abs(up.epsilon_spent - app.accountant.epsilon) < 1e-12


def test_forged_gradient_is_rejected_and_counted(
        agent_setup: tuple[AgentApp, StandInServer, Path]) -> None:
    app, server, _ = agent_setup
    wait_for(lambda: app.publisher.connected, 15, "agent connection")
    wait_for(lambda: len(app.records) >= 4, 30, "windows")
    server.forge_next = True
    server.command(session="s1", round=0, kind="start_round",
                   args={"steps": 3, "batch_size": 2, "lr": 0.05})
    wait_for(lambda: app.counters["rejected_BadSignature"] >= 1, 60, "forged gradient rejected")
    wait_for(lambda: app.counters["gradients_applied"] >= 2, 60, "honest gradients applied")
    assert app.counters["gradients_applied"] == 2  # the forged one was never applied


def test_status_file_reports_without_secrets(
        agent_setup: tuple[AgentApp, StandInServer, Path]) -> None:
    app, _, tmp = agent_setup
    wait_for(lambda: app.config.status_path.exists(), 15, "status file")
    text = app.config.status_path.read_text()
    seed = (tmp / "state" / "device.key").read_text().strip()
    assert seed not in text
    assert '"epsilon_budget": 1000.0' in text

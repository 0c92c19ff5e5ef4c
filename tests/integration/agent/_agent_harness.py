"""Drive the real ``splitfed-agent run`` process from tests and benchmarks.

* :func:`write_agent_files` - keys, MQTT password, agent TOML in a temp dir;
* :class:`SimulatorProcess` - ``splitfed-agent simulate`` (a PLAID meter over
  Modbus TCP loopback) as a separate process;
* :class:`AgentProcess` - ``splitfed-agent run --config FILE`` as a child
  process (stderr to a log file), killed or stopped by its own pid;
* :class:`StandInServer` - plays gateway + server on the broker: verifies every
  device message, answers activations with signed gradients (real LiteRT
  ``server.tflite``, or an instant zero gradient), records what arrived.
  Persistent MQTT session, so a broker restart loses nothing queued for it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import paho.mqtt.client as paho
from nacl.signing import SigningKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deploy.broker import MosquittoBroker
from models.manifest import Manifest, artifact_dir, list_artifacts
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

REPO = Path(__file__).resolve().parents[3]
AGENT_CLI = str(Path(sys.executable).parent / "splitfed-agent")


def _privacy_block(privacy: str) -> str:
    """The tests' [privacy] body: sl-dpsgd with public labels unless the test says otherwise
    (these fault tests need round-end weight uploads, which sl-frozen never sends)."""
    lines = [privacy]
    if "mode" not in privacy:
        lines.append('mode = "sl-dpsgd"')
    if "label" not in privacy:
        lines.append('labels = "public"')
    return "\n".join(lines)
DEVICE = "dev1"


def pick_manifest() -> Manifest:
    """The committed client/server pair the agent tests run (one input channel)."""
    found = [m for m in list_artifacts() if m.input_shape[0] == 1]
    if not found:
        raise AssertionError("no committed model artifact with one input channel")
    return found[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFiles:
    config: Path
    state_dir: Path
    device_key: SigningKey
    server_key: SigningKey
    manifest: Manifest


def tcp_capture_sensor(port: int, length: int) -> str:
    """``[[sensors.devices]]`` reading capture buffers from a simulator on ``port``."""
    return f"""
[[sensors.devices]]
name = "plug"
transport = "tcp"
host = "127.0.0.1"
port = {port}
mode = "capture"
window = {{ length = {length} }}
"""


def simulated_sensor(dataset: Path, indices: list[int], length: int, *,
                     loop: bool = False) -> str:
    """``[[sensors.devices]]`` with the agent's in-process simulated PLAID meter."""
    return f"""
[[sensors.devices]]
name = "plug"
transport = "simulated"
dataset = "{dataset}"
indices = {indices}
loop = {str(loop).lower()}
mode = "capture"
sample_rate = 200.0
window = {{ length = {length} }}
"""


def write_agent_files(tmp: Path, broker: MosquittoBroker, *, sensors: str,
                      privacy: str, training: str = "", manifest: Manifest | None = None,
                      device_key: SigningKey | None = None,
                      server_key: SigningKey | None = None) -> AgentFiles:
    """Keys, password file and ``agent.toml`` under ``tmp`` (state in ``tmp/state``)."""
    manifest = manifest or pick_manifest()
    state = tmp / "state"
    device_key = device_key or keys.generate_signing_key()
    server_key = server_key or keys.generate_signing_key()
    if not (state / "device.key").exists():
        keys.save_signing_key(device_key, state / "device.key")
    (tmp / "server.pub").write_text(keys.public_key_hex(server_key))
    (tmp / "dev1.password").write_text(MQTT_USERS[DEVICE])
    manifest_path = artifact_dir(manifest.model_id, manifest.cut) / "manifest.json"
    config = tmp / "agent.toml"
    config.write_text(f"""
[device]
org = "{MQTT_ORG}"
id = "{DEVICE}"
state_dir = "{state}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
username = "{DEVICE}"
password_file = "dev1.password"
keepalive = 5

[model]
manifest = "{manifest_path}"
server_key = "server.pub"
require_proof = false

[privacy]
{_privacy_block(privacy)}

[training]
{training}
{sensors}
""")
    return AgentFiles(config=config, state_dir=state, device_key=device_key,
                      server_key=server_key, manifest=manifest)


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITFED_AGENT_")}
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


class SimulatorProcess:
    """``splitfed-agent simulate --dataset PATH --tcp-port 0 [--once]``; ``port`` once ready."""

    def __init__(self, dataset: Path, *, indices: list[int], workdir: Path,
                 once: bool = True) -> None:
        idx = workdir / "indices.txt"
        idx.write_text(" ".join(str(i) for i in indices))
        cmd = [AGENT_CLI, "simulate", "--dataset", str(dataset), "--tcp-port", "0",
               "--indices", str(idx), *(["--once"] if once else [])]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(None), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the simulator prints one JSON line when ready
        if not line:
            self.close()
            raise AssertionError("simulator exited before it was ready")
        self.ready: dict[str, Any] = json.loads(line)
        self.port = int(self.ready["tcp_port"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class AgentProcess:
    """The real agent: ``splitfed-agent run --config FILE`` in a child process."""

    def __init__(self, files: AgentFiles, *, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.files = files
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.proc = subprocess.Popen([AGENT_CLI, "run", "--config", str(files.config)],
                                     cwd=REPO, env=_env(env), stdout=subprocess.DEVNULL,
                                     stderr=self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        """The status file the agent rewrites every 2 s ({} before the first one)."""
        try:
            data: dict[str, Any] = json.loads((self.files.state_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def cli_status(state_dir: Path) -> tuple[int, str]:
    """``splitfed-agent status --state-dir DIR``: (exit code, stdout)."""
    out = subprocess.run([AGENT_CLI, "status", "--state-dir", str(state_dir)], cwd=REPO,
                         env=_env(None), capture_output=True, text=True, timeout=60, check=False)
    return out.returncode, out.stdout


def spool_snapshot(state_dir: Path) -> tuple[int, list[int]]:
    """(next seq the agent would allocate, seqs still in its spool) - agent must be stopped."""
    db = sqlite3.connect(state_dir / "spool.sqlite")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        seqs = [int(r[0]) for r in db.execute(
            "SELECT seq FROM messages WHERE seq IS NOT NULL ORDER BY id")]
    finally:
        db.close()
    return (int(row[0]) if row else 0), seqs


class StandInServer:
    """Plays gateway + server for ``dev1``: verify, answer with signed gradients, record."""

    def __init__(self, broker: MosquittoBroker, files: AgentFiles, *, train: bool = True,
                 client_id: str = "stand-in-server") -> None:
        self.files = files
        self.runtime = ServerRuntime.from_manifest(files.manifest) if train else None
        self.act_shape = files.manifest.activation_shape
        self.lock = threading.Lock()
        self.arrivals: list[int] = []          # seq of every up message, in arrival order
        self.payloads: dict[int, set[bytes]] = {}
        self.activations: dict[int, ActivationBatch] = {}
        self.weights: list[ClientWeights] = []
        self.states: list[dict[str, Any]] = []
        self.answer = True
        self.connected = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        c.username_pw_set("server", MQTT_USERS["server"])
        c.reconnect_delay_set(1, 1)
        c.on_connect = self._on_connect
        c.on_disconnect = lambda *a: self.connected.clear()
        c.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, keepalive=5, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        wait_for(self.connected.is_set, 15, "stand-in server connection")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe([(topics.up(MQTT_ORG, DEVICE), 1),
                              (topics.state(MQTT_ORG, DEVICE), 1)])
            self.connected.set()

    def command(self, **kw: Any) -> None:
        msg = Command(device=DEVICE, **kw)
        self.client.publish(topics.down(MQTT_ORG, DEVICE),
                            seal(msg, signing_key=self.files.server_key, kid="server"), qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, m: paho.MQTTMessage) -> None:
        if m.topic.endswith("/state"):
            with self.lock:
                self.states.append(json.loads(m.payload))
            return
        payload = bytes(m.payload)
        msg = open_sealed(payload, verify_key=self.files.device_key.verify_key)  # raises if forged
        assert isinstance(msg, ActivationBatch | ClientWeights), type(msg)
        with self.lock:
            self.arrivals.append(msg.seq)
            self.payloads.setdefault(msg.seq, set()).add(payload)
            if isinstance(msg, ClientWeights):
                self.weights.append(msg)
                return
            self.activations[msg.seq] = msg
            if not self.answer:
                return
        assert msg.labels is not None
        if self.runtime is not None:
            loss, grad = self.runtime.train(msg.activations.astype(np.float32), msg.labels,
                                            lr=0.01)
        else:
            loss, grad = 0.0, np.zeros((msg.activations.shape[0], *self.act_shape), np.float32)
        reply = GradientBatch(session=msg.session, round=msg.round, step=msg.step,
                              device=msg.device, seq=msg.seq, grad=grad, loss=loss)
        self.client.publish(topics.down(MQTT_ORG, DEVICE),
                            seal(reply, signing_key=self.files.server_key, kid="server"), qos=1)

    def unique_in_order(self) -> list[int]:
        """Sequence numbers in first-arrival order (QoS 1 duplicates removed)."""
        seen: set[int] = set()
        out: list[int] = []
        with self.lock:
            for s in self.arrivals:
                if s not in seen:
                    seen.add(s)
                    out.append(s)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho 2.2 keeps its wake-up socket pair open otherwise

"""Test-side MQTT subscriber (plays the gateway) and driver-process helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deploy.broker import MosquittoBroker
from protocol import envelope
from protocol.training import ActivationBatch
from tests.integration.conftest import MQTT_ORG, MQTT_USERS
from tests.integration.helpers import wait_for

REPO = Path(__file__).resolve().parents[4]


class Subscriber:
    """Persistent-session QoS 1 subscriber on ``splitfed/v1/<org>/#`` (user ``gateway``)."""

    def __init__(self, broker: MosquittoBroker, *, org: str = MQTT_ORG) -> None:
        self.lock = threading.Lock()
        self.arrivals: list[int] = []        # seq of every up message, in arrival order
        self.states: list[dict[str, Any]] = []
        self.epsilon_claimed: dict[int, float] = {}  # seq -> epsilon_spent in the message
        self.connected = threading.Event()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-gateway",
                        protocol=paho.MQTTv5)
        c.username_pw_set("gateway", MQTT_USERS["gateway"])
        c.reconnect_delay_set(0.05, 0.3)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = lambda *a: self.connected.clear()
        self.topic = f"splitfed/v1/{org}/#"
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, keepalive=5, clean_start=False, properties=props)
        c.loop_start()
        self.client = c
        wait_for(self.connected.is_set, 10, "subscriber connection")

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)
            self.connected.set()

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/up"):
                env = envelope.peek(bytes(msg.payload))
                if env.content_type == ActivationBatch.CONTENT_TYPE:
                    batch = ActivationBatch.decode(env.payload)
                    self.arrivals.append(batch.seq)
                    self.epsilon_claimed[batch.seq] = batch.epsilon_spent
                else:
                    self.arrivals.append(int(json.loads(env.payload)["seq"]))
            elif msg.topic.endswith("/state"):
                self.states.append(json.loads(msg.payload))

    def unique_in_order(self) -> list[int]:
        """Sequence numbers in first-arrival order (duplicates removed)."""
        seen: set[int] = set()
        out = []
        with self.lock:
            for s in self.arrivals:
                if s not in seen:
                    seen.add(s)
                    out.append(s)
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()


def start_driver(state_dir: Path, broker: MosquittoBroker, *, total: int, budget: float = 1e6,
                 noise: float = 4.0, interval: float = 0.01,
                 env: dict[str, str] | None = None,
                 extra: list[str] | None = None) -> subprocess.Popen[str]:
    pw = state_dir.parent / "dev1.password"
    pw.write_text(MQTT_USERS["dev1"] + "\n")
    cmd = [sys.executable, "-m", "tests.integration.agent.transport._driver",
           "--state-dir", str(state_dir), "--port", str(broker.port), "--password-file", str(pw),
           "--total", str(total), "--budget", repr(budget), "--noise", repr(noise),
           "--interval", repr(interval), *(extra or [])]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=full_env)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err

"""A real capture: the session's envelopes go through Mosquitto, the audit recorder records them.

The recorder (``splitfed audit capture``) writes the ``mosquitto_sub -F %x``
format. The audit scored from that hex capture must equal the audit scored
from the envelopes as the harness wrote them: the production path
(docs/audit.md) reads what the broker carried.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from audit.canaries import canaries_for_device, new_plan
from audit.capture import load_capture
from audit.harness import find_manifest, run_session
from audit.one_run import audit_capture
from audit.recorder import CaptureRecorder
from audit.session import privacy_for
from deploy.broker import MosquittoBroker
from models.data import default_window, load_windows
from models.runtime import ClientRuntime
from protocol.envelope import peek
from protocol.topics import down, up
from tests.conftest import DATA_DIR
from tests.integration.conftest import MQTT_USERS

pytestmark = pytest.mark.integration


def _publisher(broker: MosquittoBroker, user: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.username_pw_set(user, MQTT_USERS[user])
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def test_audit_from_a_broker_capture_equals_the_direct_one(mosquitto: MosquittoBroker,
                                                           tmp_path: Path) -> None:
    w = load_windows(default_window("PLAID"), data_dir=DATA_DIR)
    man = find_manifest("mlp_dp", 1)
    plan = new_plan(m=64, shape=man.input_shape, num_classes=man.num_classes, seed=9)
    recs = [(i, w.x_train[i], int(w.y_train[i])) for i in range(24)]
    res = run_session(recs + canaries_for_device(plan),
                      privacy=privacy_for("sl-dpsgd", 4.0, epochs=1), manifest=man,
                      capture_dir=tmp_path / "direct", state_dir=tmp_path / "st", epochs=1)
    cap_dir = tmp_path / "mqtt"
    cap_dir.mkdir()
    rec = CaptureRecorder(host="127.0.0.1", port=mosquitto.port, topic="splitfed/v1/acme/#",
                          out=cap_dir / "acme.hex", username="gateway",
                          password=MQTT_USERS["gateway"])
    dev, srv = _publisher(mosquitto, "dev1"), _publisher(mosquitto, "server")
    try:
        rec.wait_subscribed(15)
        files = sorted((tmp_path / "direct").iterdir())
        for f in files:
            blob = f.read_bytes()
            if peek(blob).kid == "server":
                info = srv.publish(down("acme", res.device), blob, qos=1)
            else:
                info = dev.publish(up("acme", res.device), blob, qos=1)
            info.wait_for_publish(timeout=10)
            assert info.is_published()
        dev.publish(up("acme", res.device), b"not an envelope", qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 15
        while rec.messages < len(files) + 1:
            assert time.monotonic() < deadline, "not every envelope reached the recorder"
            time.sleep(0.05)
    finally:
        for c in (dev, srv):
            c.disconnect()
            c.loop_stop()
            c._reset_sockets()  # paho's wake-up socketpair
        rec.close()
    via_mqtt = load_capture(cap_dir, device=res.device, verify_key=res.verify_key)
    direct = load_capture(tmp_path / "direct", device=res.device, verify_key=res.verify_key)
    assert via_mqtt.rejected == {"MalformedMessage": 1}  # the junk payload, counted
    assert [m.seq for m in via_mqtt.rows] == [m.seq for m in direct.rows]
    assert len(via_mqtt.grads) == len(direct.grads) and len(via_mqtt.weights) == 1
    assert all(np.array_equal(a.activations, b.activations)
               for a, b in zip(via_mqtt.rows, direct.rows, strict=True))
    client = ClientRuntime.from_manifest(man)
    a = audit_capture(plan, via_mqtt, client=client, delta=1e-5)
    b = audit_capture(plan, direct, client=client, delta=1e-5)
    assert a.as_dict() == b.as_dict()
    assert a.reported_epsilon == pytest.approx(res.reported_epsilon)

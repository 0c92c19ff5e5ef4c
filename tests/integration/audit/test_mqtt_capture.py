"""A real capture: the session's envelopes go through Mosquitto, `mosquitto_sub -F %x` records them.

The audit scored from that hex capture must equal the audit scored from the
envelopes as the harness wrote them: the production path (docs/audit.md,
"Running an audit on a production session") reads what the broker carried.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from audit.canaries import canaries_for_device, new_plan
from audit.capture import load_capture
from audit.harness import find_manifest, run_session
from audit.one_run import audit_capture
from audit.session import privacy_for
from deploy.broker import MosquittoBroker
from models.data import default_window, load_windows
from models.runtime import ClientRuntime
from protocol.envelope import peek
from protocol.topics import down, up
from tests.conftest import DATA_DIR
from tests.integration.conftest import MQTT_USERS

pytestmark = pytest.mark.integration


def _pub(broker: MosquittoBroker, user: str, topic: str, path: Path) -> None:
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", user,
                    "-P", MQTT_USERS[user], "-q", "1", "-t", topic, "-f", str(path)],
                   check=True, timeout=10, capture_output=True)


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
    out = (cap_dir / "acme.hex").open("wb")
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mosquitto.port),
                            "-u", "gateway", "-P", MQTT_USERS["gateway"], "-q", "1",
                            "-t", "splitfed/v1/acme/#", "-F", "%x"], stdout=out)
    try:
        probes = 0
        probe = tmp_path / "probe.bin"
        probe.write_bytes(b"probe")
        deadline = time.monotonic() + 15
        while b"70726f6265" not in (cap_dir / "acme.hex").read_bytes():  # hex of b"probe"
            assert time.monotonic() < deadline, "mosquitto_sub never received the probe"
            _pub(mosquitto, "dev1", up("acme", "dev1"), probe)
            probes += 1
            time.sleep(0.2)
        files = sorted((tmp_path / "direct").iterdir())
        for f in files:
            kid = peek(f.read_bytes()).kid
            if kid == "server":
                _pub(mosquitto, "server", down("acme", res.device), f)
            else:
                _pub(mosquitto, "dev1", up("acme", res.device), f)
        deadline = time.monotonic() + 15
        while (cap_dir / "acme.hex").read_bytes().count(b"\n") < probes + len(files):
            assert time.monotonic() < deadline, "not every envelope reached the subscriber"
            time.sleep(0.1)
    finally:
        sub.terminate()
        sub.wait(timeout=10)
        out.close()
    via_mqtt = load_capture(cap_dir, device=res.device, verify_key=res.verify_key)
    direct = load_capture(tmp_path / "direct", device=res.device, verify_key=res.verify_key)
    assert via_mqtt.rejected == {"MalformedMessage": probes}  # the probes, counted
    assert [m.seq for m in via_mqtt.rows] == [m.seq for m in direct.rows]
    assert len(via_mqtt.grads) == len(direct.grads) and len(via_mqtt.weights) == 1
    assert all(np.array_equal(a.activations, b.activations)
               for a, b in zip(via_mqtt.rows, direct.rows, strict=True))
    client = ClientRuntime.from_manifest(man)
    a = audit_capture(plan, via_mqtt, client=client, delta=1e-5)
    b = audit_capture(plan, direct, client=client, delta=1e-5)
    assert a.as_dict() == b.as_dict()
    assert a.reported_epsilon == pytest.approx(res.reported_epsilon)

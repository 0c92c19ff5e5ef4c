"""OPC UA devices against a real asyncua server on a free loopback port."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.sensors.app import open_sensors
from agent.sensors.config import DeviceConfig, parse_sensors_config
from agent.sensors.errors import (
    FrameError,
    NodeStatusError,
    SensorConnectionError,
)
from agent.sensors.opcua import OpcuaReader
from deploy.broker import free_port
from protocol.errors import SensorError
from tests.integration.agent.sensors.opcua_server import (
    OpcuaTestServer,
    make_certificate,
)

pytestmark = pytest.mark.integration

NODES = [{"name": "temp", "node_id": "ns=2;s=Line1.Temp", "type": "double", "scale": 2.0,
          "offset": 1.0},
         {"name": "flow", "node_id": "ns=2;i=1001", "type": "int32"}]


def device(endpoint: str, **kw: Any) -> DeviceConfig:
    table = {"name": "ua", "transport": "opcua", "endpoint": endpoint, "nodes": NODES,
             "label": {"node_id": "ns=2;s=Line1.Label"},
             "counter": {"node_id": "ns=2;s=Line1.Count"},
             "timeout": 2.0, "retries": 0, "backoff": {"base": 0.05, "max": 0.2},
             "sample_rate": 50} | kw
    cfg, problems = parse_sensors_config({"devices": [table]})
    assert cfg is not None, problems
    return cfg.devices[0]


def reader(d: DeviceConfig) -> OpcuaReader:
    from agent.sensors.config import OpcuaTransport

    assert isinstance(d.transport, OpcuaTransport)
    return OpcuaReader(name=d.name, transport=d.transport, timeout=d.timeout, policy=d.policy,
                       sample_rate=d.sample_rate)


def read_until(r: OpcuaReader, pred: Any, deadline_s: float = 10.0) -> Any:
    """Read until ``pred(sample)`` holds; every wait has a deadline."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = r.read()
            if pred(last):
                return last
        except SensorError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"condition not met before the deadline; last: {last!r}")


@pytest.fixture
def server() -> Iterator[OpcuaTestServer]:
    srv = OpcuaTestServer(free_port()).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("acquisition", ["poll", "subscription"])
def test_values_label_counter_and_changes(server: OpcuaTestServer, acquisition: str) -> None:
    r = reader(device(server.endpoint, acquisition=acquisition))
    try:
        s = r.read()
        assert list(s.values) == [21.5 * 2.0 + 1.0, 7.0]
        assert s.label == 3 and s.seq == 0
        server.write("ns=2;s=Line1.Temp", -4.0)
        server.write("ns=2;s=Line1.Count", 12)
        server.write("ns=2;s=Line1.Label", 65535)  # the none value
        s = read_until(r, lambda s: s.seq == 12 and s.values[0] == -7.0)
        assert s.label is None
        assert r.counters().reads_ok >= 2 and r.counters().failures == 0
        assert r.connects == 1
    finally:
        r.close()


@pytest.mark.parametrize("acquisition", ["poll", "subscription"])
def test_wrong_type_and_bad_status_are_counted_not_data(server: OpcuaTestServer,
                                                        acquisition: str) -> None:
    nodes = [{"name": "flow", "node_id": "ns=2;i=1001", "type": "double"}]  # server: Int32
    r = reader(device(server.endpoint, acquisition=acquisition, nodes=nodes))
    try:
        with pytest.raises(FrameError, match="Int32"):
            r.read()
        assert r.counters().crc_errors == 1
    finally:
        r.close()
    text = [{"name": "t", "node_id": "ns=2;s=Line1.Text"}]
    r = reader(device(server.endpoint, acquisition=acquisition, nodes=text))
    try:
        with pytest.raises(FrameError, match="not a numeric type"):
            r.read()
    finally:
        r.close()
    missing = [{"name": "m", "node_id": "ns=2;s=No.Such.Node"}]
    r = reader(device(server.endpoint, acquisition=acquisition, nodes=missing))
    try:
        with pytest.raises(NodeStatusError, match="BadNodeIdUnknown"):
            r.read()
        assert r.counters().exceptions == 1
    finally:
        r.close()


def test_reconnects_with_backoff_after_the_server_restarts(server: OpcuaTestServer) -> None:
    r = reader(device(server.endpoint, acquisition="subscription", timeout=1.0))
    try:
        assert r.read().values[1] == 7.0
        port = server.port
        server.stop()
        deadline = time.monotonic() + 10.0
        with pytest.raises(SensorError):
            while time.monotonic() < deadline:
                r.read()
                time.sleep(0.05)
        failures = r.counters().connection_errors + r.counters().timeouts
        assert failures >= 1
        again = OpcuaTestServer(port).start()
        try:
            again.write("ns=2;i=1001", 99)
            s = read_until(r, lambda s: s.values[1] == 99.0)
            assert s.values[1] == 99.0
            assert r.connects >= 2
            assert r.counters().consecutive_failures == 0
        finally:
            r.close()
            again.stop()
    finally:
        r.close()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    scert, skey = make_certificate(tmp_path, "server", "urn:splitfed:test:server")
    ccert, ckey = make_certificate(tmp_path, "agent", "urn:splitfed:agent:ua")
    return {"scert": scert, "skey": skey, "ccert": ccert, "ckey": ckey}


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
def test_basic256sha256_with_certificates_and_user(pki: dict[str, Path], mode: str) -> None:
    srv = OpcuaTestServer(free_port(), secure=True, cert=pki["scert"], key=pki["skey"],
                          users={"agent": "s3cret"}).start()
    try:
        secure = {"security_policy": "Basic256Sha256", "security_mode": mode,
                  "certificate": str(pki["ccert"]), "private_key": str(pki["ckey"]),
                  "server_certificate": str(pki["scert"]), "username": "agent"}
        r = reader(device(srv.endpoint, password="s3cret", **secure))
        try:
            assert list(r.read().values) == [44.0, 7.0]
        finally:
            r.close()
        # the same without pinning the server certificate (taken from the endpoint list)
        unpinned = {k: v for k, v in secure.items() if k != "server_certificate"}
        r = reader(device(srv.endpoint, password="s3cret", acquisition="poll", **unpinned))
        try:
            assert r.read().label == 3
        finally:
            r.close()
        r = reader(device(srv.endpoint, password="wrong", **secure))
        try:
            with pytest.raises(SensorConnectionError, match="Bad"):
                r.read()
            assert r.counters().connection_errors == 1
        finally:
            r.close()
        r = reader(device(srv.endpoint))  # no security: the server offers none
        try:
            with pytest.raises(SensorConnectionError):
                r.read()
        finally:
            r.close()
    finally:
        srv.stop()


def test_sensors_read_cli_with_an_opcua_device(server: OpcuaTestServer, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "sensors.toml"
    cfg.write_text(f"""
[[sensors.devices]]
name = "line1"
transport = "opcua"
endpoint = "{server.endpoint}"
acquisition = "poll"
timeout = 2.0
nodes = [
  {{ name = "temp", node_id = "ns=2;s=Line1.Temp", type = "double" }},
  {{ name = "flow", node_id = "ns=2;i=1001" }},
]
label = {{ node_id = "ns=2;s=Line1.Label", type = "uint16" }}
""")
    assert main(["sensors", "read", "--config", str(cfg)]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["ok"] and out["values"] == [21.5, 7.0] and out["label"] == 3
    assert out["counters"]["reads_ok"] == 1


def test_open_sensors_gives_a_window_source(server: OpcuaTestServer) -> None:
    cfg, problems = parse_sensors_config({"devices": [{
        "name": "ua", "transport": "opcua", "endpoint": server.endpoint, "nodes": NODES,
        "sample_rate": 200, "window": {"length": 8}}]})
    assert cfg is not None, problems
    s = open_sensors(cfg)
    try:
        w = s.windows["ua"].next_window(timeout=10.0)
        assert w.x.shape == (2, 8) and float(w.x[1, 0]) == 7.0
        assert s.counters()["ua"].reads_ok >= 8
    finally:
        s.close()

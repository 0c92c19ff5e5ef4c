from __future__ import annotations

import tomllib

from agent.sensors.config import (
    ReplayTransport,
    RtuTransport,
    SerialLineTransport,
    TcpTransport,
    parse_sensors_config,
)

GOOD = """
[[sensors.devices]]
name = "press"
transport = "tcp"
host = "10.0.0.5"
port = 5020
unit = 3
timeout = 0.5
retries = 4
backoff = { base = 0.1, max = 10, jitter = 0.1 }
sample_rate = 50
window = { length = 128, hop = 64 }
label = { address = 2, none_value = 65535 }
counter = { address = 0, type = "uint32" }
registers = [
  { name = "temp", address = 10, type = "int16", scale = 0.1, offset = -40 },
  { name = "flow", address = 11, type = "float32", word_order = "little", function = "input" },
]

[[sensors.devices]]
name = "pq-meter"
transport = "rtu"
serial = "/dev/ttyUSB0"
baudrate = 115200
parity = "E"
unit = 7
mode = "capture"
capture = { base = 3000, ack = false }

[[sensors.devices]]
name = "mcu"
transport = "serial_line"
serial = "/dev/ttyACM0"
format = "kv"
channels = ["x", "y"]
label_key = "label"

[[sensors.devices]]
name = "replay"
transport = "replay"
path = "/data/PLAID_TRAIN.ts"
indices = [0, 5, 9]
"""


def test_good_config_parses_every_transport() -> None:
    cfg, problems = parse_sensors_config(tomllib.loads(GOOD)["sensors"])
    assert problems == [] and cfg is not None
    press = cfg.device("press")
    assert press.transport == TcpTransport(host="10.0.0.5", port=5020)
    assert (press.unit, press.timeout, press.policy.retries, press.policy.base_s) == (3, 0.5, 4,
                                                                                      0.1)
    assert (press.window_length, press.window_hop, press.sample_rate) == (128, 64, 50.0)
    assert press.register_map is not None
    temp, flow = press.register_map.channels
    assert (temp.type, temp.scale, temp.offset) == ("int16", 0.1, -40.0)
    assert (flow.word_order, flow.function) == ("little", "input")
    assert press.label_source == "register"
    pq = cfg.device("pq-meter")
    assert isinstance(pq.transport, RtuTransport) and pq.transport.parity == "E"
    assert pq.mode == "capture" and pq.capture is not None and pq.capture.base == 3000
    assert pq.capture_ack is False
    mcu = cfg.device("mcu")
    assert isinstance(mcu.transport, SerialLineTransport)
    assert mcu.transport.line.channels == ("x", "y") and mcu.label_source == "serial"
    rep = cfg.device("replay")
    assert isinstance(rep.transport, ReplayTransport) and rep.transport.indices == (0, 5, 9)


def test_every_problem_is_reported_with_its_path() -> None:
    bad = {"devices": [
        {"name": "a", "transport": "tcp", "timeout": -1, "window": {"length": 0}, "registers": [
            {"name": "x", "address": 70000, "type": "int64"},
            {"name": "y", "address": 1, "word_order": "middle", "scale": 0}]},
        {"name": "a", "transport": "carrier-pigeon"},
        {"name": "c", "transport": "rtu", "serial": "/dev/ttyS0", "baudrate": 9600,
         "registers": [{"name": "v", "address": 0}]},
        {"name": "c", "transport": "rtu", "serial": "/dev/ttyS0", "baudrate": 19200,
         "registers": [{"name": "v", "address": 0}]},
        "not a table",
    ]}
    cfg, problems = parse_sensors_config(bad)
    assert cfg is None
    text = "\n".join(problems)
    for expected in (
        "sensors.devices[0].host: required",
        "sensors.devices[0].timeout: must be > 0",
        "sensors.devices[0].registers[0].address: must be in",
        "sensors.devices[0].registers[0].type: must be one of",
        "sensors.devices[0].registers[1].word_order: must be one of",
        "sensors.devices[0].registers[1].scale: must be finite",
        "sensors.devices[1].transport: must be one of",
        "sensors.devices[0].window.length: must be in",
        "sensors.devices[4]: expected a table",
        "sensors.devices[3]: serial settings differ",
    ):
        assert expected in text, expected
    assert "sensors.devices: duplicate name 'c'" in text


def test_type_errors_and_missing_devices() -> None:
    cfg, problems = parse_sensors_config({"devices": []})
    assert cfg is None and problems == ["sensors.devices: at least one device"]
    cfg, problems = parse_sensors_config({"devices": [
        {"name": "x", "transport": "tcp", "host": "h", "port": "502", "unit": True,
         "registers": [{"name": "v", "address": 0}]}]})
    assert cfg is None
    assert "sensors.devices[0].port: expected int, got str" in problems
    assert "sensors.devices[0].unit: expected int, got bool" in problems

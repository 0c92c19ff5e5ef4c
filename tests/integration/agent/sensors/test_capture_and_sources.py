"""Capture buffers of real PLAID records over TCP and RTU; serial lines on a pty; replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import serial

from agent.sensors.app import open_sensors
from agent.sensors.config import parse_sensors_config
from agent.sensors.device import CaptureLayout, CaptureReader, RegisterMap, RegisterPoller
from agent.sensors.health import BackoffPolicy
from agent.sensors.modbus import ModbusCaptureSource, rtu_transport, tcp_transport
from agent.sensors.registers import RegisterSpec
from agent.sensors.replay import ReplayReader, ReplaySource
from agent.sensors.serial_line import LineFormat, SerialLineReader
from agent.simulator.core import SimulatorCore
from agent.simulator.pty import PtyLink
from agent.simulator.server import SimulatedDevice
from agent.simulator.signals import ArraySignal, RecordCaptures, resample
from models.datasets.ucr import load_ts
from models.datasets.windows import to_fixed_length

pytestmark = pytest.mark.integration

DUMMY = RegisterMap(channels=(RegisterSpec(name="x", address=0),))


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_capture_records_arrive_whole_in_order(kind: str, data_dir: Path,
                                               pty_link: PtyLink) -> None:
    ds = load_ts(data_dir / "PLAID_TEST.ts")
    indices = [5, 17, 300, 2]
    layout = CaptureLayout(base=1000, word_order="little" if kind == "rtu" else "big")
    core = SimulatorCore(captures=RecordCaptures(ds.series, [int(v) for v in ds.labels],
                                                 length=200, indices=indices),
                         capture_layout=layout)
    sim = SimulatedDevice(core, unit=3, tcp_port=0 if kind == "tcp" else None,
                          serial=pty_link.device_path if kind == "rtu" else None).start()
    tr = tcp_transport("127.0.0.1", sim.tcp_port or 0) if kind == "tcp" else \
        rtu_transport(pty_link.agent_path, baudrate=115200)
    p = RegisterPoller(name="pq", unit=3, timeout=1.0, register_map=DUMMY,
                       policy=BackoffPolicy(retries=1, base_s=0.05, max_s=0.5), transport=tr)
    src = ModbusCaptureSource(CaptureReader(p, layout), poll_interval=0.01)
    try:
        windows = [src.next_window(timeout=10.0) for _ in range(5)]
    finally:
        src.close()
        sim.stop()
    for w, i in zip(windows, indices + indices[:1], strict=True):
        assert w.x.shape == (1, 200)
        assert np.array_equal(w.x, resample(ds.series[i], 200))
        assert w.label == int(ds.labels[i])
    assert [w.source_seq for w in windows] == [1, 2, 3, 4, 5]  # acked -> advanced, none skipped
    assert src.counters().reads_ok == 5 and src.counters().failures == 0


def test_serial_line_sensor_on_pty(pty_link: PtyLink) -> None:
    mcu = serial.Serial(pty_link.device_path, 115200, timeout=1)
    reader = SerialLineReader.open(pty_link.agent_path,
                                   LineFormat(format="kv", channels=("ch0", "ch1"),
                                              label_key="label"), timeout=3.0)
    try:
        mcu.write(b"boot v1.2\r\nch0=1.25 ch1=-3 label=2\r\nch0=oops\r\nch1=4 ch0=5\r\n")
        mcu.flush()
        a, b = reader.read(), reader.read()
    finally:
        reader.close()
        mcu.close()
    assert a.values.tolist() == [1.25, -3.0] and a.label == 2
    assert b.values.tolist() == [5.0, 4.0] and b.label is None
    assert reader.malformed == 2


def test_replay_source_matches_dataset(data_dir: Path) -> None:
    path = data_dir / "ACSF1_TEST.ts"
    ds = load_ts(path)
    src = ReplaySource(path, length=128, indices=[3, 1], loop=False)
    w1, w2 = src.next_window(timeout=0), src.next_window(timeout=0)
    fixed = to_fixed_length([ds.series[3], ds.series[1]], length=128, mode="resample")
    assert np.array_equal(w1.x, fixed[0]) and w1.label == int(ds.labels[3])
    assert np.array_equal(w2.x, fixed[1]) and w2.source_seq == 1
    with pytest.raises(Exception, match="exhausted"):
        src.next_window(timeout=0)
    # sample by sample: record 0 brought to 4 samples, then (looping) record 0 again
    r = ReplayReader(ReplaySource(path, length=4, indices=[0], loop=True))
    first = to_fixed_length([ds.series[0]], length=4, mode="resample")[0, 0]
    played = [r.read() for _ in range(5)]
    assert [s.values[0] for s in played] == pytest.approx([*first.tolist(), first[0]])
    assert {s.label for s in played} == {int(ds.labels[0])}


def test_open_sensors_with_simulated_vibration_device() -> None:
    cfg, problems = parse_sensors_config({"devices": [
        {"name": "motor", "transport": "simulated", "channels": 2, "sample_rate": 200.0,
         "window": {"length": 16, "hop": 8}, "timeout": 1.0}]})
    assert cfg is not None, problems
    sensors = open_sensors(cfg)
    try:
        w1 = sensors.windows["motor"].next_window(timeout=10.0)
        w2 = sensors.windows["motor"].next_window(timeout=10.0)
    finally:
        sensors.close()
    assert w1.x.shape == w2.x.shape == (2, 16)
    assert np.all(np.isfinite(w1.x)) and w1.label is not None
    assert np.array_equal(w1.x[:, 8:], w2.x[:, :8])  # hop 8 of 16
    assert sensors.counters()["motor"].reads_ok >= 24


def test_open_sensors_puts_devices_of_one_port_on_one_bus(pty_link: PtyLink) -> None:
    core = SimulatorCore(live=ArraySignal(np.array([[3.5], [-1.0]], dtype=np.float32), 2))
    sim = SimulatedDevice(core, unit=4, serial=pty_link.device_path, sample_rate=100.0).start()
    regs = [{"name": "a", "address": 10, "type": "float32"},
            {"name": "b", "address": 12, "type": "float32"}]
    common = {"transport": "rtu", "serial": pty_link.agent_path, "baudrate": 115200,
              "registers": regs, "label": {"address": 2}, "sample_rate": 100.0,
              "window": {"length": 32},
              "backoff": {"base": 0.2, "max": 1.0}, "retries": 0}
    cfg, problems = parse_sensors_config({"devices": [
        {"name": "pump", "unit": 4, "timeout": 1.0, **common},
        {"name": "gone", "unit": 5, "timeout": 0.1, **common}]})
    assert cfg is not None, problems
    sensors = open_sensors(cfg)
    try:
        assert len(sensors.buses) == 1
        samples = [sensors.readers["pump"].read() for _ in range(20)]
        window = sensors.windows["pump"].next_window(timeout=20.0)
    finally:
        sensors.close()
        sim.stop()
    assert all(s.values.tolist() == [3.5, -1.0] and s.label == 2 for s in samples)
    assert window.x.shape == (2, 32) and np.all(window.x[0] == 3.5)
    c = sensors.counters()
    assert c["pump"].failures == 0 and c["gone"].reads_ok == 0 and c["gone"].timeouts >= 1


@pytest.mark.parametrize("dataset", ["PLAID_TEST.ts", "synthetic-vibration"])
def test_open_sensors_simulated_capture_device(dataset: str, data_dir: Path) -> None:
    path = dataset if dataset.startswith("synthetic") else str(data_dir / dataset)
    cfg, problems = parse_sensors_config({"devices": [
        {"name": "sim", "transport": "simulated", "dataset": path, "indices": [7, 8], "loop": True,
         "mode": "capture", "capture": {"base": 3000, "word_order": "little"},
         "window": {"length": 50}, "sample_rate": 1000.0}]})
    assert cfg is not None, problems
    sensors = open_sensors(cfg)
    try:
        windows = [sensors.windows["sim"].next_window(timeout=10.0) for _ in range(3)]
    finally:
        sensors.close()
    assert [w.x.shape for w in windows] == [(1, 50)] * 3
    assert [w.source_seq for w in windows] == [1, 2, 3]
    if dataset != "synthetic-vibration":
        ds = load_ts(path)
        assert [w.label for w in windows] == [int(ds.labels[i]) for i in (7, 8, 7)]
        assert np.array_equal(windows[1].x, resample(ds.series[8], 50))
    else:
        assert all(w.label is not None for w in windows)
        assert not np.array_equal(windows[0].x, windows[1].x)

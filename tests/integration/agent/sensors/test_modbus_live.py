"""Live register reads from a real pymodbus server over TCP and RTU-on-pty.

Every register type, word and byte order, scale and offset is served by the
simulator (which encodes with the shared codec) and decoded by the readers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from agent.sensors.device import RegisterMap, RegisterPoller
from agent.sensors.errors import ModbusExceptionError, SensorTimeoutError
from agent.sensors.health import BackoffPolicy
from agent.sensors.modbus import (
    ModbusBus,
    ModbusRtuReader,
    ModbusTcpReader,
    PymodbusTransport,
    rtu_transport,
    tcp_transport,
)
from agent.sensors.registers import RegisterSpec
from agent.simulator.core import FaultPlan, LiveLayout, SimulatorCore
from agent.simulator.pty import PtyLink
from agent.simulator.server import SimulatedDevice
from agent.simulator.signals import ArraySignal

pytestmark = pytest.mark.integration

CHANNELS = (
    (RegisterSpec(name="i16", address=10, type="int16", scale=0.5, offset=-100.0), -1234.5),
    (RegisterSpec(name="u16", address=11, type="uint16", byte_order="little"), 51234.0),
    (RegisterSpec(name="i32", address=12, type="int32", word_order="little"), -123456768.0),
    (RegisterSpec(name="u32", address=14, type="uint32", byte_order="little"), 4.0e9),
    (RegisterSpec(name="f32", address=16, type="float32", word_order="little",
                  byte_order="little"), 3.14159),
    (RegisterSpec(name="f32s", address=18, type="float32", scale=0.001, offset=20.0), 21.5),
    (RegisterSpec(name="inp", function="input", address=20, type="uint16"), 7.0),
)
LAYOUT = LiveLayout(channels=tuple(s for s, _ in CHANNELS))
READ_MAP = RegisterMap(channels=LAYOUT.channels, label=LAYOUT.label, counter=LAYOUT.counter)
EXPECTED = np.array([v for _, v in CHANNELS], dtype=np.float32).astype(np.float64)


def start_device(*, tcp: bool, link: PtyLink | None, faults: FaultPlan | None = None,
                 rate: float = 200.0) -> SimulatedDevice:
    x = np.array([[v] for _, v in CHANNELS], dtype=np.float32)
    core = SimulatorCore(live=ArraySignal(x, 4), layout=LAYOUT, faults=faults)
    return SimulatedDevice(core, unit=1, tcp_port=0 if tcp else None,
                           serial=link.device_path if link else None,
                           sample_rate=rate).start()


@pytest.fixture(params=["tcp", "rtu"])
def served(request: pytest.FixtureRequest,
           pty_link: PtyLink) -> Iterator[tuple[SimulatedDevice, PymodbusTransport]]:
    tcp = request.param == "tcp"
    sim = start_device(tcp=tcp, link=None if tcp else pty_link)
    assert sim.tcp_port is not None or not tcp
    tr = tcp_transport("127.0.0.1", sim.tcp_port or 0, timeout=1.0) if tcp else \
        rtu_transport(pty_link.agent_path, baudrate=115200, timeout=1.0)
    try:
        yield sim, tr
    finally:
        tr.close()
        sim.stop()


def poller(tr: PymodbusTransport, *, unit: int = 1, retries: int = 2, timeout: float = 0.5,
           base: float = 0.02, max_s: float = 0.2) -> RegisterPoller:
    return RegisterPoller(name=f"unit{unit}", unit=unit, timeout=timeout, register_map=READ_MAP,
                          policy=BackoffPolicy(retries=retries, base_s=base, max_s=max_s,
                                               jitter=0.1),
                          transport=tr)


def test_all_types_orders_scale_offset(served: tuple[SimulatedDevice, PymodbusTransport]) -> None:
    sim, tr = served
    reader = ModbusTcpReader(poller(tr)) if sim.tcp_port else ModbusRtuReader(poller(tr))
    first = reader.read()
    assert first.values.tolist() == pytest.approx(EXPECTED.tolist(), rel=1e-6)
    assert first.values[0] == -1234.5 and first.values[3] == 4.0e9 and first.values[5] == 21.5
    assert first.label == 4
    deadline = time.monotonic() + 5.0
    later = reader.read()
    while later.seq == first.seq and time.monotonic() < deadline:
        later = reader.read()
    assert later.seq is not None and first.seq is not None and later.seq > first.seq
    assert reader.counters().reads_ok >= 2 and reader.counters().failures == 0


def test_exception_responses_are_retried_counted_and_raised(pty_link: PtyLink) -> None:
    sim = start_device(tcp=True, link=None, faults=FaultPlan(fail_rate=1.0, exception_code=6))
    tr = tcp_transport("127.0.0.1", sim.tcp_port or 0)
    try:
        p = poller(tr, retries=3)
        with pytest.raises(ModbusExceptionError) as ei:
            p.read()
        assert ei.value.code == 6
        c = p.health.snapshot()
        assert (c.exceptions, c.retries, c.reads_ok) == (4, 3, 0)
        # a flaky device: 20 % of the requests fail (a read is 3 requests, so about half of
        # the attempts), retries hide it, counters show it
        sim.core.faults = FaultPlan(fail_rate=0.2)
        p = poller(tr, retries=30, base=0.001, max_s=0.002)
        for _ in range(20):
            assert p.read().values.tolist() == pytest.approx(EXPECTED.tolist(), rel=1e-6)
        c = p.health.snapshot()
        assert c.reads_ok == 20 and c.exceptions >= 5 and c.retries == c.exceptions
    finally:
        tr.close()
        sim.stop()


def test_silent_device_times_out_and_is_counted() -> None:
    sim = start_device(tcp=True, link=None, faults=FaultPlan(silent_rate=1.0))
    tr = tcp_transport("127.0.0.1", sim.tcp_port or 0)
    try:
        p = poller(tr, retries=1, timeout=0.2)
        with pytest.raises(SensorTimeoutError):
            p.read()
        assert p.health.snapshot().timeouts == 2
    finally:
        tr.close()
        sim.stop()


def test_dead_device_on_shared_rtu_bus_does_not_stall_live_one(pty_link: PtyLink) -> None:
    sim = start_device(tcp=False, link=pty_link, rate=100.0)
    tr = rtu_transport(pty_link.agent_path, baudrate=115200, timeout=0.1)
    bus = ModbusBus(tr, sample_rate=50.0, name="rs485")
    # per-device timeouts: generous for the live unit (a loaded CI machine), short for unit 2
    live = bus.add(poller(tr, unit=1, timeout=1.0, retries=0, base=0.2, max_s=1.0))
    dead = bus.add(poller(tr, unit=2, timeout=0.1, retries=0, base=0.2, max_s=1.0))
    bus.start()
    try:
        got = []
        deadline = time.monotonic() + 30.0
        while len(got) < 80 and time.monotonic() < deadline:
            got.append(live.read())
    finally:
        bus.stop()
        sim.stop()
    c = bus.counters()
    assert len(got) == 80, c
    assert all(s.values.tolist() == pytest.approx(EXPECTED.tolist(), rel=1e-6) for s in got)
    assert c["unit1"].failures == 0
    # unit 2 never answers: each try is a counted timeout, but backoff keeps the tries rare;
    # without it the dead unit would be tried once per turn, as often as unit 1 is read
    assert c["unit2"].reads_ok == 0 and c["unit2"].timeouts >= 1
    assert c["unit2"].timeouts <= c["unit1"].reads_ok / 4
    assert dead.queue.empty()


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_late_answer_is_not_taken_for_a_later_request(kind: str, pty_link: PtyLink) -> None:
    # TCP: pymodbus matches transaction ids; RTU has none, pymodbus drops bytes waiting in the
    # input buffer before each request. Either way a late answer must not become data.
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    core = SimulatorCore(live=ArraySignal(x), layout=LiveLayout.default(2),
                         faults=FaultPlan(delay_ms=400))
    sim = SimulatedDevice(core, tcp_port=0 if kind == "tcp" else None,
                          serial=pty_link.device_path if kind == "rtu" else None).start()
    tr = tcp_transport("127.0.0.1", sim.tcp_port or 0) if kind == "tcp" else \
        rtu_transport(pty_link.agent_path, baudrate=115200)
    pol = BackoffPolicy(retries=0, base_s=0.001, max_s=0.001)

    def reader(address: int) -> RegisterPoller:
        rm = RegisterMap(channels=(RegisterSpec(name="v", address=address, type="float32"),))
        return RegisterPoller(name=f"r{address}", unit=1, timeout=0.2, register_map=rm,
                              policy=pol, transport=tr)

    ch0, ch1 = reader(10), reader(12)
    try:
        with pytest.raises(SensorTimeoutError):
            ch0.read()  # its answer is still on its way
        core.faults = FaultPlan()
        time.sleep(0.4)  # ... and now it has arrived
        values = [ch1.read().values[0] for _ in range(3)]
    finally:
        tr.close()
        sim.stop()
    assert values == [2.0, 2.0, 2.0]

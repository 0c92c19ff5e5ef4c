"""Wiring: a :class:`SensorsConfig` -> open readers and window sources.

``open_sensors(config)`` opens every device and returns a
:class:`SensorSet`. Modbus TCP devices get one connection each, read in the
caller's thread. RTU devices are grouped by serial port: a port with one
device is read directly; a port with several devices gets one
:class:`~agent.sensors.modbus.ModbusBus` thread polling them in turn at the
highest configured sample rate. ``simulated`` devices start an in-process
simulator on a free loopback port. ``opcua`` devices get one
:class:`~agent.sensors.opcua.OpcuaReader` each (its own asyncua client and
event-loop thread; connected on the first read). Every device is also offered as a
:class:`WindowSource` (live samples windowed with ``window.length/hop``,
capture buffers, or replayed records). ``close()`` stops everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.sensors.base import SensorReader, WindowSource
from agent.sensors.config import (
    DeviceConfig,
    OpcuaTransport,
    ReplayTransport,
    RtuTransport,
    SensorsConfig,
    SerialLineTransport,
    SimulatedTransport,
    TcpTransport,
)
from agent.sensors.device import CaptureLayout, CaptureReader, RegisterMap, RegisterPoller
from agent.sensors.errors import SensorConfigError
from agent.sensors.health import DeviceCounters
from agent.sensors.modbus import (
    ModbusBus,
    ModbusCaptureSource,
    ModbusRtuReader,
    ModbusTcpReader,
    PymodbusTransport,
    rtu_transport,
    tcp_transport,
)
from agent.sensors.registers import RegisterSpec
from agent.sensors.serial_line import SerialLineReader
from agent.sensors.windowing import LiveWindowSource


@dataclass
class SensorSet:
    """Open devices of one agent. ``readers`` holds live devices, ``windows`` all."""

    readers: dict[str, SensorReader] = field(default_factory=dict)
    windows: dict[str, WindowSource] = field(default_factory=dict)
    buses: list[ModbusBus] = field(default_factory=list)
    _counted: dict[str, Any] = field(default_factory=dict)
    _closers: list[Any] = field(default_factory=list)

    def counters(self) -> dict[str, DeviceCounters]:
        """Counter snapshot per Modbus device."""
        return {name: obj.counters() for name, obj in self._counted.items()}

    def close(self) -> None:
        """Stop buses, close ports and connections, stop simulators (idempotent)."""
        for bus in self.buses:
            bus.stop()
        self.buses.clear()
        for obj in reversed(self._closers):
            obj()
        self._closers.clear()


def _require_map(d: DeviceConfig, rm: RegisterMap | None) -> RegisterMap:
    if rm is None:
        raise SensorConfigError(f"{d.name}: a live Modbus device needs registers")
    return rm


def _poller(d: DeviceConfig, rm: RegisterMap, transport: PymodbusTransport) -> RegisterPoller:
    return RegisterPoller(name=d.name, unit=d.unit, timeout=d.timeout, register_map=rm,
                          policy=d.policy, transport=transport)


def _simulated_map(channels: int) -> RegisterMap:
    from agent.simulator.core import LiveLayout

    lay = LiveLayout.default(channels)
    return RegisterMap(channels=lay.channels, label=lay.label, counter=lay.counter)


def _start_simulator(d: DeviceConfig, t: SimulatedTransport, s: SensorSet) -> tuple[int, int]:
    from agent.simulator.build import build_core
    from agent.simulator.core import FaultPlan
    from agent.simulator.server import SimulatedDevice

    core = build_core(dataset=t.dataset, indices=list(t.indices) if t.indices else None,
                      mode=d.mode, length=d.window_length, channels=t.channels, seed=t.seed,
                      sample_rate=d.sample_rate, period=0.0, faults=FaultPlan(),
                      capture_layout=d.capture, loop=t.loop)
    sim = SimulatedDevice(core, unit=d.unit, tcp_port=0, sample_rate=d.sample_rate).start()
    s._closers.append(sim.stop)
    return sim.tcp_port or 0, core.live.channels if core.live is not None else 0


def open_sensors(config: SensorsConfig) -> SensorSet:
    """Open every configured device; on failure, what was opened is closed again."""
    s = SensorSet()
    try:
        _open(config, s)
    except BaseException:
        s.close()
        raise
    return s


def _open(config: SensorsConfig, s: SensorSet) -> None:
    rtu_groups: dict[str, list[DeviceConfig]] = {}
    rtu_settings: dict[str, RtuTransport] = {}
    for d in config.devices:
        if isinstance(d.transport, RtuTransport):
            rtu_groups.setdefault(d.transport.serial, []).append(d)
            rtu_settings.setdefault(d.transport.serial, d.transport)
    rtu_transports: dict[str, PymodbusTransport] = {}
    for port, devs in rtu_groups.items():
        t0 = rtu_settings[port]
        tr = rtu_transport(port, baudrate=t0.baudrate, parity=t0.parity, stopbits=t0.stopbits,
                           bytesize=t0.bytesize, timeout=min(d.timeout for d in devs))
        rtu_transports[port] = tr
        live = [d for d in devs if d.mode == "live"]
        if len(live) > 1:
            bus = ModbusBus(tr, sample_rate=max(d.sample_rate for d in live), name=port)
            for d in live:
                reader = bus.add(_poller(d, _require_map(d, d.register_map), tr))
                s.readers[d.name] = reader
                s._counted[d.name] = reader
            s.buses.append(bus)
        else:
            s._closers.append(tr.close)
    for d in config.devices:
        _open_device(d, s, rtu_transports)
    for bus in s.buses:
        bus.start()


def _open_device(d: DeviceConfig, s: SensorSet, rtu: dict[str, PymodbusTransport]) -> None:
    t = d.transport
    if isinstance(t, SerialLineTransport):
        sl = SerialLineReader.open(t.serial, t.line, baudrate=t.baudrate, timeout=d.timeout)
        s._closers.append(sl.close)
        s.readers[d.name] = sl
        s.windows[d.name] = LiveWindowSource(sl, length=d.window_length, hop=d.window_hop)
        return
    if isinstance(t, ReplayTransport):
        from agent.sensors.replay import ReplaySource

        s.windows[d.name] = ReplaySource(t.path, length=d.window_length, indices=t.indices,
                                         loop=t.loop)
        return
    if isinstance(t, OpcuaTransport):
        from agent.sensors.opcua import OpcuaReader

        ua_reader = OpcuaReader(name=d.name, transport=t, timeout=d.timeout, policy=d.policy,
                                sample_rate=d.sample_rate)
        s._closers.append(ua_reader.close)
        s.readers[d.name] = ua_reader
        s._counted[d.name] = ua_reader
        s.windows[d.name] = LiveWindowSource(ua_reader, length=d.window_length, hop=d.window_hop,
                                             period=1.0 / d.sample_rate)
        return
    rm = d.register_map
    if isinstance(t, SimulatedTransport):
        port, channels = _start_simulator(d, t, s)
        t = TcpTransport(host="127.0.0.1", port=port)
        if rm is None and channels:
            rm = _simulated_map(channels)
    if isinstance(t, TcpTransport):
        tr = tcp_transport(t.host, t.port, timeout=d.timeout)
        s._closers.append(tr.close)
    elif isinstance(t, RtuTransport):
        tr = rtu[t.serial]
    else:  # pragma: no cover - every transport type is handled above
        raise SensorConfigError(f"{d.name}: unsupported transport {type(t).__name__}")
    if d.mode == "capture":
        dummy = RegisterMap(channels=(RegisterSpec(name="seq", address=0),))
        cap = ModbusCaptureSource(CaptureReader(_poller(d, dummy, tr),
                                                d.capture or CaptureLayout(), ack=d.capture_ack))
        s.windows[d.name] = cap
        s._counted[d.name] = cap
        return
    if d.name in s.readers:  # already on a shared bus
        s.windows[d.name] = LiveWindowSource(s.readers[d.name], length=d.window_length,
                                             hop=d.window_hop)
        return
    cls = ModbusTcpReader if isinstance(t, TcpTransport) else ModbusRtuReader
    reader = cls(_poller(d, _require_map(d, rm), tr))
    s.readers[d.name] = reader
    s._counted[d.name] = reader
    s.windows[d.name] = LiveWindowSource(reader, length=d.window_length, hop=d.window_hop,
                                         period=1.0 / d.sample_rate)


"""Sensors of the edge agent: Modbus TCP/RTU, serial text lines, dataset replay.

Public API (see ``docs/sensors.md``)::

    parse_sensors_config(table) -> (SensorsConfig | None, list[str])
    open_sensors(config) -> SensorSet        # .readers, .windows, .counters(), .close()
    SensorReader.read() -> Sample            # values (channels,), label, t_mono, seq
    WindowSource.next_window(timeout=...) -> Window   # x (C, L) float32, label, source_seq

Pure layers (registers, health, device, windowing, serial_line.parse_line,
config) do no I/O; ``modbus`` (pymodbus), ``serial_line.SerialLineReader``
(pyserial), ``replay`` (files) and ``app`` are the adapters.
"""

from __future__ import annotations

from agent.sensors.app import SensorSet, open_sensors
from agent.sensors.base import Sample, SensorReader, Window, WindowSource
from agent.sensors.config import DeviceConfig, SensorsConfig, parse_sensors_config
from agent.sensors.health import BackoffPolicy, DeviceCounters
from agent.sensors.registers import RegisterSpec

__all__ = [
    "BackoffPolicy",
    "DeviceConfig",
    "DeviceCounters",
    "RegisterSpec",
    "Sample",
    "SensorReader",
    "SensorSet",
    "SensorsConfig",
    "Window",
    "WindowSource",
    "open_sensors",
    "parse_sensors_config",
]

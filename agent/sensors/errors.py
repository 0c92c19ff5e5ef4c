"""Errors of the sensor layer, all :class:`protocol.errors.SensorError`.

::

    SensorError
    ├── SensorTimeoutError     no answer within the device timeout
    ├── ModbusExceptionError   the device answered with a Modbus exception code
    ├── FrameError             unusable answer (wrong unit / transaction id, bad frame)
    ├── SensorConnectionError  port or socket cannot be opened / was lost
    ├── DeviceUnavailableError the device is in backoff after repeated failures
    ├── MalformedLineError     a serial text line could not be parsed
    ├── CaptureChangedError    a capture buffer changed while it was being read
    ├── RegisterEncodingError  a value does not fit its register type
    └── NodeStatusError        an OPC UA server reported a Bad status code for a node

    ConfigError
    └── SensorConfigError      a sensor/simulator setting is invalid (also a ValueError)

The Modbus adapter (:mod:`agent.sensors.modbus`) translates pymodbus and
pyserial exceptions into these with ``raise X from exc``; the OPC UA adapter
(:mod:`agent.sensors.opcua`) does the same for asyncua.
"""

from __future__ import annotations

from protocol.errors import ConfigError, SensorError


class SensorTimeoutError(SensorError):
    """The device did not answer within its timeout."""


class ModbusExceptionError(SensorError):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        super().__init__(message or f"Modbus exception code {code}")


class FrameError(SensorError):
    """An answer arrived but could not be used (bad frame, wrong unit or transaction id)."""


class SensorConnectionError(SensorError):
    """The serial port or TCP connection cannot be opened or was lost."""


class DeviceUnavailableError(SensorError):
    """The device is backing off after failures; it will be tried again later."""


class MalformedLineError(SensorError):
    """A line from a serial sensor could not be parsed."""


class CaptureChangedError(SensorError):
    """The capture sequence number changed while the buffer was being read."""


class RegisterEncodingError(SensorError):
    """A value cannot be represented in the register type it is mapped to."""


class NodeStatusError(SensorError):
    """An OPC UA server answered with a Bad status code for a node (or the whole request)."""

    def __init__(self, status: str, message: str = "") -> None:
        self.status = status
        super().__init__(message or f"OPC UA status {status}")


class SensorConfigError(ConfigError, ValueError):
    """An invalid sensor or simulator setting (raised by the config types' validation)."""

"""Modbus TCP and RTU adapters (pymodbus 3.16 synchronous clients, pyserial for RTU).

Threading model: synchronous pymodbus clients. A :class:`ModbusTcpReader`
or :class:`ModbusRtuReader` reads in the caller's thread. Several devices
on one RS-485 port share a :class:`ModbusBus`: one thread owns the port and
polls its devices in turn at the bus sample rate; each device's samples go
to its own bounded queue (oldest dropped when the consumer lags, counted
as ``overruns``). A device that fails is skipped until its backoff expires
(see :mod:`agent.sensors.health`), so a dead device costs the bus at most
one timeout per backoff interval and the live devices keep their rate.

This is the only module that touches pymodbus: its exceptions and error
responses become :mod:`agent.sensors.errors` here. pymodbus drops RTU frames
with a bad CRC silently, so on a noisy line they surface as timeouts;
``crc_errors`` counts answers that arrived but were unusable (wrong unit or
transaction id, undecodable frame).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from agent.sensors.base import Sample, Window
from agent.sensors.device import CaptureReader, RegisterPoller, RegisterTransport
from agent.sensors.errors import (
    DeviceUnavailableError,
    FrameError,
    ModbusExceptionError,
    SensorConfigError,
    SensorConnectionError,
    SensorTimeoutError,
)
from agent.sensors.health import DeviceCounters
from agent.sensors.registers import ReadBlock
from protocol.errors import SensorError

log = logging.getLogger(__name__)


class PymodbusTransport:
    """:class:`~agent.sensors.device.RegisterTransport` over a pymodbus sync client."""

    def __init__(self, client: ModbusTcpClient | ModbusSerialClient, *, what: str) -> None:
        self._client: Any = client  # pymodbus close() is untyped
        self._what = what
        self._lock = threading.Lock()

    def _call(self, fn: Callable[[], Any], timeout: float) -> Any:
        with self._lock:
            self._client.comm_params.timeout_connect = timeout
            try:
                if not self._client.connected and not self._client.connect():
                    raise SensorConnectionError(f"cannot connect to {self._what}")
                rr = fn()
            except ConnectionException as exc:
                self._client.close()
                raise SensorConnectionError(f"connection to {self._what} failed") from exc
            except ModbusIOException as exc:
                if "No response" in str(exc):
                    raise SensorTimeoutError(f"no answer from {self._what}") from exc
                raise FrameError(f"bad answer from {self._what}") from exc
            except ModbusException as exc:
                raise FrameError(f"Modbus error on {self._what}") from exc
            except OSError as exc:
                self._client.close()
                raise SensorConnectionError(f"I/O error on {self._what}") from exc
        if rr.isError():
            raise ModbusExceptionError(int(getattr(rr, "exception_code", 0)))
        return rr

    def read_registers(self, block: ReadBlock, *, unit: int, timeout: float) -> list[int]:
        """Read ``block`` (FC3 or FC4)."""
        fn = (self._client.read_holding_registers if block.function == "holding"
              else self._client.read_input_registers)
        rr = self._call(lambda: fn(block.address, count=block.count, device_id=unit), timeout)
        regs = list(rr.registers)
        if len(regs) != block.count:
            raise FrameError(f"asked {block.count} registers, got {len(regs)}")
        return regs

    def write_registers(self, address: int, values: Sequence[int], *, unit: int,
                        timeout: float) -> None:
        """Write holding registers (FC16)."""
        self._call(lambda: self._client.write_registers(address, list(values), device_id=unit),
                   timeout)

    def close(self) -> None:
        """Close the socket or port."""
        with self._lock:
            self._client.close()


def tcp_transport(host: str, port: int, *, timeout: float = 1.0) -> PymodbusTransport:
    """A transport to a Modbus TCP server (pymodbus retries off: we count our own)."""
    client = ModbusTcpClient(host, port=port, timeout=timeout, retries=0)
    return PymodbusTransport(client, what=f"tcp://{host}:{port}")


def rtu_transport(port: str, *, baudrate: int = 19200, parity: str = "N", stopbits: int = 1,
                  bytesize: int = 8, timeout: float = 1.0) -> PymodbusTransport:
    """A transport to the RTU devices on serial ``port``."""
    client = ModbusSerialClient(port, baudrate=baudrate, parity=parity, stopbits=stopbits,
                                bytesize=bytesize, timeout=timeout, retries=0)
    return PymodbusTransport(client, what=f"rtu:{port}")


class ModbusTcpReader:
    """:class:`SensorReader` for one Modbus TCP device, read in the caller's thread."""

    def __init__(self, poller: RegisterPoller) -> None:
        self.poller = poller

    def read(self) -> Sample:
        """One sample with retries and backoff; raises ``SensorError``."""
        return self.poller.read()

    def counters(self) -> DeviceCounters:
        """Counter snapshot."""
        return self.poller.health.snapshot()

    def close(self) -> None:
        """Close the connection."""
        self.poller.transport.close()


class ModbusRtuReader(ModbusTcpReader):
    """:class:`SensorReader` for one RTU device that has its serial port to itself."""


class ModbusCaptureSource:
    """:class:`WindowSource` reading capture buffers of one device."""

    def __init__(self, capture: CaptureReader, *, poll_interval: float = 0.05,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.capture = capture
        self._interval = poll_interval
        self._clock = clock
        self._sleep = sleep

    def next_window(self, *, timeout: float) -> Window:
        """Poll until a new capture is read completely, or time out."""
        deadline = self._clock() + timeout
        last: SensorError | None = None
        while True:
            try:
                window = self.capture.poll()
                if window is not None:
                    return window
                pause = self._interval
            except DeviceUnavailableError:
                pause = self.capture.poller.health.next_attempt - self._clock()
            except SensorError as exc:
                last = exc
                pause = self.capture.poller.health.next_attempt - self._clock()
            if self._clock() + max(pause, 0.0) >= deadline:
                raise SensorTimeoutError(f"no new capture within {timeout} s") from last
            self._sleep(max(pause, 0.0))

    def counters(self) -> DeviceCounters:
        """Counter snapshot."""
        return self.capture.poller.health.snapshot()

    def close(self) -> None:
        """Close the connection."""
        self.capture.poller.transport.close()


class BusDeviceReader:
    """:class:`SensorReader` view of one device polled by a :class:`ModbusBus`."""

    def __init__(self, bus: ModbusBus, poller: RegisterPoller, *, maxsize: int = 1024) -> None:
        self._bus = bus
        self.poller = poller
        self.queue: queue.Queue[Sample] = queue.Queue(maxsize=maxsize)
        self.overruns = 0
        self.read_timeout = 5.0

    def _put(self, sample: Sample) -> None:
        while True:
            try:
                self.queue.put_nowait(sample)
                return
            except queue.Full:
                self.overruns += 1
                with contextlib.suppress(queue.Empty):
                    self.queue.get_nowait()

    def read(self) -> Sample:
        """The next sample the bus polled for this device."""
        try:
            return self.queue.get(timeout=self.read_timeout)
        except queue.Empty:
            raise SensorTimeoutError(f"{self.poller.name}: no sample within "
                                     f"{self.read_timeout} s") from None

    def counters(self) -> DeviceCounters:
        """Counter snapshot."""
        return self.poller.health.snapshot()

    def close(self) -> None:
        """Detach; the bus owns the port and closes it in :meth:`ModbusBus.stop`."""


class ModbusBus:
    """One thread polling the devices of one serial port (or one TCP connection) in turn."""

    def __init__(self, transport: RegisterTransport, *, sample_rate: float, name: str = "bus",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if sample_rate <= 0:
            raise SensorConfigError("sample_rate must be > 0")
        self.transport = transport
        self.period = 1.0 / sample_rate
        self.name = name
        self._clock = clock
        self._devices: list[BusDeviceReader] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0

    def add(self, poller: RegisterPoller) -> BusDeviceReader:
        """Register a device (before :meth:`start`); returns its reader."""
        if self._thread is not None:
            raise RuntimeError("add devices before start()")
        if poller.transport is not self.transport:
            raise SensorConfigError("device must use the bus transport")
        reader = BusDeviceReader(self, poller)
        self._devices.append(reader)
        return reader

    def poll_once(self) -> None:
        """One turn over all ready devices (the thread body; callable directly in tests)."""
        for dev in self._devices:
            if self._stop.is_set():
                return
            if not dev.poller.health.ready(self._clock()):
                continue
            try:
                dev._put(dev.poller.attempt())
            except SensorError as exc:
                log.debug("%s/%s: %s", self.name, dev.poller.name, type(exc).__name__)
        self.cycles += 1

    def _run(self) -> None:
        next_t = self._clock()
        while not self._stop.is_set():
            self.poll_once()
            next_t += self.period
            now = self._clock()
            if next_t < now - self.period:
                next_t = now
            self._stop.wait(max(0.0, next_t - now))

    def start(self) -> None:
        """Start the polling thread."""
        self._thread = threading.Thread(target=self._run, name=f"modbus-bus-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and close the port (waits for an in-flight request)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.transport.close()

    def counters(self) -> dict[str, DeviceCounters]:
        """Counter snapshot of every device, by name."""
        return {d.poller.name: d.poller.health.snapshot() for d in self._devices}

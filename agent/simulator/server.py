"""Serving a :class:`~agent.simulator.core.SimulatorCore` with pymodbus 3.16.

Theory of operation: ``start()`` runs a private asyncio loop in one thread
("modbus-sim"). In it: a pymodbus ``ModbusTcpServer`` (when ``tcp_port`` is
given; 0 picks a free port) and/or a ``ModbusSerialServer`` on ``serial``
(a device path, e.g. one end of a :class:`~agent.simulator.pty.PtyLink`),
both over one ``SimDevice`` answering unit id ``unit`` only (requests to
other unit ids get no answer, as on a real RS-485 line; they are routed to
a catch-all id-0 device whose action raises ``NoSuchIdException``, which
the server, with ``ignore_missing_devices``, turns into silence); and a ticker task
advancing the live signal at ``sample_rate`` and timed captures. Every
request passes through the device ``action`` hook, which copies the core's
image into the pymodbus register block, applies writes to the core, and
injects faults. All core state is touched only on that loop.
``stop()`` shuts the servers down and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.sensors.errors import SensorConfigError
from agent.simulator.core import SimulatorCore

log = logging.getLogger(__name__)

_WRITE_FCS = {6, 16, 23}


class SimulatedDevice:
    """A simulated Modbus device over TCP and/or RTU, usable in-process or from the CLI."""

    def __init__(self, core: SimulatorCore, *, unit: int = 1, tcp_host: str = "127.0.0.1",
                 tcp_port: int | None = None, serial: str | None = None,
                 baudrate: int = 115200, sample_rate: float = 100.0) -> None:
        if tcp_port is None and serial is None:
            raise SensorConfigError("need tcp_port and/or serial")
        if not 1 <= unit <= 247:
            raise SensorConfigError("unit must be 1..247")
        if sample_rate <= 0:
            raise SensorConfigError("sample_rate must be > 0")
        self.core = core
        self.unit = unit
        self.tcp_host, self.tcp_port = tcp_host, tcp_port
        self.serial, self.baudrate = serial, baudrate
        self.sample_rate = sample_rate
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], set_values: Any) -> ExcCodes | None:
        self.requests += 1
        core = self.core
        if core.faults.delay_ms:
            await asyncio.sleep(core.faults.delay_ms / 1000.0)
        fault = core.draw_fault()
        if fault == "silent":
            raise NoSuchIdException("simulated silence")
        if fault == "exception":
            return ExcCodes(core.faults.exception_code)
        off = address - start_address
        if function_code in _WRITE_FCS and set_values is not None:
            vals = [int(v) for v in (set_values if isinstance(set_values, list) else [set_values])]
            core.write(address, vals, time.monotonic())
            return None
        registers[off:off + count] = core.read(address, count)
        return None

    async def _absent(self, *_args: Any) -> ExcCodes | None:
        raise NoSuchIdException("no such unit")

    async def _ticker(self) -> None:
        t0 = time.monotonic()
        served = 0
        period = 1.0 / self.sample_rate
        while True:
            now = time.monotonic()
            due = int((now - t0) * self.sample_rate) + 1
            if due > served:
                self.core.tick(due - served)
                served = due
            self.core.maybe_advance(now)
            await asyncio.sleep(max(period, 0.001))

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        size = max(self.core.extent, 16)
        dev = SimDevice(id=self.unit, action=self._action, simdata=[
            SimData(0, count=size, values=0, datatype=DataType.REGISTERS)])
        # id 0 = every other unit id: never answers, like an absent device on RS-485
        absent = SimDevice(id=0, action=self._absent, simdata=[
            SimData(0, count=0xFFFF, values=0, datatype=DataType.REGISTERS)])
        devices = [dev, absent]
        servers: list[Any] = []
        ticker = asyncio.create_task(self._ticker())
        try:
            if self.tcp_port is not None:
                tcp = ModbusTcpServer(devices, address=(self.tcp_host, self.tcp_port),
                                      ignore_missing_devices=True)
                await tcp.serve_forever(background=True)
                servers.append(tcp)
                if tcp.transport is None:
                    raise OSError(f"cannot listen on {self.tcp_host}:{self.tcp_port}")
                listener: Any = tcp.transport
                self.tcp_port = int(listener.sockets[0].getsockname()[1])
            if self.serial is not None:
                ser = ModbusSerialServer(devices, port=self.serial, baudrate=self.baudrate,
                                         ignore_missing_devices=True)
                await ser.serve_forever(background=True)
                servers.append(ser)
            self._ready.set()
            await self._stop.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            for s in servers:
                await s.shutdown()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() / stop()
            self._error = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, *, timeout: float = 10.0) -> SimulatedDevice:
        """Start serving; returns once listening (``tcp_port`` then holds the real port)."""
        self._thread = threading.Thread(target=self._run, name="modbus-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"simulated device did not start: {self._error!r}")
        log.info("simulated device unit %d ready (tcp %s, serial %s)", self.unit,
                 self.tcp_port, self.serial)
        return self

    def stop(self) -> None:
        """Stop serving and join the thread (idempotent)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> SimulatedDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

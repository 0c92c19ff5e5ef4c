"""In-memory stand-ins for the Modbus transport and the clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from agent.sensors.errors import ModbusExceptionError, SensorTimeoutError
from agent.sensors.registers import ReadBlock


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += max(dt, 0.0)


class FakeTransport:
    """Units map to register images; ``dead`` units time out, ``failing`` answer exceptions."""

    def __init__(self, clock: FakeClock | None = None, *, timeout_cost: bool = True) -> None:
        self.images: dict[int, np.ndarray] = {}
        self.dead: set[int] = set()
        self.failing: dict[int, int] = {}  # unit -> remaining exception answers
        self.requests: list[tuple[int, ReadBlock | None]] = []
        self.writes: list[tuple[int, int, list[int]]] = []
        self.on_read: Callable[[int, ReadBlock], None] | None = None
        self.clock = clock
        self.timeout_cost = timeout_cost
        self.closed = False

    def image(self, unit: int) -> np.ndarray:
        return self.images.setdefault(unit, np.zeros(0x10000, dtype=np.uint16))

    def read_registers(self, block: ReadBlock, *, unit: int, timeout: float) -> list[int]:
        self.requests.append((unit, block))
        if unit in self.dead:
            if self.clock is not None and self.timeout_cost:
                self.clock.t += timeout
            raise SensorTimeoutError("dead")
        if self.failing.get(unit, 0) > 0:
            self.failing[unit] -= 1
            raise ModbusExceptionError(4)
        if self.on_read is not None:
            self.on_read(unit, block)
        img = self.image(unit)
        return [int(v) for v in img[block.address:block.address + block.count]]

    def write_registers(self, address: int, values: Sequence[int], *, unit: int,
                        timeout: float) -> None:
        self.writes.append((unit, address, list(values)))
        self.image(unit)[address:address + len(values)] = values

    def close(self) -> None:
        self.closed = True

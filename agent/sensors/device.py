"""Reading one Modbus device through any register transport.

Theory of operation: :class:`RegisterPoller` holds a device's register map,
its :class:`~agent.sensors.health.DeviceHealth` and a
:class:`RegisterTransport` (the pymodbus adapter in production, an in-memory
fake in unit tests). ``attempt()`` makes exactly one try: it issues the
planned reads (<= 125 registers each), decodes channels, label and sample
counter, and counts the outcome; failures start the backoff.
``read()`` retries up to ``policy.retries`` times, waiting out the backoff in
between, and raises the last error.

Capture buffers (:class:`CaptureLayout`) are read header first, then the
samples in chunks, then the sequence number again: if it moved, the
capture changed under us and the read restarts (counted as
``capture_restarts``). A completed capture is acknowledged by writing its
sequence number to the ack register. No sockets or threads here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from agent.sensors.base import Sample, Window
from agent.sensors.errors import (
    CaptureChangedError,
    DeviceUnavailableError,
    FrameError,
    ModbusExceptionError,
    SensorConfigError,
    SensorConnectionError,
    SensorTimeoutError,
)
from agent.sensors.health import BackoffPolicy, DeviceHealth, FailureKind
from agent.sensors.registers import (
    MAX_READ_COUNT,
    Function,
    Order,
    ReadBlock,
    RegisterSpec,
    decode,
    decode_all,
    decode_float32_array,
    extract,
    plan_reads,
)
from protocol.errors import SensorError

NO_LABEL = 0xFFFF


class RegisterTransport(Protocol):
    """Raw register access to the devices behind one connection (TCP socket or serial bus)."""

    def read_registers(self, block: ReadBlock, *, unit: int, timeout: float) -> list[int]:
        """Read ``block``; raises a ``SensorError`` subclass."""
        ...

    def write_registers(self, address: int, values: Sequence[int], *, unit: int,
                        timeout: float) -> None:
        """Write holding registers; raises a ``SensorError`` subclass."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterMap:
    """Channels, optional label register and optional sample-counter register."""

    channels: tuple[RegisterSpec, ...]
    label: RegisterSpec | None = None
    label_none: int | None = NO_LABEL
    counter: RegisterSpec | None = None
    blocks: tuple[ReadBlock, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.channels:
            raise SensorConfigError("a register map needs at least one channel")
        names = [s.name for s in self.all_specs]
        if len(set(names)) != len(names):
            raise SensorConfigError("register names must be unique")
        object.__setattr__(self, "blocks", plan_reads(self.all_specs))

    @property
    def all_specs(self) -> tuple[RegisterSpec, ...]:
        """Channels, then label and counter when present."""
        extra = tuple(s for s in (self.label, self.counter) if s is not None)
        return self.channels + extra


def classify(exc: SensorError) -> FailureKind:
    """Counter kind of a transport error."""
    if isinstance(exc, SensorTimeoutError):
        return "timeout"
    if isinstance(exc, ModbusExceptionError):
        return "exception"
    if isinstance(exc, SensorConnectionError):
        return "connection"
    return "frame"


class RegisterPoller:
    """One Modbus device: register map + transport + health."""

    def __init__(self, *, name: str, unit: int, timeout: float, register_map: RegisterMap,
                 policy: BackoffPolicy, transport: RegisterTransport,
                 health: DeviceHealth | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not 0 <= unit <= 247:
            raise SensorConfigError("unit must be 0..247")
        if timeout <= 0:
            raise SensorConfigError("timeout must be > 0")
        self.name = name
        self.unit = unit
        self.timeout = timeout
        self.register_map = register_map
        self.policy = policy
        self.transport = transport
        self.health = health or DeviceHealth(policy)
        self._clock = clock
        self._sleep = sleep

    def now(self) -> float:
        """The poller's clock (monotonic seconds)."""
        return self._clock()

    def _guard(self, fn: Callable[[], Sample]) -> Sample:
        try:
            result = fn()
        except SensorError as exc:
            self.health.record_failure(classify(exc), self._clock(), type(exc).__name__)
            raise
        self.health.record_success()
        return result

    def attempt(self) -> Sample:
        """Exactly one try; counted; failures start the backoff."""
        if not self.health.ready(self._clock()):
            raise DeviceUnavailableError(f"{self.name} is backing off")
        return self._guard(self._read_once)

    def _read_once(self) -> Sample:
        rm = self.register_map
        data = {b: self.transport.read_registers(b, unit=self.unit, timeout=self.timeout)
                for b in rm.blocks}
        label: int | None = None
        if rm.label is not None:
            raw = int(decode(rm.label, extract(rm.label, data)))
            label = None if (rm.label_none is not None and raw == rm.label_none) or raw < 0 \
                else raw
        seq = None if rm.counter is None else int(decode(rm.counter, extract(rm.counter, data)))
        return Sample(values=decode_all(rm.channels, data), label=label, t_mono=self._clock(),
                      seq=seq)

    def read(self) -> Sample:
        """Up to ``1 + retries`` attempts, waiting out the backoff between them."""
        i = 0
        while True:
            wait = self.health.next_attempt - self._clock()
            if wait > 0:
                self._sleep(wait)
            try:
                return self.attempt()
            except SensorError:
                if i >= self.policy.retries:
                    raise
            i += 1
            self.health.record_retry()


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureLayout:
    """Register layout of a capture buffer starting at ``base`` (holding registers).

    ``base+0..1`` seq (uint32), ``+2`` label (uint16, 65535 = none),
    ``+3`` channels, ``+4`` length, ``+5`` reserved, ``+6..7`` ack (uint32,
    written by the reader), ``+8..`` samples as float32, channel-major.
    """

    base: int = 1000
    function: Function = "holding"
    word_order: Order = "big"
    byte_order: Order = "big"

    HEADER = 8

    def __post_init__(self) -> None:
        if not 0 <= self.base <= 0xFFFF - self.HEADER:
            raise SensorConfigError("base out of range")

    @property
    def seq_spec(self) -> RegisterSpec:
        """The sequence number register."""
        return RegisterSpec(name="capture_seq", function=self.function, address=self.base,
                            type="uint32")

    @property
    def data_address(self) -> int:
        """First sample register."""
        return self.base + self.HEADER

    @property
    def ack_address(self) -> int:
        """Ack register (uint32, holding)."""
        return self.base + 6

    def header_registers(self, *, seq: int, label: int | None, channels: int,
                         length: int) -> list[int]:
        """Header registers as the device exposes them (used by the simulator)."""
        return [(seq >> 16) & 0xFFFF, seq & 0xFFFF, NO_LABEL if label is None else label,
                channels, length, 0, 0, 0]


class CaptureReader:
    """Reads complete, consistent captures from one device."""

    def __init__(self, poller: RegisterPoller, layout: CaptureLayout, *, ack: bool = True,
                 max_restarts: int = 3) -> None:
        self.poller = poller
        self.layout = layout
        self.ack = ack
        self.max_restarts = max_restarts
        self.last_seq: int | None = None

    def _read(self, address: int, count: int) -> list[int]:
        p, out = self.poller, []
        for a in range(address, address + count, MAX_READ_COUNT):
            n = min(MAX_READ_COUNT, address + count - a)
            block = ReadBlock(function=self.layout.function, address=a, count=n)
            out += p.transport.read_registers(block, unit=p.unit, timeout=p.timeout)
        return out

    def _seq(self) -> int:
        return int(decode(self.layout.seq_spec, self._read(self.layout.base, 2)))

    def poll(self) -> Window | None:
        """One try: the new capture, or ``None`` if the device still shows the last one."""
        p = self.poller
        if not p.health.ready(p.now()):
            raise DeviceUnavailableError(f"{p.name} is backing off")
        try:
            window = self._poll()
        except SensorError as exc:
            p.health.record_failure(classify(exc), p.now(), type(exc).__name__)
            raise
        if window is not None:
            p.health.record_success()
        return window

    def _poll(self) -> Window | None:
        lay = self.layout
        for _ in range(self.max_restarts + 1):
            head = self._read(lay.base, 5)
            seq = (head[0] << 16) | head[1]
            if seq == self.last_seq:
                return None
            label = None if head[2] == NO_LABEL else head[2]
            channels, length = head[3], head[4]
            if channels < 1 or length < 1 or lay.data_address + 2 * channels * length > 0x10000:
                raise FrameError(f"capture header invalid: {channels} x {length}")
            words = self._read(lay.data_address, 2 * channels * length)
            if self._seq() != seq:
                self.poller.health.record_capture_restart()
                continue
            x = decode_float32_array(words, word_order=lay.word_order,
                                     byte_order=lay.byte_order).reshape(channels, length)
            if self.ack:
                self.poller.transport.write_registers(
                    lay.ack_address, [(seq >> 16) & 0xFFFF, seq & 0xFFFF],
                    unit=self.poller.unit, timeout=self.poller.timeout)
            self.last_seq = seq
            return Window(x=np.ascontiguousarray(x, dtype=np.float32), label=label,
                          source_seq=seq)
        raise CaptureChangedError(f"capture changed during {self.max_restarts + 1} reads")

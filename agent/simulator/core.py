"""State of a simulated Modbus device: its register image, live values, captures, faults.

Theory of operation (pure; the server adapter calls in, passing time):

* LIVE: ``tick(n)`` draws ``n`` new samples from the live signal, writes the
  last one into the channel registers (encoded with the same
  :mod:`agent.sensors.registers` code the agent decodes with), adds ``n``
  to the uint32 sample counter and writes the current class to the label
  register (65535 = none).
* CAPTURE: the image holds one record at a time in the layout of
  :class:`agent.sensors.device.CaptureLayout`. The device moves to the next
  record when the agent writes the current sequence number to the ack
  register, or, when ``capture_period`` > 0, after that many seconds even
  without an ack. Each new record gets ``seq + 1``.
* Faults: each request independently fails with probability ``fail_rate``
  (a Modbus exception response with ``exception_code``) or, with
  probability ``silent_rate``, gets no answer at all (a timeout for the
  client); every answer is delayed by ``delay_ms``.

The image is mirrored on holding and input registers.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from agent.sensors.device import NO_LABEL, CaptureLayout
from agent.sensors.errors import SensorConfigError
from agent.sensors.registers import Order, RegisterSpec, encode, encode_float32_array
from agent.simulator.signals import CapturesExhausted, CaptureSource, LiveSignal

IMAGE_SIZE = 0x10000


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveLayout:
    """Where live values are exposed: counter, label and one spec per channel."""

    channels: tuple[RegisterSpec, ...]
    counter: RegisterSpec = field(default_factory=lambda: RegisterSpec(
        name="counter", address=0, type="uint32"))
    label: RegisterSpec = field(default_factory=lambda: RegisterSpec(
        name="label", address=2, type="uint16"))

    def __post_init__(self) -> None:
        if not self.channels:
            raise SensorConfigError("at least one channel")
        spans = sorted((s.address, s.end) for s in (self.counter, self.label, *self.channels))
        if any(a < e_prev for (_, e_prev), (a, _) in itertools.pairwise(spans)):
            raise SensorConfigError("live registers overlap")

    @classmethod
    def default(cls, n_channels: int, *, base: int = 10, word_order: Order = "big",
                byte_order: Order = "big") -> LiveLayout:
        """Counter at 0-1, label at 2, float32 channels from ``base``, 2 registers each."""
        return cls(channels=tuple(
            RegisterSpec(name=f"ch{c}", address=base + 2 * c, type="float32",
                         word_order=word_order, byte_order=byte_order)
            for c in range(n_channels)))


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Fault injection for tests and demos."""

    fail_rate: float = 0.0
    silent_rate: float = 0.0
    delay_ms: float = 0.0
    exception_code: int = 4

    def __post_init__(self) -> None:
        if not (0.0 <= self.fail_rate <= 1.0 and 0.0 <= self.silent_rate <= 1.0):
            raise SensorConfigError("rates must be in [0, 1]")
        if self.delay_ms < 0:
            raise SensorConfigError("delay_ms must be >= 0")
        if not 1 <= self.exception_code <= 255:
            raise SensorConfigError("exception_code must be 1..255")


Fault = Literal["none", "exception", "silent"]


class SimulatorCore:
    """Register image and behaviour of one simulated device (one owner thread)."""

    def __init__(self, *, live: LiveSignal | None = None, layout: LiveLayout | None = None,
                 captures: CaptureSource | None = None,
                 capture_layout: CaptureLayout | None = None, capture_period: float = 0.0,
                 faults: FaultPlan | None = None, rng: random.Random | None = None) -> None:
        if live is None and captures is None:
            raise SensorConfigError("need a live signal, captures, or both")
        if live is not None and layout is None:
            layout = LiveLayout.default(live.channels)
        if captures is not None and capture_layout is None:
            capture_layout = CaptureLayout()
        if capture_period < 0:
            raise SensorConfigError("capture_period must be >= 0")
        self.live, self.layout = live, layout
        self.captures, self.capture_layout = captures, capture_layout
        self.capture_period = capture_period
        self.faults = faults or FaultPlan()
        self._rng = rng or random.Random()  # noqa: S311 - fault injection, not security
        self.image: npt.NDArray[np.uint16] = np.zeros(IMAGE_SIZE, dtype=np.uint16)
        self.counter = 0
        self.seq = 0
        self.capture_label: int | None = None
        self._capture_t = 0.0
        self.extent = 0
        if layout is not None:
            self.extent = max(s.end for s in (layout.counter, layout.label, *layout.channels))
            self._put(layout.label, NO_LABEL)
        if captures is not None:
            self.next_capture(0.0)

    @property
    def channels(self) -> int:
        """Channels of the live signal, else of the current capture."""
        if self.live is not None:
            return self.live.channels
        if self.capture_layout is None:  # pragma: no cover - excluded by __init__
            return 0
        return int(self.image[self.capture_layout.base + 3])

    def _put(self, spec: RegisterSpec, value: float) -> None:
        self.image[spec.address:spec.end] = encode(spec, value)

    def tick(self, n: int = 1) -> None:
        """Advance the live signal by ``n`` samples and publish the last one."""
        if self.live is None or self.layout is None or n <= 0:
            return
        x = self.live.next_samples(n)
        for spec, v in zip(self.layout.channels, x[:, -1], strict=False):
            self._put(spec, float(v))
        self.counter = (self.counter + n) & 0xFFFFFFFF
        self._put(self.layout.counter, self.counter)
        label = self.live.label
        self._put(self.layout.label, NO_LABEL if label is None else label)

    def next_capture(self, now: float) -> None:
        """Load the next record into the capture buffer (seq + 1)."""
        if self.captures is None or self.capture_layout is None:
            return
        lay = self.capture_layout
        try:
            x, label = self.captures.next_capture()
        except CapturesExhausted:
            return  # a non-looping source keeps its last capture

        channels, length = x.shape
        end = lay.data_address + 2 * channels * length
        if end > IMAGE_SIZE:
            raise SensorConfigError(f"capture {channels} x {length} exceeds the register space")
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        self.capture_label = label
        self.image[lay.data_address:end] = encode_float32_array(
            x, word_order=lay.word_order, byte_order=lay.byte_order)
        head = lay.header_registers(seq=self.seq, label=label, channels=channels, length=length)
        self.image[lay.base:lay.base + 6] = head[:6]
        self.extent = max(self.extent, end)
        self._capture_t = now

    def maybe_advance(self, now: float) -> None:
        """Timed capture advance (``capture_period`` > 0)."""
        if self.capture_period > 0 and now - self._capture_t >= self.capture_period:
            self.next_capture(now)

    def write(self, address: int, values: list[int], now: float) -> None:
        """A client wrote holding registers; an ack of the current seq advances the capture."""
        self.image[address:address + len(values)] = values
        lay = self.capture_layout
        if lay is not None and address <= lay.ack_address < address + len(values):
            ack = (int(self.image[lay.ack_address]) << 16) | int(self.image[lay.ack_address + 1])
            if ack == self.seq:
                self.next_capture(now)

    def read(self, address: int, count: int) -> list[int]:
        """Registers ``address .. address+count-1``."""
        return [int(v) for v in self.image[address:address + count]]

    def draw_fault(self) -> Fault:
        """Fault for the next request."""
        r = self._rng.random()
        if r < self.faults.fail_rate:
            return "exception"
        if r < self.faults.fail_rate + self.faults.silent_rate:
            return "silent"
        return "none"

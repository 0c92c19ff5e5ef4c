"""Sliding windows over live samples.

Theory of operation: :class:`SampleWindower` keeps the last ``length``
samples; after the first full window it emits a window every ``hop`` new
samples (as ``models.datasets.windows.sliding_windows`` does on arrays).
When samples carry the device's sample counter (``seq``), a repeated
counter (polled faster than the device updates) is dropped and counted as a
duplicate, and a jump is counted as missed samples; the window is labelled
with the label of its last sample. Pure; :class:`LiveWindowSource` wires it
to any :class:`SensorReader`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from agent.sensors.base import Sample, SensorReader, Window
from agent.sensors.errors import SensorConfigError, SensorTimeoutError


class SampleWindower:
    """Turns a stream of samples into (channels, length) windows."""

    def __init__(self, *, length: int, hop: int) -> None:
        if length < 1 or hop < 1:
            raise SensorConfigError("length and hop must be >= 1")
        self.length = length
        self.hop = hop
        self._buf: deque[Sample] = deque(maxlen=length)
        self._since_emit = 0
        self._emitted = 0
        self._last_seq: int | None = None
        self.duplicates = 0
        self.missed = 0

    def push(self, sample: Sample) -> Window | None:
        """Add a sample; returns a window when one is complete."""
        if sample.seq is not None and self._last_seq is not None:
            gap = sample.seq - self._last_seq
            if gap == 0:
                self.duplicates += 1
                return None
            if gap > 1:
                self.missed += gap - 1
        if sample.seq is not None:
            self._last_seq = sample.seq
        if self._buf and self._buf[-1].values.shape != sample.values.shape:
            raise SensorConfigError("channel count changed between samples")
        self._buf.append(sample)
        self._since_emit += 1
        if len(self._buf) < self.length:
            return None
        if self._emitted and self._since_emit < self.hop:
            return None
        self._since_emit = 0
        x = np.stack([s.values for s in self._buf], axis=1).astype(np.float32)
        window = Window(x=x, label=self._buf[-1].label, source_seq=self._emitted)
        self._emitted += 1
        return window


class LiveWindowSource:
    """A :class:`WindowSource` that polls a :class:`SensorReader` and windows its samples.

    Pacing is the reader's business (a bus reader blocks until the next
    sample); for a direct reader pass ``period`` to poll at the sample rate.
    """

    def __init__(self, reader: SensorReader, *, length: int, hop: int, period: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._reader = reader
        self._windower = SampleWindower(length=length, hop=hop)
        self._period = period
        self._clock = clock
        self._sleep = sleep
        self._next = clock()

    def next_window(self, *, timeout: float) -> Window:
        """Read samples until a window completes or ``timeout`` s pass."""
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            if self._period > 0:
                self._sleep(max(0.0, self._next - self._clock()))
                self._next = max(self._next + self._period, self._clock() - self._period)
            window = self._windower.push(self._reader.read())
            if window is not None:
                return window
        raise SensorTimeoutError(f"no complete window within {timeout} s")

    def close(self) -> None:
        """Close the underlying reader."""
        self._reader.close()

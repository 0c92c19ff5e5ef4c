"""The sensor interfaces every source implements, and the values they return.

``SensorReader`` gives one :class:`Sample` (all channels at one instant plus
an optional class label); ``WindowSource`` gives one :class:`Window`
(channels x length) at a time, for devices with waveform capture buffers,
for replayed datasets, and for live readers wrapped by
:class:`agent.sensors.windowing.LiveWindowSource`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.sensors.errors import SensorConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One reading of every channel of one device."""

    values: npt.NDArray[np.float64] = field(repr=False)
    label: int | None
    t_mono: float
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 1:
            raise SensorConfigError("values must have shape (channels,)")
        if not math.isfinite(self.t_mono):
            raise SensorConfigError("t_mono must be finite")
        if self.label is not None and self.label < 0:
            raise SensorConfigError("label must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """One model input: ``x`` of shape (channels, length), float32."""

    x: npt.NDArray[np.float32] = field(repr=False)
    label: int | None
    source_seq: int

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != np.float32:
            raise SensorConfigError("x must be a float32 array of shape (channels, length)")
        if self.label is not None and self.label < 0:
            raise SensorConfigError("label must be >= 0")


class SensorReader(Protocol):
    """A device read one sample at a time."""

    def read(self) -> Sample:
        """Read every channel once; raises :class:`protocol.errors.SensorError`."""
        ...

    def close(self) -> None:
        """Release the port or connection (idempotent)."""
        ...


class WindowSource(Protocol):
    """A producer of whole windows."""

    def next_window(self, *, timeout: float) -> Window:
        """The next window; raises ``SensorTimeoutError`` if none within ``timeout`` s."""
        ...

    def close(self) -> None:
        """Release resources (idempotent)."""
        ...

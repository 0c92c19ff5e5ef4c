"""What a simulated device serves: live signals and capture records (pure numpy).

``LiveSignal`` yields successive samples (channels x n) with the current
class; ``CaptureSource`` yields whole records. :class:`ArraySignal` loops
over a fixed array (tests, dataset-as-stream); :class:`RecordCaptures`
serves dataset records one per capture, each resampled to a fixed length by
linear interpolation; :class:`StreamCaptures` cuts captures from a live
signal; :class:`VibrationSignal` adapts the synthetic vibration generator of
:mod:`models.datasets.vibration`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.sensors.errors import SensorConfigError
from protocol.errors import SensorError

F32 = npt.NDArray[np.float32]


class LiveSignal(Protocol):
    """A continuous multichannel signal."""

    @property
    def channels(self) -> int:
        """Channel count."""
        ...

    @property
    def label(self) -> int | None:
        """Class of the most recent sample."""
        ...

    def next_samples(self, n: int) -> F32:
        """The next ``n`` samples, shape (channels, n)."""
        ...


class CaptureSource(Protocol):
    """A sequence of labelled records."""

    def next_capture(self) -> tuple[F32, int | None]:
        """The next record (channels, length) and its class."""
        ...


class ArraySignal:
    """Loops over ``x`` (channels, n) with one label per sample (or one for all)."""

    def __init__(self, x: npt.ArrayLike, labels: Sequence[int] | int | None = None) -> None:
        self._x = np.atleast_2d(np.asarray(x, dtype=np.float32))
        n = self._x.shape[1]
        if isinstance(labels, int) or labels is None:
            self._labels: list[int | None] = [labels] * n
        else:
            if len(labels) != n:
                raise SensorConfigError("one label per sample")
            self._labels = list(labels)
        self._i = 0
        self._label: int | None = None

    @property
    def channels(self) -> int:
        """Channel count."""
        return int(self._x.shape[0])

    @property
    def label(self) -> int | None:
        """Label of the last sample served."""
        return self._label

    def next_samples(self, n: int) -> F32:
        """Next ``n`` samples, wrapping around."""
        idx = (self._i + np.arange(n)) % self._x.shape[1]
        self._i = int((self._i + n) % self._x.shape[1])
        if n:
            self._label = self._labels[int(idx[-1])]
        return self._x[:, idx]


def resample(x: npt.ArrayLike, length: int) -> F32:
    """Linear resampling of (channels, n) to (channels, length)."""
    a = np.atleast_2d(np.asarray(x, dtype=np.float64))
    if a.shape[1] == length:
        return a.astype(np.float32)
    src = np.linspace(0.0, 1.0, a.shape[1])
    dst = np.linspace(0.0, 1.0, length)
    return np.stack([np.interp(dst, src, row) for row in a]).astype(np.float32)


class CapturesExhausted(SensorError):  # noqa: N818 - a state, not a failure
    """Every record was served once and the source does not loop."""


class RecordCaptures:
    """Serves records in order, each resampled to ``length``.

    With ``loop=False`` each record is served exactly once: a simulated meter
    whose every capture is a distinct real recording (so one dataset record is
    one privacy record on the device); afterwards the last capture stays.
    """

    def __init__(self, series: Sequence[npt.ArrayLike], labels: Sequence[int], *, length: int,
                 indices: Sequence[int] | None = None, loop: bool = True,
                 window_mode: str = "resample") -> None:
        if len(series) != len(labels) or not series:
            raise SensorConfigError("need one label per record and at least one record")
        self._series = series
        self._labels = [int(v) for v in labels]
        self._order = list(indices) if indices is not None else list(range(len(series)))
        if not self._order or not all(0 <= i < len(series) for i in self._order):
            raise SensorConfigError("indices out of range")
        self.length = length
        self.loop = loop
        if window_mode not in ("resample", "pad", "crop"):
            raise SensorConfigError(f"window mode must be resample, pad or crop: {window_mode!r}")
        self.window_mode = window_mode
        self._pos = 0

    def next_capture(self) -> tuple[F32, int | None]:
        """Next record; :class:`CapturesExhausted` once all were served without ``loop``."""
        if not self.loop and self._pos >= len(self._order):
            raise CapturesExhausted(f"all {len(self._order)} records served")
        i = self._order[self._pos % len(self._order)]
        self._pos += 1
        if self.window_mode == "resample":
            return resample(self._series[i], self.length), self._labels[i]
        from models.datasets.windows import to_fixed_length

        x = to_fixed_length([np.asarray(self._series[i], np.float32)], length=self.length,
                            mode=self.window_mode)  # type: ignore[arg-type]
        return x[0], self._labels[i]


class StreamCaptures:
    """Captures cut from a live signal: each is the next ``length`` samples and its class."""

    def __init__(self, live: LiveSignal, *, length: int) -> None:
        if length < 1:
            raise SensorConfigError("length must be >= 1")
        self._live = live
        self.length = length

    def next_capture(self) -> tuple[F32, int | None]:
        """Next ``length`` samples, labelled with the class of the last one."""
        x = self._live.next_samples(self.length)
        return x, self._live.label


class VibrationSignal:
    """Adapter over ``models.datasets.vibration.VibrationStream`` (imported lazily).

    The machine is ``random_profile(machine_id, seed=seed, ...)`` sampled at
    ``sample_rate_hz`` (the simulator's live rate).
    """

    def __init__(self, *, machine_id: int = 0, seed: int = 0, channels: int = 1,
                 sample_rate_hz: float = 12_000.0, mean_dwell_s: float = 30.0) -> None:
        import importlib

        vibration = importlib.import_module("models.datasets.vibration")
        profile = vibration.random_profile(machine_id, seed=seed, channels=channels,
                                           sample_rate_hz=sample_rate_hz)
        self._stream = vibration.VibrationStream(profile, seed, mean_dwell_s=mean_dwell_s)
        self._channels = channels

    @property
    def channels(self) -> int:
        """Channel count."""
        return self._channels

    @property
    def label(self) -> int | None:
        """Current machine condition class."""
        lab = getattr(self._stream, "label", None)
        return None if lab is None else int(lab)

    def next_samples(self, n: int) -> F32:
        """Next ``n`` samples."""
        return np.atleast_2d(np.asarray(self._stream.next_samples(n), dtype=np.float32))

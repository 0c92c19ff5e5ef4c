"""Replay of dataset files (UCR/UEA ``.ts``) as a sensor.

:class:`ReplaySource` is a :class:`WindowSource`: one record per window,
brought to ``length`` with ``models.datasets.windows.to_fixed_length``
(``resample`` by default), in file order or in the order of ``indices`` (a
partition given to this node), looping when ``loop`` is true.
:class:`ReplayReader` is a :class:`SensorReader` that plays the same
records sample by sample, for pipelines that window live samples
themselves. Neither paces itself: callers that want real time sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from agent.sensors.base import Sample, Window
from agent.sensors.errors import SensorConfigError, SensorTimeoutError
from models.datasets.ucr import TsDataset, load_ts
from models.datasets.windows import WindowMode, to_fixed_length


class ReplaySource:
    """Dataset records as windows."""

    def __init__(self, data: TsDataset | str | Path, *, length: int, mode: WindowMode = "resample",
                 indices: Sequence[int] | None = None, loop: bool = False) -> None:
        ds = data if isinstance(data, TsDataset) else load_ts(data)
        order = list(range(len(ds))) if indices is None else [int(i) for i in indices]
        if not order or not all(0 <= i < len(ds) for i in order):
            raise SensorConfigError("indices must be non-empty and within the dataset")
        self._x = to_fixed_length([ds.series[i] for i in order], length=length, mode=mode)
        self._y = [int(ds.labels[i]) for i in order]
        self._order = order
        self._pos = 0
        self.loop = loop

    def __len__(self) -> int:
        return len(self._order)

    def next_window(self, *, timeout: float = 0.0) -> Window:
        """Next record; ``SensorTimeoutError`` once exhausted when not looping."""
        if self._pos >= len(self._order):
            if not self.loop:
                raise SensorTimeoutError("replay exhausted")
            self._pos = 0
        i = self._pos
        self._pos += 1
        y = self._y[i]
        return Window(x=np.ascontiguousarray(self._x[i]), label=None if y < 0 else y,
                      source_seq=self._order[i])

    def close(self) -> None:
        """Nothing to release."""


class ReplayReader:
    """Dataset records played sample by sample (channels,) with the record's label."""

    def __init__(self, source: ReplaySource, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._clock = clock
        self._window: Window | None = None
        self._j = 0

    def read(self) -> Sample:
        """Next sample."""
        if self._window is None or self._j >= self._window.x.shape[1]:
            self._window = self._source.next_window()
            self._j = 0
        w = self._window
        values = w.x[:, self._j].astype(np.float64)
        self._j += 1
        return Sample(values=values, label=w.label, t_mono=self._clock())

    def close(self) -> None:
        """Nothing to release."""

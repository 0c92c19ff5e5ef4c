"""Build a :class:`SimulatorCore` from a dataset name (used by the CLI and the agent app).

Datasets (``.ts``) become captures (one record each, resampled to
``length``) or, in live mode, one continuous signal (records concatenated,
each sample labelled with its record's class). ``synthetic-vibration``
becomes the live vibration stream, or captures cut from it.
"""

from __future__ import annotations

import numpy as np

from agent.sensors.device import CaptureLayout
from agent.sensors.errors import SensorConfigError
from agent.simulator.core import FaultPlan, SimulatorCore
from agent.simulator.signals import ArraySignal, RecordCaptures, StreamCaptures, VibrationSignal
from models.datasets.ucr import load_ts


def build_core(*, dataset: str, indices: list[int] | None, mode: str, length: int,
               channels: int, seed: int, sample_rate: float, period: float,
               faults: FaultPlan, capture_layout: CaptureLayout | None = None,
               loop: bool = True, window_mode: str = "resample") -> SimulatorCore:
    """A simulator core serving ``dataset`` (a ``.ts`` path or ``synthetic-vibration``).

    Raises ``ValueError`` for bad indices and ``DatasetError`` for unreadable files.
    """
    if dataset == "synthetic-vibration":
        live = VibrationSignal(channels=channels, seed=seed, sample_rate_hz=sample_rate)
        if mode == "live":
            return SimulatorCore(live=live, faults=faults)
        return SimulatorCore(captures=StreamCaptures(live, length=length),
                             capture_layout=capture_layout, capture_period=period,
                             faults=faults)
    ds = load_ts(dataset)
    order = indices if indices is not None else list(range(len(ds)))
    if not all(i < len(ds) for i in order):
        raise SensorConfigError(f"indices out of range: the dataset has {len(ds)} records")
    labels = [max(int(v), 0) for v in ds.labels]
    if mode == "capture":
        return SimulatorCore(captures=RecordCaptures(ds.series, labels, length=length,
                                                     indices=order, loop=loop,
                                                     window_mode=window_mode),
                             capture_layout=capture_layout, capture_period=period,
                             faults=faults)
    xs = [ds.series[i] for i in order]
    per_sample = np.concatenate([np.full(x.shape[1], labels[i]) for i, x in zip(order, xs,
                                                                              strict=True)])
    return SimulatorCore(live=ArraySignal(np.concatenate(xs, axis=1),
                                          [int(v) for v in per_sample]), faults=faults)

"""Fixed-length windows from variable-length series (pure numpy).

Models take ``(N, C, length)`` float32 batches; datasets such as PLAID have a
different length per series and sensors deliver an endless ``(C, T)`` stream.
The policies here are exact and documented so that a node and the server
window the same way:

- ``crop``: longer series are **centre**-cropped (the extra sample, if the
  excess is odd, is dropped at the end); shorter ones are padded **at the
  end** with their **last value** (edge padding), never with zeros.
- ``pad``: shorter series are padded **at the end** with **zeros**; longer
  ones keep their **first** ``length`` samples.
- ``resample``: every series is linearly interpolated onto ``length``
  evenly spaced points spanning its first to its last sample (a series of
  one sample becomes constant). This changes the time scale.

Missing values (``NaN``) must be filled first with :func:`fill_missing`;
the functions here reject them rather than spread them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.datasets.errors import DatasetError
from protocol.errors import ConfigError

WindowMode = Literal["crop", "pad", "resample"]
MODES: tuple[WindowMode, ...] = ("crop", "pad", "resample")


def _as_2d(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or a.shape[1] < 1:
        raise DatasetError(f"{what} must have shape (channels, length >= 1), got {a.shape}")
    if np.isnan(a).any():
        raise DatasetError(f"{what} contains NaN: call fill_missing first")
    return a


def _fix_one(a: np.ndarray, length: int, mode: WindowMode) -> np.ndarray:
    n = a.shape[1]
    if mode == "resample":
        if n == 1:
            return np.repeat(a, length, axis=1)
        grid = np.linspace(0.0, n - 1.0, length)
        src = np.arange(n, dtype=np.float64)
        return np.stack([np.interp(grid, src, row) for row in a])
    if n >= length:
        start = (n - length) // 2 if mode == "crop" else 0
        return a[:, start : start + length]
    out = np.empty((a.shape[0], length), dtype=a.dtype)
    out[:, :n] = a
    out[:, n:] = a[:, -1:] if mode == "crop" else 0.0
    return out


def to_fixed_length(
    series: Sequence[np.ndarray], *, length: int, mode: WindowMode
) -> np.ndarray:
    """Bring every ``(C, length_i)`` series to ``length``; returns ``(N, C, length)`` float32.

    See the module docstring for the exact ``crop`` / ``pad`` / ``resample``
    policies. All series must have the same channel count and no ``NaN``.
    """
    if mode not in MODES:
        raise DatasetError(f"mode must be one of {MODES}, got {mode!r}")
    if length < 1:
        raise DatasetError(f"length must be >= 1, got {length}")
    if len(series) == 0:
        return np.zeros((0, 0, length), dtype=np.float32)
    arrays = [_as_2d(s, f"series {i}") for i, s in enumerate(series)]
    channels = arrays[0].shape[0]
    out = np.empty((len(arrays), channels, length), dtype=np.float32)
    for i, a in enumerate(arrays):
        if a.shape[0] != channels:
            raise DatasetError(f"series {i} has {a.shape[0]} channels, series 0 has {channels}")
        out[i] = _fix_one(a, length, mode)
    return out


def sliding_windows(stream: np.ndarray, *, length: int, hop: int) -> np.ndarray:
    """Cut a ``(C, T)`` stream into ``(W, C, length)`` windows every ``hop`` samples.

    ``W = 1 + (T - length) // hop`` (0 when ``T < length``); a tail shorter
    than a window is dropped. The result is a float32 copy.
    """
    if length < 1 or hop < 1:
        raise DatasetError(f"length and hop must be >= 1, got length={length}, hop={hop}")
    a = np.asarray(stream)
    if a.ndim != 2:
        raise DatasetError(f"stream must have shape (channels, T), got {a.shape}")
    channels, total = a.shape
    if total < length:
        return np.zeros((0, channels, length), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(a, length, axis=1)[:, ::hop, :]
    return np.ascontiguousarray(view.transpose(1, 0, 2), dtype=np.float32)


def fill_missing(x: np.ndarray, *, fallback: float = 0.0) -> np.ndarray:
    """Replace ``NaN`` by linear interpolation along the last (time) axis.

    Interior gaps are interpolated linearly between the nearest valid samples
    on each side; leading/trailing gaps take the nearest valid value
    (constant extrapolation); a row with no valid sample at all becomes
    ``fallback``. Works on any shape (each row along the last axis is filled
    independently); returns a new array with the input dtype.
    """
    a = np.asarray(x)
    if a.ndim == 0:
        raise DatasetError("fill_missing needs at least one axis")
    out = np.array(a, copy=True, order="C")
    if out.size == 0:
        return out
    rows = out.reshape(-1, out.shape[-1])  # a view: C-contiguous copy above
    idx = np.arange(out.shape[-1], dtype=np.float64)
    for row in rows:
        bad = np.isnan(row)
        if not bad.any():
            continue
        if bad.all():
            row[:] = fallback
            continue
        row[bad] = np.interp(idx[bad], idx[~bad], row[~bad])
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowSpec:
    """How variable-length series become model inputs (a config value).

    Invalid values raise :class:`protocol.errors.ConfigError` listing every problem.

    ``apply`` fills missing values first (when ``fill_nan``; see
    :func:`fill_missing`), then calls :func:`to_fixed_length`.
    """

    length: int
    mode: WindowMode = "resample"
    fill_nan: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.length, int) or self.length < 1:
            problems.append(f"length must be an integer >= 1, got {self.length!r}")
        if self.mode not in MODES:
            problems.append(f"mode must be one of {MODES}, got {self.mode!r}")
        if problems:
            raise ConfigError(problems)

    def apply(self, series: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, C, length)`` float32 from ``series`` of shape ``(C, length_i)``."""
        filled = [fill_missing(s) for s in series] if self.fill_nan else list(series)
        return to_fixed_length(filled, length=self.length, mode=self.mode)

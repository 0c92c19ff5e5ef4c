"""Text-line sensors on a serial port (a microcontroller printing readings).

Two line formats, one sample per line:

* ``csv``: ``v1,v2,...,vN`` or, with a label, ``v1,...,vN,label``;
* ``kv``:  ``ch0=1.2 ch1=3.4 label=2`` (space- or comma-separated; keys in
  any order; every configured channel key must be present).

:func:`parse_line` is pure. :class:`SerialLineReader` is the pyserial
adapter: it reads lines until one parses, counting and skipping malformed
ones (``malformed``), and raises ``SensorTimeoutError`` when no valid line
arrives within the timeout. Raw values are never logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from agent.sensors.base import Sample
from agent.sensors.errors import (
    MalformedLineError,
    SensorConfigError,
    SensorConnectionError,
    SensorTimeoutError,
)

log = logging.getLogger(__name__)

LineFormatName = Literal["csv", "kv"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LineFormat:
    """How to read one line: format, channel keys (kv) or count (csv), label field."""

    format: LineFormatName = "csv"
    channels: tuple[str, ...] = ("ch0",)
    label_key: str | None = None

    def __post_init__(self) -> None:
        if self.format not in ("csv", "kv"):
            raise SensorConfigError("format must be 'csv' or 'kv'")
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise SensorConfigError("channels must be non-empty and unique")
        if self.label_key is not None and self.label_key in self.channels:
            raise SensorConfigError("label_key must not be a channel")


def _number(token: str, what: str) -> float:
    try:
        v = float(token)
    except ValueError:
        raise MalformedLineError(f"{what}: not a number") from None
    if not math.isfinite(v):
        raise MalformedLineError(f"{what}: not finite")
    return v


def _label(token: str) -> int:
    try:
        v = int(token)
    except ValueError:
        raise MalformedLineError("label: not an integer") from None
    if v < 0:
        raise MalformedLineError("label: negative")
    return v


def parse_line(line: str | bytes, fmt: LineFormat) -> tuple[np.ndarray, int | None]:
    """Values (channels,) and label of one line; raises ``MalformedLineError``."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedLineError("not ASCII") from None
    text = line.strip()
    if not text:
        raise MalformedLineError("empty line")
    n = len(fmt.channels)
    if fmt.format == "csv":
        fields = [f.strip() for f in text.split(",")]
        want = n + (fmt.label_key is not None)
        if len(fields) != want:
            raise MalformedLineError(f"expected {want} fields, got {len(fields)}")
        values = [_number(f, fmt.channels[i]) for i, f in enumerate(fields[:n])]
        return np.array(values), (_label(fields[n]) if fmt.label_key is not None else None)
    pairs: dict[str, str] = {}
    for tok in text.replace(",", " ").split():
        key, sep, val = tok.partition("=")
        if not sep or not key:
            raise MalformedLineError("token without key=value")
        if key in pairs:
            raise MalformedLineError(f"duplicate key {key!r}")
        pairs[key] = val
    missing = [c for c in fmt.channels if c not in pairs]
    if missing:
        raise MalformedLineError(f"missing keys {missing}")
    values = [_number(pairs[c], c) for c in fmt.channels]
    label = None
    if fmt.label_key is not None and fmt.label_key in pairs:
        label = _label(pairs[fmt.label_key])
    return np.array(values), label


class LineStream(Protocol):
    """What the reader needs from a port: ``readline()`` honouring a timeout."""

    def readline(self) -> bytes:
        """One line including the newline, or a partial/empty result on timeout."""
        ...

    def close(self) -> None:
        """Close the port."""
        ...


class SerialLineReader:
    """:class:`SensorReader` for a serial text-line sensor."""

    def __init__(self, stream: LineStream, fmt: LineFormat, *, timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self.fmt = fmt
        self.timeout = timeout
        self._clock = clock
        self.malformed = 0
        self.reads_ok = 0

    @classmethod
    def open(cls, port: str, fmt: LineFormat, *, baudrate: int = 115200,
             timeout: float = 2.0) -> SerialLineReader:
        """Open ``port`` with pyserial (8N1)."""
        import serial

        try:
            stream: Any = serial.Serial(port, baudrate=baudrate, timeout=min(timeout, 0.5))
        except (serial.SerialException, OSError) as exc:
            raise SensorConnectionError(f"cannot open {port}") from exc
        return cls(stream, fmt, timeout=timeout)

    def read(self) -> Sample:
        """The next valid line as a sample."""
        import serial

        deadline = self._clock() + self.timeout
        while self._clock() < deadline:
            try:
                raw = self._stream.readline()
            except (serial.SerialException, OSError) as exc:
                raise SensorConnectionError("serial port failed") from exc
            if not raw or not raw.endswith(b"\n"):
                continue
            try:
                values, label = parse_line(raw, self.fmt)
            except MalformedLineError as exc:
                self.malformed += 1
                log.debug("malformed line skipped: %s", exc)
                continue
            self.reads_ok += 1
            return Sample(values=values, label=label, t_mono=self._clock())
        raise SensorTimeoutError(f"no valid line within {self.timeout} s")

    def close(self) -> None:
        """Close the port."""
        self._stream.close()

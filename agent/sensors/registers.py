"""Modbus register maps: typed values <-> 16-bit registers, and read planning.

Pure logic, no I/O. A :class:`RegisterSpec` says where one value lives
(function, address) and how it is encoded (type, word order, byte order,
scale, offset). ``decode`` turns the raw registers of one spec into an
engineering value ``raw * scale + offset``; ``encode`` is its inverse and is
what the simulator uses, so both ends share one definition.

Byte order is the order of the two bytes inside each 16-bit register
("big" is the Modbus standard); word order is the order of the registers of
a 32-bit value ("big": most significant word first).

:func:`plan_reads` coalesces specs of one function whose registers are
adjacent (or within ``max_gap``) into reads of at most 125 registers, the
Modbus limit for function codes 3 and 4; one spec is never split.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt

from agent.sensors.errors import FrameError, RegisterEncodingError, SensorConfigError

Function = Literal["holding", "input"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]

FUNCTIONS: tuple[Function, ...] = get_args(Function)
REGISTER_TYPES: tuple[str, ...] = get_args(RegisterType)
ORDERS: tuple[str, ...] = get_args(Order)
MAX_READ_COUNT = 125

_STRUCT = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}


def register_width(kind: RegisterType) -> int:
    """Number of 16-bit registers a value of ``kind`` occupies."""
    return _WIDTH[kind]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterSpec:
    """Where one value lives and how it is encoded."""

    name: str
    function: Function = "holding"
    address: int
    type: RegisterType = "uint16"
    word_order: Order = "big"
    byte_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise SensorConfigError("name must not be empty")
        if self.function not in FUNCTIONS:
            raise SensorConfigError(f"function must be one of {FUNCTIONS}")
        if self.type not in REGISTER_TYPES:
            raise SensorConfigError(f"type must be one of {REGISTER_TYPES}")
        if self.word_order not in ORDERS or self.byte_order not in ORDERS:
            raise SensorConfigError(f"word_order and byte_order must be one of {ORDERS}")
        if not 0 <= self.address <= 0xFFFF - self.width + 1:
            raise SensorConfigError("address out of range 0..65535")
        if not (math.isfinite(self.scale) and self.scale != 0.0 and math.isfinite(self.offset)):
            raise SensorConfigError("scale must be finite and non-zero, offset finite")

    @property
    def width(self) -> int:
        """Registers occupied."""
        return _WIDTH[self.type]

    @property
    def end(self) -> int:
        """One past the last register address."""
        return self.address + self.width


def _words_to_bytes(words: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    ordered = list(words) if word_order == "big" else list(reversed(words))
    out = bytearray()
    for w in ordered:
        if not 0 <= w <= 0xFFFF:
            raise FrameError(f"register value {w} is not 16-bit")
        hi, lo = w >> 8, w & 0xFF
        out += bytes((hi, lo)) if byte_order == "big" else bytes((lo, hi))
    return bytes(out)


def _bytes_to_words(data: bytes, word_order: Order, byte_order: Order) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        a, b = data[i], data[i + 1]
        words.append((a << 8) | b if byte_order == "big" else (b << 8) | a)
    return words if word_order == "big" else list(reversed(words))


def decode_raw(spec: RegisterSpec, words: Sequence[int]) -> float:
    """The raw (unscaled) value of ``spec`` from exactly ``spec.width`` registers."""
    if len(words) != spec.width:
        raise FrameError(f"{spec.name}: expected {spec.width} registers, got {len(words)}")
    value: float = struct.unpack(_STRUCT[spec.type], _words_to_bytes(words, spec.word_order,
                                                                     spec.byte_order))[0]
    return float(value)


def decode(spec: RegisterSpec, words: Sequence[int]) -> float:
    """Engineering value ``raw * scale + offset``."""
    return decode_raw(spec, words) * spec.scale + spec.offset


def encode(spec: RegisterSpec, value: float) -> list[int]:
    """Registers holding ``value`` (inverse of :func:`decode`; integers are rounded)."""
    raw = (value - spec.offset) / spec.scale
    if spec.type == "float32":
        if math.isfinite(raw) and abs(raw) > 3.4028234663852886e38:
            raise RegisterEncodingError(f"{spec.name}: value out of float32 range")
        packed = struct.pack(">f", raw)
    else:
        if not math.isfinite(raw):
            raise RegisterEncodingError(f"{spec.name}: non-finite value for {spec.type}")
        try:
            packed = struct.pack(_STRUCT[spec.type], round(raw))
        except struct.error as exc:
            raise RegisterEncodingError(f"{spec.name}: value out of {spec.type} range") from exc
    return _bytes_to_words(packed, spec.word_order, spec.byte_order)


def decode_float32_array(words: Sequence[int] | npt.NDArray[np.uint16], *,
                         word_order: Order = "big",
                         byte_order: Order = "big") -> npt.NDArray[np.float32]:
    """Vectorised decode of consecutive float32 values (capture buffers)."""
    w = np.asarray(words, dtype=np.uint16)
    if w.size % 2:
        raise FrameError("float32 array needs an even number of registers")
    pairs = w.reshape(-1, 2)
    if byte_order == "little":
        pairs = pairs.byteswap()
    if word_order == "little":
        pairs = pairs[:, ::-1]
    return np.ascontiguousarray(pairs).astype(">u2").view(">f4").astype(np.float32).ravel()


def encode_float32_array(values: npt.ArrayLike, *, word_order: Order = "big",
                         byte_order: Order = "big") -> npt.NDArray[np.uint16]:
    """Inverse of :func:`decode_float32_array`."""
    v = np.asarray(values, dtype=">f4").ravel()
    pairs = v.view(">u2").astype(np.uint16).reshape(-1, 2)
    if word_order == "little":
        pairs = pairs[:, ::-1]
    if byte_order == "little":
        pairs = pairs.byteswap()
    return np.ascontiguousarray(pairs).ravel()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadBlock:
    """One Modbus read request: ``count`` registers of ``function`` from ``address``."""

    function: Function
    address: int
    count: int

    def __post_init__(self) -> None:
        if self.function not in FUNCTIONS:
            raise SensorConfigError(f"function must be one of {FUNCTIONS}")
        if not 1 <= self.count <= MAX_READ_COUNT:
            raise SensorConfigError(f"count must be 1..{MAX_READ_COUNT}")
        if not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise SensorConfigError("address out of range")


def plan_reads(specs: Sequence[RegisterSpec], *, max_count: int = MAX_READ_COUNT,
               max_gap: int = 0) -> tuple[ReadBlock, ...]:
    """Coalesce specs into as few reads as possible (adjacent or within ``max_gap``)."""
    if not 1 <= max_count <= MAX_READ_COUNT:
        raise SensorConfigError(f"max_count must be 1..{MAX_READ_COUNT}")
    blocks: list[ReadBlock] = []
    for function in FUNCTIONS:
        ranges = sorted((s.address, s.end) for s in specs if s.function == function)
        start = end = -1
        for a, e in ranges:
            if start >= 0 and a <= end + max_gap and max(end, e) - start <= max_count:
                end = max(end, e)
                continue
            if start >= 0:
                blocks.append(ReadBlock(function=function, address=start, count=end - start))
            start, end = a, e
        if start >= 0:
            blocks.append(ReadBlock(function=function, address=start, count=end - start))
    return tuple(blocks)


def extract(spec: RegisterSpec, data: Mapping[ReadBlock, Sequence[int]]) -> list[int]:
    """The registers of ``spec`` out of the results of planned reads."""
    for block, words in data.items():
        if (block.function == spec.function and block.address <= spec.address
                and spec.end <= block.address + block.count):
            i = spec.address - block.address
            return list(words[i:i + spec.width])
    raise FrameError(f"{spec.name}: no read covers address {spec.address}")


def decode_all(specs: Sequence[RegisterSpec],
               data: Mapping[ReadBlock, Sequence[int]]) -> npt.NDArray[np.float64]:
    """Engineering values of ``specs`` (in order) from planned-read results."""
    return np.array([decode(s, extract(s, data)) for s in specs], dtype=np.float64)

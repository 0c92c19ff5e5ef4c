"""Field validators and wire-map helpers shared by the message modules.

Every validator is strict about types (``True`` is not an int, ``1`` is not a
string) and raises :class:`MalformedMessage`, so a message that fails
validation while being *built* and one that fails while being *decoded*
report the same way. Floats are normalised to ``float`` so that a value
survives an encode/decode round trip unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import numpy as np

from protocol._cbor import loads_strict
from protocol.envelope import MAX_ENVELOPE_BYTES
from protocol.errors import LimitExceeded, MalformedMessage, ProtocolError, TopicError
from protocol.topics import validate_id

__all__ = [
    "INT64_MAX",
    "Scalar",
    "check_keys",
    "field_names",
    "fields_eq",
    "guarded_build",
    "loads_json",
    "read_map",
    "req_bytes",
    "req_float",
    "req_hex_digest",
    "req_id",
    "req_int",
    "req_literal",
    "req_scalar_map",
    "set_field",
]

INT64_MAX: Final = (1 << 63) - 1
INT64_MIN: Final = -(1 << 63)
MAX_MAP_ENTRIES: Final = 32
MAX_STR_VALUE: Final = 1024
MAX_JSON_BYTES: Final = 1 << 20


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def field_names(cls: type) -> tuple[str, ...]:
    """The dataclass field names of a message class, in order (cached: on the hot path)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_HEX64 = re.compile(r"[0-9a-f]{64}")

Scalar = str | int | float
T = TypeVar("T")


def set_field(obj: object, name: str, value: object) -> None:
    """Normalise a field of a frozen dataclass inside ``__post_init__``."""
    object.__setattr__(obj, name, value)


def req_id(value: object, what: str) -> str:
    try:
        return validate_id(value, what=what)  # type: ignore[arg-type]
    except TopicError as exc:
        raise MalformedMessage(str(exc)) from exc


def req_int(value: object, what: str, *, lo: int = 0, hi: int = INT64_MAX) -> int:
    if type(value) is not int:
        raise MalformedMessage(f"{what} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise MalformedMessage(f"{what} = {value} is outside [{lo}, {hi}]")
    return value


def req_float(
    value: object,
    what: str,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
) -> float:
    if type(value) not in (int, float):
        raise MalformedMessage(f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError as exc:
        raise MalformedMessage(f"{what} is too large") from exc
    if not math.isfinite(number):
        raise MalformedMessage(f"{what} must be finite")
    if number < lo or number > hi or (lo_open and number == lo):
        bracket = "(" if lo_open else "["
        raise MalformedMessage(f"{what} = {number} is outside {bracket}{lo}, {hi}]")
    return number


def req_literal(value: object, what: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise MalformedMessage(f"{what} must be one of {options}, got {value!r:.80}")
    return value


def req_hex_digest(value: object, what: str) -> str:
    if not isinstance(value, str) or _HEX64.fullmatch(value) is None:
        raise MalformedMessage(f"{what} must be a SHA-256 digest as 64 lowercase hex characters")
    return value


def req_bytes(value: object, what: str, *, max_len: int, exact: int | None = None) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedMessage(f"{what} must be bytes, got {type(value).__name__}")
    if exact is not None and len(value) != exact:
        raise MalformedMessage(f"{what} must be {exact} bytes, got {len(value)}")
    if len(value) > max_len:
        raise MalformedMessage(f"{what} is {len(value)} bytes, more than {max_len}")
    return value


def req_scalar_map(value: object, what: str) -> Mapping[str, Scalar]:
    """A small read-only map of id-like keys to str / int64 / finite float values."""
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{what} must be a map, got {type(value).__name__}")
    if len(value) > MAX_MAP_ENTRIES:
        raise MalformedMessage(f"{what} has more than {MAX_MAP_ENTRIES} entries")
    out: dict[str, Scalar] = {}
    for key in sorted(value, key=lambda k: (str(type(k)), str(k))):
        name = req_id(key, f"{what} key")
        item = value[key]
        if isinstance(item, str):
            if len(item) > MAX_STR_VALUE:
                raise MalformedMessage(f"{what}[{name}] is longer than {MAX_STR_VALUE}")
            out[name] = item
        elif type(item) is int:
            out[name] = req_int(item, f"{what}[{name}]", lo=INT64_MIN)
        elif type(item) is float:
            out[name] = req_float(item, f"{what}[{name}]")
        else:
            raise MalformedMessage(f"{what}[{name}] must be str, int or float")
    return types.MappingProxyType(out)


def read_map(data: bytes, what: str, *, max_size: int = MAX_ENVELOPE_BYTES) -> Mapping[str, Any]:
    """Decode a CBOR payload (at most ``max_size`` bytes) that must be a map with text keys."""
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > max_size:
        raise LimitExceeded(f"{what}: {len(data)} bytes exceeds the limit of {max_size}")
    obj = loads_strict(data, what=what)
    return check_keys(obj, what)


def check_keys(obj: object, what: str, keys: frozenset[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise MalformedMessage(f"{what} must be a map with text keys")
    if keys is not None and keys == obj.keys():
        return obj  # every key is one of ours, so text
    if not all(isinstance(k, str) for k in obj):
        raise MalformedMessage(f"{what} must be a map with text keys")
    if keys is not None:
        missing, extra = sorted(keys - set(obj)), sorted(set(obj) - keys)
        shown = str(extra)[:200]
        raise MalformedMessage(f"{what}: missing keys {missing}, unexpected keys {shown}")
    return obj


def loads_json(data: bytes, what: str) -> Mapping[str, Any]:
    """Strict JSON object: UTF-8, size-limited, no NaN/Infinity, no duplicate keys."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedMessage(f"{what}: expected bytes")
    if len(data) > MAX_JSON_BYTES:
        raise LimitExceeded(f"{what}: more than {MAX_JSON_BYTES} bytes")

    def no_constants(name: str) -> object:
        raise ValueError(f"{name} is not allowed")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("duplicate key")
        return out

    try:
        obj = json.loads(
            bytes(data).decode("utf-8"),
            parse_constant=no_constants,
            object_pairs_hook=no_duplicates,
        )
    except (ValueError, RecursionError, TypeError) as exc:
        raise MalformedMessage(f"{what}: not valid JSON ({type(exc).__name__})") from exc
    return check_keys(obj, what)


def _value_eq(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_value_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return dict(a) == dict(b)
    return bool(a == b)


def fields_eq(a: object, b: object, names: tuple[str, ...]) -> bool:
    """Field-by-field equality that compares arrays by dtype, shape and values."""
    return all(_value_eq(getattr(a, n), getattr(b, n)) for n in names)


def guarded_build(what: str, build: Callable[[], T]) -> T:
    """Run a decoder's build step; stray built-in exceptions become :class:`MalformedMessage`.

    Validators raise :class:`MalformedMessage` themselves; this is the last
    line of the rule "decoders raise nothing but ProtocolError on any input".
    """
    try:
        return build()
    except ProtocolError:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, KeyError, IndexError) as exc:
        raise MalformedMessage(f"{what}: invalid field ({type(exc).__name__})") from exc

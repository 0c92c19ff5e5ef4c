"""Tensor codec: ``{"dtype": str, "shape": [int, ...], "data": bytes}``.

``data`` holds the elements in C (row-major) order, little-endian, with no
padding: exactly ``prod(shape) * itemsize`` bytes. Wire dtypes are
``float16``, ``float32``, ``int32`` and ``int64``. A rank-0 tensor has
``shape == []`` and one element; every dimension is at least 1.

The decoder checks, in this order and before allocating anything: the map's
keys and types, the dtype, the rank, each dimension and the element count
against :class:`TensorLimits` (:class:`LimitExceeded`), the byte length
(:class:`MalformedMessage`), and finally that floating-point values are
finite (NaN or +-Inf is :class:`MalformedMessage` unless the caller passes
``allow_nonfinite=True``). It returns a fresh, writable array in native byte
order with the wire dtype (float16 stays float16; callers cast if they
compute in float32).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from protocol.errors import ConfigError, LimitExceeded, MalformedMessage

__all__ = [
    "DEFAULT_LIMITS",
    "FLOAT_DTYPES",
    "INT_DTYPES",
    "WIRE_DTYPES",
    "TensorLimits",
    "check_array",
    "decode_tensor",
    "encode_tensor",
]

FLOAT_DTYPES: Final = ("float16", "float32")
INT_DTYPES: Final = ("int32", "int64")
WIRE_DTYPES: Final = (*FLOAT_DTYPES, *INT_DTYPES)
_KEYS: Final = frozenset({"dtype", "shape", "data"})
# dtype -> wire name, and wire name -> little-endian dtype (``dtype.name`` is slow in numpy 2).
_NAME_OF: Final = {np.dtype(n): n for n in WIRE_DTYPES}
_LE: Final = {n: np.dtype(n).newbyteorder("<") for n in WIRE_DTYPES}


def _name(dtype: np.dtype[np.generic]) -> str:
    name = _NAME_OF.get(dtype)
    return name if name is not None else dtype.name


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorLimits:
    """Upper bounds a receiver enforces on every tensor it decodes."""

    max_rank: int = 4
    max_elements: int = 1 << 22
    max_dim: int = 1 << 20

    def __post_init__(self) -> None:
        for name in ("max_rank", "max_elements", "max_dim"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ConfigError(f"TensorLimits.{name} must be a positive int, got {value!r}")


DEFAULT_LIMITS: Final = TensorLimits()


def check_array(
    arr: object, *, what: str, dtypes: tuple[str, ...] = WIRE_DTYPES, min_rank: int = 0
) -> npt.NDArray[np.generic]:
    """Validate an array a message is built with: type, dtype, rank, dims, finiteness."""
    if not isinstance(arr, np.ndarray):
        raise MalformedMessage(f"{what} must be a numpy array, got {type(arr).__name__}")
    if _name(arr.dtype) not in dtypes:
        raise MalformedMessage(f"{what} has dtype {arr.dtype.name}; allowed: {', '.join(dtypes)}")
    if arr.ndim < min_rank:
        raise MalformedMessage(f"{what} must have rank >= {min_rank}, got shape {arr.shape}")
    if any(d < 1 for d in arr.shape):
        raise MalformedMessage(f"{what} has an empty dimension: shape {arr.shape}")
    if arr.dtype.kind == "f" and not bool(np.isfinite(arr).all()):
        raise MalformedMessage(f"{what} contains NaN or infinity")
    return arr


def encode_tensor(arr: np.ndarray, *, wire_dtype: str | None = None) -> dict[str, object]:
    """The wire map of ``arr``, optionally cast to ``wire_dtype``.

    Casting is allowed float -> float (e.g. float32 activations sent as
    float16) and int -> int when every value fits. Raises
    :class:`MalformedMessage` for unsupported dtypes, empty dimensions, NaN or
    infinity (including float16 overflow after the cast).
    """
    if not isinstance(arr, np.ndarray):
        raise MalformedMessage(f"tensor must be a numpy array, got {type(arr).__name__}")
    source = _name(arr.dtype)
    target = source if wire_dtype is None else wire_dtype
    if target not in WIRE_DTYPES:
        raise MalformedMessage(f"wire dtype {target!r} not in {WIRE_DTYPES}")
    if source != target:
        src_kind, dst_kind = arr.dtype.kind, np.dtype(target).kind
        if src_kind == "f" and dst_kind == "f":
            with np.errstate(over="ignore"):
                arr = arr.astype(target)
        elif src_kind in "iu" and dst_kind == "i":
            info = np.iinfo(target)
            if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
                raise MalformedMessage(f"integer values do not fit in {target}")
            arr = arr.astype(target)
        else:
            raise MalformedMessage(f"cannot send {source} as {target}")
    check_array(arr, what="tensor")
    data = np.ascontiguousarray(arr, dtype=_LE[target]).tobytes()
    return {"dtype": target, "shape": [int(d) for d in arr.shape], "data": data}


def decode_tensor(
    obj: object, *, limits: TensorLimits = DEFAULT_LIMITS, allow_nonfinite: bool = False
) -> np.ndarray:
    """Decode and check a wire tensor map; raises only :class:`ProtocolError` subclasses."""
    if not isinstance(obj, Mapping):
        raise MalformedMessage(f"tensor must be a map, got {type(obj).__name__}")
    if set(obj.keys()) != _KEYS:
        raise MalformedMessage(f"tensor map keys must be {sorted(_KEYS)}")
    dtype, shape, data = obj["dtype"], obj["shape"], obj["data"]
    if not isinstance(dtype, str) or dtype not in WIRE_DTYPES:
        raise MalformedMessage(f"tensor dtype must be one of {WIRE_DTYPES}")
    if not isinstance(shape, list | tuple):
        raise MalformedMessage("tensor shape must be an array")
    if len(shape) > limits.max_rank:
        raise LimitExceeded(f"tensor rank {len(shape)} > limit {limits.max_rank}")
    dims: list[int] = []
    for d in shape:
        if type(d) is not int or d < 1:
            raise MalformedMessage("tensor dimensions must be integers >= 1")
        if d > limits.max_dim:
            raise LimitExceeded(f"tensor dimension {d} > limit {limits.max_dim}")
        dims.append(d)
    count = math.prod(dims)
    if count > limits.max_elements:
        raise LimitExceeded(f"tensor has {count} elements > limit {limits.max_elements}")
    if not isinstance(data, bytes):
        raise MalformedMessage("tensor data must be a byte string")
    wire = _LE[dtype]
    need = count * wire.itemsize
    if len(data) != need:
        raise MalformedMessage(
            f"tensor data is {len(data)} bytes; shape {dims} of {dtype} needs {need}"
        )
    arr = np.frombuffer(data, dtype=wire).reshape(dims).astype(np.dtype(dtype), copy=True)
    if not allow_nonfinite and arr.dtype.kind == "f" and not bool(np.isfinite(arr).all()):
        raise MalformedMessage("tensor contains NaN or infinity")
    return arr

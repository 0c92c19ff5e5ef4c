"""OPC UA node maps: node ids, expected data types and value conversion.

Pure logic, no I/O (the asyncua adapter is :mod:`agent.sensors.opcua`).
A :class:`NodeSpec` is the OPC UA counterpart of a Modbus
:class:`~agent.sensors.registers.RegisterSpec`: which node holds one value
(``ns=2;s=Line1.Temp``, ``ns=3;i=1007``, ``i=2258``), which variant type
the server must send (``type = "auto"`` accepts any numeric or boolean
type), and ``scale``/``offset`` (value = ``raw * scale + offset``).

A :class:`NodeMap` is the channels of one device plus an optional class
label node and an optional sample-counter node, exactly like a register
map. :func:`sample_from_values` turns the values read (or last notified by
a subscription) into a :class:`~agent.sensors.base.Sample`; a value of the
wrong type, a non-finite value or a missing value is a
:class:`~agent.sensors.errors.FrameError` (counted by the caller, never
turned into data), and a node the server reports with a Bad status code is
a :class:`~agent.sensors.errors.NodeStatusError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from agent.sensors.base import Sample
from agent.sensors.errors import FrameError, SensorConfigError

NodeType = Literal["auto", "boolean", "sbyte", "byte", "int16", "uint16", "int32", "uint32",
                   "int64", "uint64", "float", "double"]
NODE_TYPES: tuple[str, ...] = get_args(NodeType)
NO_LABEL = 65535

# ns=<u16>;(i=<u32>|s=<text>|g=<guid>|b=<base64>), the namespace part optional (then ns=0).
_NODE_ID = re.compile(
    r"^(?:ns=(?P<ns>\d{1,5});)?(?:i=(?P<i>\d{1,10})|s=(?P<s>.+)"
    r"|g=(?P<g>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"|b=(?P<b>[A-Za-z0-9+/=]+))$")


def check_node_id(node_id: str) -> str | None:
    """``None`` if ``node_id`` is a valid OPC UA node id string, else the problem."""
    m = _NODE_ID.match(node_id)
    if m is None:
        return "must look like ns=2;s=Name, ns=2;i=1001 or i=2258 (also g=GUID, b=BASE64)"
    if m.group("ns") is not None and int(m.group("ns")) > 0xFFFF:
        return "namespace index must be <= 65535"
    if m.group("i") is not None and int(m.group("i")) > 0xFFFFFFFF:
        return "numeric identifier must be <= 4294967295"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSpec:
    """Where one value lives on the server and how it becomes an engineering value."""

    name: str
    node_id: str
    type: NodeType = "auto"
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise SensorConfigError("node name must not be empty")
        if (problem := check_node_id(self.node_id)) is not None:
            raise SensorConfigError(f"node_id {self.node_id!r}: {problem}")
        if self.type not in NODE_TYPES:
            raise SensorConfigError(f"type must be one of {list(NODE_TYPES)}")
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise SensorConfigError("scale must be finite and != 0")
        if not math.isfinite(self.offset):
            raise SensorConfigError("offset must be finite")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeMap:
    """Channel nodes, optional label node and optional sample-counter node."""

    channels: tuple[NodeSpec, ...]
    label: NodeSpec | None = None
    label_none: int | None = NO_LABEL
    counter: NodeSpec | None = None

    def __post_init__(self) -> None:
        if not self.channels:
            raise SensorConfigError("a node map needs at least one channel")
        names = [s.name for s in self.all_specs]
        if len(set(names)) != len(names):
            raise SensorConfigError("node names must be unique")
        ids = [s.node_id for s in self.all_specs]
        if len(set(ids)) != len(ids):
            raise SensorConfigError("node ids must be unique")

    @property
    def all_specs(self) -> tuple[NodeSpec, ...]:
        """Channels, then label and counter when present (the read order)."""
        extra = tuple(s for s in (self.label, self.counter) if s is not None)
        return self.channels + extra


_INTEGER = {"sbyte", "byte", "int16", "uint16", "int32", "uint32", "int64", "uint64"}


def convert(spec: NodeSpec, value: object, variant: str) -> float:
    """``raw * scale + offset`` of one value whose variant type name is ``variant``.

    ``variant`` is the server's variant type name (``"Double"``, ``"Int32"``,
    ...). Raises :class:`FrameError` for a type other than the configured
    one, a non-numeric value or a non-finite result.
    """
    vt = variant.lower()
    if spec.type != "auto" and vt != spec.type:
        raise FrameError(f"{spec.name}: server sent {variant}, configured {spec.type}")
    if vt not in _INTEGER and vt not in ("boolean", "float", "double"):
        raise FrameError(f"{spec.name}: {variant} is not a numeric type")
    if isinstance(value, int | float):  # bool is an int
        raw = float(value)
    else:
        raise FrameError(f"{spec.name}: value of type {type(value).__name__} is not numeric")
    out = raw * spec.scale + spec.offset
    if not math.isfinite(out):
        raise FrameError(f"{spec.name}: value is not finite")
    return out


def sample_from_values(nm: NodeMap, values: Mapping[str, tuple[object, str]],
                       t_mono: float) -> Sample:
    """A :class:`Sample` from ``{node_id: (value, variant type name)}``."""
    def get(spec: NodeSpec) -> float:
        try:
            value, variant = values[spec.node_id]
        except KeyError:
            raise FrameError(f"{spec.name}: no value for {spec.node_id}") from None
        return convert(spec, value, variant)

    chans = np.array([get(s) for s in nm.channels], dtype=np.float64)
    label: int | None = None
    if nm.label is not None:
        raw = get(nm.label)
        if raw != int(raw):
            raise FrameError(f"{nm.label.name}: label {raw} is not an integer")
        label = None if raw < 0 or (nm.label_none is not None and int(raw) == nm.label_none) \
            else int(raw)
    seq: int | None = None
    if nm.counter is not None:
        seq = int(get(nm.counter))
    return Sample(values=chans, label=label, t_mono=t_mono, seq=seq)

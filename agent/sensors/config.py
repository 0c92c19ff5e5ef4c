"""The ``[sensors]`` configuration: TOML tables -> frozen config objects.

``parse_sensors_config(table)`` takes the ``sensors`` table (the value of
``tomllib.load(f)["sensors"]``) and returns ``(config, problems)``: every
problem found, each prefixed with its key path
(``sensors.devices[1].registers[0].type: ...``); ``config`` is ``None``
when there is any problem. See ``docs/sensors.md`` for the keys.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from agent.sensors.device import NO_LABEL, CaptureLayout, RegisterMap
from agent.sensors.errors import SensorConfigError
from agent.sensors.health import BackoffPolicy
from agent.sensors.opcua_nodes import NODE_TYPES, NodeMap, NodeSpec, check_node_id
from agent.sensors.registers import FUNCTIONS, ORDERS, REGISTER_TYPES, RegisterSpec
from agent.sensors.serial_line import LineFormat

T = TypeVar("T")
Mode = Literal["live", "capture"]
LabelSource = Literal["none", "register", "serial", "dataset"]
TRANSPORTS = ("tcp", "rtu", "serial_line", "replay", "simulated", "opcua")
SECURITY_POLICIES = ("None", "Basic256Sha256")
SECURITY_MODES = ("Sign", "SignAndEncrypt")
Acquisition = Literal["subscription", "poll"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpTransport:
    """Modbus TCP server address."""

    host: str
    port: int = 502


@dataclass(frozen=True, slots=True, kw_only=True)
class RtuTransport:
    """Serial line of an RS-485 bus; devices with the same ``serial`` share one bus."""

    serial: str
    baudrate: int = 19200
    parity: Literal["N", "E", "O"] = "N"
    stopbits: int = 1
    bytesize: int = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialLineTransport:
    """A microcontroller printing text lines."""

    serial: str
    baudrate: int = 115200
    line: LineFormat


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayTransport:
    """A dataset file replayed record by record."""

    path: str
    indices: tuple[int, ...] | None = None
    loop: bool = False  # each dataset window once: one window, one record (a loop re-reads
    #                        the same windows, which the agent maps back to their record ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedTransport:
    """An in-process simulated Modbus device read over loopback TCP."""

    dataset: str = "synthetic-vibration"
    indices: tuple[int, ...] | None = None
    channels: int = 1
    seed: int = 0
    loop: bool = False  # a dataset's captures once, like ReplayTransport


@dataclass(frozen=True, slots=True, kw_only=True)
class OpcuaTransport:
    """An OPC UA server endpoint, its security settings and how values are acquired."""

    endpoint: str
    nodes: NodeMap
    acquisition: Acquisition = "subscription"
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: str | None = None
    private_key: str | None = None
    server_certificate: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    application_uri: str | None = None

    def __post_init__(self) -> None:
        if not self.endpoint.startswith("opc.tcp://"):
            raise SensorConfigError("endpoint must start with opc.tcp://")
        if self.security_policy != "None" and not (self.certificate and self.private_key):
            raise SensorConfigError(f"security_policy {self.security_policy} needs "
                                    "certificate and private_key")
        if (self.password is None) != (self.username is None):
            raise SensorConfigError("username and password go together")


Transport = (TcpTransport | RtuTransport | SerialLineTransport | ReplayTransport
             | SimulatedTransport | OpcuaTransport)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    """One sensor device."""

    name: str
    transport: Transport
    unit: int = 1
    timeout: float = 1.0
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    mode: Mode = "live"
    sample_rate: float = 100.0
    window_length: int = 256
    window_hop: int = 256
    register_map: RegisterMap | None = None
    capture: CaptureLayout | None = None
    capture_ack: bool = True
    label_source: LabelSource = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorsConfig:
    """All devices of one agent."""

    devices: tuple[DeviceConfig, ...]

    def device(self, name: str) -> DeviceConfig:
        """The device called ``name`` (``KeyError`` if absent)."""
        for d in self.devices:
            if d.name == name:
                return d
        raise KeyError(name)


class _Ctx:
    """Collects problems while reading a table."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, t: Mapping[str, Any], key: str, path: str, kind: type[T] | tuple[type, ...],
            default: Any = ..., check: Callable[[Any], str | None] | None = None) -> Any:
        if key not in t:
            if default is ...:
                self.problems.append(f"{path}.{key}: required")
                return None
            return default
        v = t[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if (isinstance(v, bool) and bool not in kinds) or not isinstance(v, kinds):
            names = "/".join(k.__name__ for k in kinds)
            self.problems.append(f"{path}.{key}: expected {names}, got {type(v).__name__}")
            return None
        if check is not None and (msg := check(v)) is not None:
            self.problems.append(f"{path}.{key}: {msg}")
            return None
        return v


def _one_of(options: tuple[object, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"must be one of {list(options)}"


def _range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        ok = math.isfinite(v) and lo <= v <= hi
        return None if ok else f"must be in [{lo}, {hi}]"
    return check


def _positive(v: Any) -> str | None:
    return None if math.isfinite(v) and v > 0 else "must be > 0"


def _spec(c: _Ctx, t: Any, path: str, default_name: str | None = None) -> RegisterSpec | None:
    if not isinstance(t, Mapping):
        c.problems.append(f"{path}: expected a table")
        return None
    n0 = len(c.problems)
    name = c.get(t, "name", path, str, default_name if default_name else ...)
    kw = {
        "function": c.get(t, "function", path, str, "holding", _one_of(FUNCTIONS)),
        "address": c.get(t, "address", path, int, ..., _range(0, 0xFFFF)),
        "type": c.get(t, "type", path, str, "uint16", _one_of(REGISTER_TYPES)),
        "word_order": c.get(t, "word_order", path, str, "big", _one_of(ORDERS)),
        "byte_order": c.get(t, "byte_order", path, str, "big", _one_of(ORDERS)),
        "scale": c.get(t, "scale", path, float, 1.0,
                       lambda v: None if math.isfinite(v) and v != 0 else "must be finite, != 0"),
        "offset": c.get(t, "offset", path, float, 0.0, _range(-math.inf, math.inf)),
    }
    if len(c.problems) > n0:
        return None
    try:
        return RegisterSpec(name=name, **kw)
    except ValueError as exc:
        c.problems.append(f"{path}: {exc}")
        return None


def _node(c: _Ctx, t: Any, path: str, default_name: str | None = None) -> NodeSpec | None:
    if not isinstance(t, Mapping):
        c.problems.append(f"{path}: expected a table")
        return None
    n0 = len(c.problems)
    name = c.get(t, "name", path, str, default_name if default_name else ...)
    kw = {
        "node_id": c.get(t, "node_id", path, str, ..., check_node_id),
        "type": c.get(t, "type", path, str, "auto", _one_of(NODE_TYPES)),
        "scale": c.get(t, "scale", path, float, 1.0,
                       lambda v: None if math.isfinite(v) and v != 0 else "must be finite, != 0"),
        "offset": c.get(t, "offset", path, float, 0.0, _range(-math.inf, math.inf)),
    }
    if len(c.problems) > n0:
        return None
    try:
        return NodeSpec(name=name, **kw)
    except ValueError as exc:
        c.problems.append(f"{path}: {exc}")
        return None


def _opcua(c: _Ctx, t: Mapping[str, Any], path: str) -> OpcuaTransport | None:
    n0 = len(c.problems)
    endpoint = c.get(t, "endpoint", path, str, ...,
                     lambda v: None if v.startswith("opc.tcp://") else "must start with opc.tcp://")
    nodes = c.get(t, "nodes", path, list, ...)
    specs = [_node(c, n, f"{path}.nodes[{i}]") for i, n in enumerate(nodes or [])]
    if nodes == []:
        c.problems.append(f"{path}.nodes: at least one node")
    label: NodeSpec | None = None
    none_value: int | None = NO_LABEL
    if (lab_t := c.get(t, "label", path, dict, None)) is not None:
        label = _node(c, lab_t, f"{path}.label", "label")
        none_value = c.get(lab_t, "none_value", f"{path}.label", int, NO_LABEL)
    cnt_t = c.get(t, "counter", path, dict, None)
    counter = _node(c, cnt_t, f"{path}.counter", "counter") if cnt_t is not None else None
    kw = {
        "acquisition": c.get(t, "acquisition", path, str, "subscription",
                             _one_of(("subscription", "poll"))),
        "security_policy": c.get(t, "security_policy", path, str, "None",
                                 _one_of(SECURITY_POLICIES)),
        "security_mode": c.get(t, "security_mode", path, str, "SignAndEncrypt",
                               _one_of(SECURITY_MODES)),
        "certificate": c.get(t, "certificate", path, str, None),
        "private_key": c.get(t, "private_key", path, str, None),
        "server_certificate": c.get(t, "server_certificate", path, str, None),
        "username": c.get(t, "username", path, str, None),
        "application_uri": c.get(t, "application_uri", path, str, None),
    }
    password = c.get(t, "password", path, str, None)
    password_env = c.get(t, "password_env", path, str, None)
    if password is not None and password_env is not None:
        c.problems.append(f"{path}: password and password_env are exclusive")
    elif password_env is not None:
        import os

        password = os.environ.get(password_env)
        if password is None:
            c.problems.append(f"{path}.password_env: environment variable {password_env} "
                              "is not set")
    if len(c.problems) > n0:
        return None
    try:
        nm = NodeMap(channels=tuple(s for s in specs if s), label=label, label_none=none_value,
                     counter=counter)
        return OpcuaTransport(endpoint=endpoint, nodes=nm, password=password, **kw)
    except ValueError as exc:
        c.problems.append(f"{path}: {exc}")
        return None


def _indices(c: _Ctx, t: Mapping[str, Any], path: str) -> tuple[int, ...] | None:
    v = c.get(t, "indices", path, list, None)
    if v is None:
        return None
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v):
        c.problems.append(f"{path}.indices: must be a list of integers >= 0")
        return None
    return tuple(v)


def _transport(c: _Ctx, t: Mapping[str, Any], path: str, kind: str) -> Transport | None:
    n0 = len(c.problems)
    result: Transport | None = None
    if kind == "tcp":
        result = TcpTransport(host=c.get(t, "host", path, str),
                              port=c.get(t, "port", path, int, 502, _range(1, 65535)))
    elif kind == "rtu":
        result = RtuTransport(
            serial=c.get(t, "serial", path, str),
            baudrate=c.get(t, "baudrate", path, int, 19200, _range(50, 4_000_000)),
            parity=c.get(t, "parity", path, str, "N", _one_of(("N", "E", "O"))),
            stopbits=c.get(t, "stopbits", path, int, 1, _one_of((1, 2))),
            bytesize=c.get(t, "bytesize", path, int, 8, _one_of((7, 8))))
    elif kind == "serial_line":
        fmt = c.get(t, "format", path, str, "csv", _one_of(("csv", "kv")))
        chans = c.get(t, "channels", path, (list, int), 1)
        label_key = c.get(t, "label_key", path, str, None)
        if isinstance(chans, int):
            chans = [f"ch{i}" for i in range(chans)] if chans >= 1 else None
        if chans is None or not all(isinstance(x, str) and x for x in chans):
            c.problems.append(f"{path}.channels: a count >= 1 or a list of names")
        serial = c.get(t, "serial", path, str)
        baud = c.get(t, "baudrate", path, int, 115200, _range(50, 4_000_000))
        if len(c.problems) == n0:
            try:
                line = LineFormat(format=fmt, channels=tuple(chans), label_key=label_key)
            except ValueError as exc:
                c.problems.append(f"{path}: {exc}")
                return None
            result = SerialLineTransport(serial=serial, baudrate=baud, line=line)
    elif kind == "replay":
        result = ReplayTransport(path=c.get(t, "path", path, str), indices=_indices(c, t, path),
                                 loop=c.get(t, "loop", path, bool, False))
    elif kind == "simulated":
        result = SimulatedTransport(
            dataset=c.get(t, "dataset", path, str, "synthetic-vibration"),
            indices=_indices(c, t, path),
            channels=c.get(t, "channels", path, int, 1, _range(1, 64)),
            seed=c.get(t, "seed", path, int, 0),
            loop=c.get(t, "loop", path, bool, False))
    elif kind == "opcua":
        result = _opcua(c, t, path)
    return result if len(c.problems) == n0 else None


def _device(c: _Ctx, t: Any, path: str) -> DeviceConfig | None:
    if not isinstance(t, Mapping):
        c.problems.append(f"{path}: expected a table")
        return None
    n0 = len(c.problems)
    name = c.get(t, "name", path, str, ..., lambda v: None if v else "must not be empty")
    kind = c.get(t, "transport", path, str, ..., _one_of(TRANSPORTS))
    transport = _transport(c, t, path, kind) if kind else None
    unit = c.get(t, "unit", path, int, 1, _range(0, 247))
    timeout = c.get(t, "timeout", path, float, 1.0, _positive)
    mode = c.get(t, "mode", path, str, "live", _one_of(("live", "capture")))
    rate = c.get(t, "sample_rate", path, float, 100.0, _positive)
    policy = None
    b = c.get(t, "backoff", path, dict, {})
    if b is not None:
        bp = f"{path}.backoff"
        try:
            policy = BackoffPolicy(
                retries=c.get(t, "retries", path, int, 2, _range(0, 100)) or 0,
                base_s=c.get(b, "base", bp, float, 0.2, _positive) or 0.2,
                max_s=c.get(b, "max", bp, float, 30.0, _positive) or 30.0,
                jitter=c.get(b, "jitter", bp, float, 0.2, _range(0.0, 0.99)) or 0.0)
        except ValueError as exc:
            c.problems.append(f"{bp}: {exc}")
    w = c.get(t, "window", path, dict, {}) or {}
    length = c.get(w, "length", f"{path}.window", int, 256, _range(1, 1 << 20))
    hop = c.get(w, "hop", f"{path}.window", int, length or 256, _range(1, 1 << 20))
    modbus = kind in ("tcp", "rtu", "simulated")
    reg_map, capture, ack = None, None, True
    label_source: LabelSource = "none"
    if kind == "serial_line":
        label_source = "serial"
    elif kind == "replay":
        label_source = "dataset"
    elif kind == "opcua" and isinstance(transport, OpcuaTransport) \
            and transport.nodes.label is not None:
        label_source = "register"
    if kind == "opcua" and mode != "live":
        c.problems.append(f"{path}.mode: opcua devices are read live")
    if modbus and mode == "live":
        regs = c.get(t, "registers", path, list, [] if kind == "simulated" else ...)
        specs = [_spec(c, r, f"{path}.registers[{i}]") for i, r in enumerate(regs or [])]
        lab_t = c.get(t, "label", path, dict, None)
        label = None
        none_value: int | None = NO_LABEL
        if lab_t is not None:
            label = _spec(c, lab_t, f"{path}.label", "label")
            none_value = c.get(lab_t, "none_value", f"{path}.label", int, NO_LABEL)
            label_source = "register"
        cnt_t = c.get(t, "counter", path, dict, None)
        counter = _spec(c, cnt_t, f"{path}.counter", "counter") if cnt_t is not None else None
        if regs and len(c.problems) == n0:
            try:
                reg_map = RegisterMap(channels=tuple(s for s in specs if s), label=label,
                                      label_none=none_value, counter=counter)
            except ValueError as exc:
                c.problems.append(f"{path}.registers: {exc}")
    elif modbus and mode == "capture":
        cap = c.get(t, "capture", path, dict, {}) or {}
        cp = f"{path}.capture"
        base = c.get(cap, "base", cp, int, 1000, _range(0, 0xFFFF - CaptureLayout.HEADER))
        wo = c.get(cap, "word_order", cp, str, "big", _one_of(ORDERS))
        bo = c.get(cap, "byte_order", cp, str, "big", _one_of(ORDERS))
        ack = c.get(cap, "ack", cp, bool, True)
        if len(c.problems) == n0:
            capture = CaptureLayout(base=base, word_order=wo, byte_order=bo)
        label_source = "register"
    if len(c.problems) > n0 or transport is None or policy is None:
        return None
    return DeviceConfig(name=name, transport=transport, unit=unit, timeout=timeout,
                        policy=policy, mode=mode, sample_rate=rate, window_length=length,
                        window_hop=hop, register_map=reg_map, capture=capture,
                        capture_ack=ack, label_source=label_source)


def parse_sensors_config(table: Mapping[str, Any]) -> tuple[SensorsConfig | None, list[str]]:
    """Validate the ``sensors`` table; returns the config or every problem found."""
    c = _Ctx()
    devs = c.get(table, "devices", "sensors", list)
    out = [_device(c, d, f"sensors.devices[{i}]") for i, d in enumerate(devs or [])]
    if devs == []:
        c.problems.append("sensors.devices: at least one device")
    names = [d.name for d in out if d is not None]
    for n in sorted({n for n in names if names.count(n) > 1}):
        c.problems.append(f"sensors.devices: duplicate name {n!r}")
    buses: dict[str, RtuTransport] = {}
    for i, d in enumerate(out):
        if d is not None and isinstance(d.transport, RtuTransport):
            first = buses.setdefault(d.transport.serial, d.transport)
            if first != d.transport:
                c.problems.append(f"sensors.devices[{i}]: serial settings differ from another "
                                  f"device on {d.transport.serial}")
    if c.problems:
        return None, c.problems
    return SensorsConfig(devices=tuple(d for d in out if d is not None)), []

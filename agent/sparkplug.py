"""Sparkplug B 3.0 lifecycle of the agent: topics, bdSeq/seq rules and payloads.

Pure logic, no I/O; :class:`agent.mqtt.PahoPublisher` publishes what this
module builds when ``[mqtt] sparkplug = true``. Payloads are Sparkplug B
protobuf messages encoded with the Eclipse Tahu ``sparkplug_b`` helper and
its compiled ``sparkplug_b.proto`` as shipped in the ``sparkplug-b-packets``
PyPI package (we never build protobuf bytes by hand). Its module-global
sequence counters are not used: :class:`SparkplugSession` keeps them.

Mapping: Sparkplug group id = our org, edge node id = our device id, one
Sparkplug *device* per configured sensor device. Topics::

    spBv1.0/{org}/NBIRTH/{device}            node birth (QoS 0, not retained)
    spBv1.0/{org}/NDEATH/{device}            node death = the MQTT will (QoS 1)
    spBv1.0/{org}/DBIRTH/{device}/{sensor}   device birth, after NBIRTH
    spBv1.0/{org}/DDEATH/{device}/{sensor}   device death, on clean close
    spBv1.0/{org}/NCMD/{device}              subscribed; ``Node Control/Rebirth``

Sequence rules (Sparkplug 3.0, chapter 6/7):

* ``bdSeq`` (Int64 metric as in Tahu, 0..255) is the same in the NDEATH will that is
  registered in CONNECT and in the NBIRTH of that connection; it goes up by
  one per connect attempt and wraps 255 -> 0. We derive it from the
  agent's persisted per-connect counter (spool meta ``bd_seq``), so a
  restarted agent never repeats the previous session's value.
* ``seq`` (0..255, wrapping) is 0 in NBIRTH and increments by one with
  every further message of the session (DBIRTH, DDEATH, NDATA ...). NDEATH
  carries no ``seq``.
* A rebirth (NCMD ``Node Control/Rebirth`` = true) re-sends NBIRTH (seq 0,
  same bdSeq, since the MQTT session and its will are unchanged) and every
  DBIRTH.

Node metrics: ``bdSeq``, ``Node Control/Rebirth`` (Boolean false, as the
spec requires), ``Privacy/Epsilon Spent`` (Double), ``Privacy/Epsilon
Budget`` (Double), ``Privacy/Halted`` (Boolean), ``Records/Released``
(UInt64, when the state detail has ``records`` or ``releases``) and
``Spool/Depth`` (UInt64). DBIRTH metrics: ``Channels`` (UInt32).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sparkplub_b_packets.core.sparkplug_b as tahu
from sparkplub_b_packets.core import sparkplug_b_pb2

from protocol.errors import TopicError

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
_T = tahu.MetricDataType


def _check_id(kind: str, value: str) -> str:
    if not value or any(c in value for c in "/+#"):
        raise TopicError(f"Sparkplug {kind} {value!r} must be non-empty without / + #")
    return value


@dataclass(frozen=True, slots=True)
class SparkplugTopics:
    """Topic names of one edge node."""

    group: str
    edge_node: str

    def __post_init__(self) -> None:
        _check_id("group id", self.group)
        _check_id("edge node id", self.edge_node)

    def node(self, kind: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}"

    def device(self, kind: str, device: str) -> str:
        return f"{NAMESPACE}/{self.group}/{kind}/{self.edge_node}/{_check_id('device id', device)}"

    @property
    def nbirth(self) -> str:
        return self.node("NBIRTH")

    @property
    def ndeath(self) -> str:
        return self.node("NDEATH")

    @property
    def ncmd(self) -> str:
        return self.node("NCMD")


def bd_seq_of(connects: int) -> int:
    """Sparkplug bdSeq (0..255) of the ``connects``-th persisted connect attempt."""
    return connects % 256


def _now_ms() -> int:
    return int(time.time() * 1000)


def _payload(seq: int | None, ts: int) -> sparkplug_b_pb2.Payload:
    p = sparkplug_b_pb2.Payload()
    p.timestamp = ts
    if seq is not None:
        p.seq = seq
    return p


def node_metrics(detail: Mapping[str, str | int | float],
                 spool_depth: int) -> list[tuple[str, int, float | int | bool]]:
    """``(name, Sparkplug datatype, value)`` of the node metrics besides bdSeq and Rebirth."""
    out: list[tuple[str, int, float | int | bool]] = []
    if "epsilon" in detail:
        out.append(("Privacy/Epsilon Spent", _T.Double, float(detail["epsilon"])))
    if "epsilon_budget" in detail:
        out.append(("Privacy/Epsilon Budget", _T.Double, float(detail["epsilon_budget"])))
    if "halted" in detail:
        out.append(("Privacy/Halted", _T.Boolean, bool(int(detail["halted"]))))
    for key in ("records", "releases"):
        if key in detail:
            out.append(("Records/Released", _T.UInt64, int(detail[key])))
            break
    out.append(("Spool/Depth", _T.UInt64, int(spool_depth)))
    return out


def encode_ndeath(bd_seq: int, *, ts: int | None = None) -> bytes:
    """NDEATH payload: only the bdSeq metric, no seq."""
    p = _payload(None, ts or _now_ms())
    tahu.addMetric(p, BD_SEQ, None, _T.Int64, bd_seq, timestamp=p.timestamp)
    return bytes(p.SerializeToString())


def is_rebirth(payload: bytes) -> bool:
    """Whether an NCMD payload asks for a rebirth (``Node Control/Rebirth`` = true)."""
    try:
        p = sparkplug_b_pb2.Payload.FromString(payload)
    except Exception:  # protobuf DecodeError and friends: not a command of ours
        return False
    return any(m.name == REBIRTH and m.boolean_value for m in p.metrics)


class SparkplugSession:
    """Message builder of one MQTT connection: holds bdSeq and the running seq."""

    def __init__(self, topics: SparkplugTopics, bd_seq: int, devices: Sequence[str] = (),
                 channels: Mapping[str, int] | None = None) -> None:
        if not 0 <= bd_seq <= 255:
            raise ValueError("bdSeq must be 0..255")
        self.topics = topics
        self.bd_seq = bd_seq
        self.devices = tuple(devices)
        self.channels = dict(channels or {})
        self._seq = 0
        self.births = 0

    def _next_seq(self) -> int:
        s = self._seq
        self._seq = (self._seq + 1) % 256
        return s

    def will(self) -> tuple[str, bytes]:
        """Topic and payload of the NDEATH registered as the MQTT will."""
        return self.topics.ndeath, encode_ndeath(self.bd_seq)

    def births_for(self, detail: Mapping[str, str | int | float],
                   spool_depth: int) -> list[tuple[str, bytes]]:
        """NBIRTH (seq 0) then one DBIRTH per device; resets the seq (also for a rebirth)."""
        self._seq = 0
        self.births += 1
        ts = _now_ms()
        nb = _payload(self._next_seq(), ts)
        tahu.addMetric(nb, BD_SEQ, None, _T.Int64, self.bd_seq, timestamp=ts)
        tahu.addMetric(nb, REBIRTH, None, _T.Boolean, False, timestamp=ts)
        for name, dtype, value in node_metrics(detail, spool_depth):
            tahu.addMetric(nb, name, None, dtype, value, timestamp=ts)
        out = [(self.topics.nbirth, bytes(nb.SerializeToString()))]
        for dev in self.devices:
            db = _payload(self._next_seq(), ts)
            tahu.addMetric(db, "Channels", None, _T.UInt32, self.channels.get(dev, 0),
                           timestamp=ts)
            out.append((self.topics.device("DBIRTH", dev), bytes(db.SerializeToString())))
        return out

    def deaths(self) -> list[tuple[str, bytes]]:
        """DDEATH per device then the NDEATH, for a clean close."""
        ts = _now_ms()
        out = [(self.topics.device("DDEATH", dev),
                bytes(_payload(self._next_seq(), ts).SerializeToString()))
               for dev in self.devices]
        out.append((self.topics.ndeath, encode_ndeath(self.bd_seq, ts=ts)))
        return out

"""Prometheus text exposition (format 0.0.4) for counters and gauges.

Pure: a :class:`MetricsRegistry` holds values and renders text; the HTTP
endpoint lives in :mod:`service.metrics_http`. Thread-safe: one lock guards
every update and the rendering, so the MQTT thread and the HTTP thread can
share a registry.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["ROOT", "MetricsRegistry", "check_metric_name", "render_labels"]

ROOT = "splitfed_"
# units and suffixes of the Prometheus naming guide; counters get ``_total`` when rendered
_BAD_UNITS = ("_milliseconds", "_ms", "_microseconds", "_minutes", "_hours", "_kilobytes",
              "_megabytes", "_percent", "_count_total")

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelKey = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def check_metric_name(full: str, kind: str) -> str | None:
    """``None`` if ``full`` follows the naming guide for a ``kind`` family, else why not.

    One application prefix (``splitfed_``), snake case, base units (seconds, bytes, ratios),
    no ``_total`` in a family name (the counter sample gets it) and none on a gauge.
    """
    if not _NAME.match(full) or ":" in full:
        return "must match [a-zA-Z_][a-zA-Z0-9_]* (no colons: those are for recording rules)"
    if not full.startswith(ROOT) or full == ROOT:
        return f"must start with {ROOT}"
    if full != full.lower() or "__" in full:
        return "must be lower snake case"
    if full.endswith("_total"):
        return "no _total in the family name (counters get it when rendered, gauges never)"
    if any(full.endswith(u) or f"{u}_" in full for u in _BAD_UNITS):
        return "use base units (_seconds, _bytes, _ratio)"
    return None


def render_labels(labels: LabelKey) -> str:
    """``{a="x",b="y"}`` with exposition-format escaping, or ``""`` when empty."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass(slots=True)
class _Family:
    kind: str
    help: str
    values: dict[LabelKey, float] = field(default_factory=dict)


class MetricsRegistry:
    """Named metric families; ``inc`` counters, ``set`` gauges, ``render`` text."""

    def __init__(self, *, prefix: str = ROOT) -> None:
        if prefix and not _NAME.match(prefix):
            raise ValueError(f"bad metric prefix {prefix!r}")
        self._prefix = prefix
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def _full(self, name: str) -> str:
        return name if name.startswith(ROOT) else self._prefix + name

    def _family(self, name: str, kind: str, help_text: str) -> _Family:
        full = self._full(name)
        if (problem := check_metric_name(full, kind)) is not None:
            raise ValueError(f"bad metric name {full!r}: {problem}")
        fam = self._families.get(full)
        if fam is None:
            fam = _Family(kind=kind, help=help_text)
            self._families[full] = fam
        elif fam.kind != kind:
            raise ValueError(f"metric {full} is a {fam.kind}, not a {kind}")
        return fam

    @staticmethod
    def _key(labels: Mapping[str, str] | None) -> LabelKey:
        if not labels:
            return ()
        for k in labels:
            if not _LABEL.match(k) or k.startswith("__"):
                raise ValueError(f"bad label name {k!r}")
        return tuple(sorted((k, str(v)) for k, v in labels.items()))

    def declare(self, name: str, kind: str, help_text: str) -> None:
        """Register a family so it renders (with its HELP/TYPE) before any sample."""
        if kind not in ("counter", "gauge"):
            raise ValueError(f"unsupported metric type {kind!r}")
        with self._lock:
            self._family(name, kind, help_text)

    def inc(
        self,
        name: str,
        labels: Mapping[str, str] | None = None,
        *,
        amount: float = 1.0,
        help_text: str = "",
    ) -> None:
        """Add ``amount`` (>= 0) to a counter."""
        if amount < 0 or math.isnan(amount):
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            fam = self._family(name, "counter", help_text)
            fam.values[key] = fam.values.get(key, 0.0) + amount

    def set(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        *,
        help_text: str = "",
    ) -> None:
        """Set a gauge."""
        key = self._key(labels)
        with self._lock:
            self._family(name, "gauge", help_text).values[key] = float(value)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """Current value (0 if never touched); for tests and status output."""
        key = self._key(labels)
        with self._lock:
            fam = self._families.get(self._full(name))
            return 0.0 if fam is None else fam.values.get(key, 0.0)

    def render(self) -> str:
        """The whole registry in Prometheus text format, families sorted by name."""
        out: list[str] = []
        with self._lock:
            for name in sorted(self._families):
                fam = self._families[name]
                sample = f"{name}_total" if fam.kind == "counter" else name
                if fam.help:
                    out.append(f"# HELP {sample} {_escape(fam.help)}")
                out.append(f"# TYPE {sample} {fam.kind}")
                for key in sorted(fam.values):
                    out.append(f"{sample}{render_labels(key)} {_fmt(fam.values[key])}")
        return "\n".join(out) + "\n"

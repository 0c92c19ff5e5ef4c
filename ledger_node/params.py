"""Strict parsing of the API's query and path parameters and body length (pure).

Theory of operation: every number a client puts in a URL or a
``Content-Length`` passes through one of these functions before any handler
uses it, and each either returns a value inside documented bounds or raises
:class:`~ledger_node.errors.BadRequestError` naming the parameter. The API answers that with a 400
and a JSON ``{"error": ...}``; nothing downstream ever sees NaN, infinity, a
negative count or a 30-digit height.

Why so strict: Python's ``float("nan")`` and ``float("inf")`` parse happily
and poison every comparison (``min(max(nan, 0), 30)`` is ``nan``, a deadline
of ``nan`` is never reached: that is how ``/v1/wait?timeout=nan`` once spun a
handler thread at 100 % CPU). ``int()`` accepts ``" 1"``, ``"+1"``, ``"1_0"``
and non-ASCII digits such as ``"１"``; SQLite refuses integers beyond 2**63-1
with an ``OverflowError`` that used to drop the connection. Integers are
therefore ASCII digits only (at most 18, below SQLite's limit) and decimals a
plain ``[0-9]+(.[0-9]+)?`` with an explicit upper bound.

Unknown or repeated query parameters are refused too: a client that misspells
``timeout`` would otherwise silently get the default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger_node.errors import BadRequestError, BodyTooLargeError

__all__ = [
    "MAX_INT",
    "QuerySpec",
    "body_length",
    "parse_query",
    "path_int",
]

MAX_INT = 10**18 - 1  # 18 digits: below SQLite's 2**63 - 1, far above any height
_INT_RE = re.compile(r"[0-9]{1,18}")
_DEC_RE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


@dataclass(frozen=True, slots=True)
class IntParam:
    default: int
    hi: int = MAX_INT


@dataclass(frozen=True, slots=True)
class DecimalParam:
    default: float
    hi: float


@dataclass(frozen=True, slots=True)
class FlagParam:
    default: bool = False


QuerySpec = Mapping[str, IntParam | DecimalParam | FlagParam]


def parse_int(name: str, raw: str, hi: int = MAX_INT) -> int:
    if not _INT_RE.fullmatch(raw):
        raise BadRequestError(name, f"must be a whole number in [0, {hi}], got {raw[:40]!r}")
    v = int(raw)
    if v > hi:
        raise BadRequestError(name, f"must be at most {hi}, got {v}")
    return v


def parse_decimal(name: str, raw: str, hi: float) -> float:
    if not _DEC_RE.fullmatch(raw):
        raise BadRequestError(name, f"must be a finite decimal in [0, {hi:g}], got {raw[:40]!r}")
    v = float(raw)
    if v > hi:
        raise BadRequestError(name, f"must be at most {hi:g}, got {raw}")
    return v


def parse_flag(name: str, raw: str) -> bool:
    if raw not in ("0", "1"):
        raise BadRequestError(name, f"must be 0 or 1, got {raw[:40]!r}")
    return raw == "1"


def parse_query(pairs: Sequence[tuple[str, str]],
                spec: QuerySpec) -> dict[str, int | float | bool]:
    """Validate every ``(name, value)`` of a query string against ``spec``.

    Returns a value (or the default) for every name in ``spec``; raises
    :class:`~ledger_node.errors.BadRequestError` for an unknown, repeated or malformed parameter.
    """
    seen: dict[str, str] = {}
    for name, raw in pairs:
        if name not in spec:
            allowed = ", ".join(sorted(spec)) or "none"
            raise BadRequestError(name[:40], f"unknown query parameter (allowed: {allowed})")
        if name in seen:
            raise BadRequestError(name, "given more than once")
        seen[name] = raw
    out: dict[str, int | float | bool] = {}
    for name, p in spec.items():
        raw_v = seen.get(name)
        if raw_v is None:
            out[name] = p.default
        elif isinstance(p, IntParam):
            out[name] = parse_int(name, raw_v, p.hi)
        elif isinstance(p, DecimalParam):
            out[name] = parse_decimal(name, raw_v, p.hi)
        else:
            out[name] = parse_flag(name, raw_v)
    return out


def path_int(name: str, raw: str) -> int:
    """A number in a URL path segment (block height)."""
    return parse_int(name, raw)


def body_length(raw: str | None, cap: int) -> int:
    """The validated ``Content-Length`` of a request that must carry a body.

    ``None`` (no header, no chunked body) and ``0`` are refused: the only body
    the API takes is a tx, and an empty one is a client bug.
    """
    if raw is None or raw.strip() == "":
        raise BadRequestError("body", "a POST needs the tx bytes as its body (Content-Length)")
    if not _INT_RE.fullmatch(raw):
        if raw.isdigit() and raw.isascii():
            raise BodyTooLargeError("body", f"larger than the {cap}-byte cap")
        raise BadRequestError("Content-Length", f"must be a byte count, got {raw[:40]!r}")
    n = int(raw)
    if n == 0:
        raise BadRequestError("body", "a POST needs the tx bytes as its body (empty)")
    if n > cap:
        raise BodyTooLargeError("body", f"{n} bytes is larger than the {cap}-byte cap")
    return n

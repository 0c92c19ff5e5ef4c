"""Events for integrators on ``splitfed/v1/{org}/events`` (JSON, unsigned).

JSON object, compact, sorted keys, every key present (``null`` where absent)::

    {"org": id, "session": id, "kind": "round_started" | "round_finished" |
     "model_proposed" | "model_finalised" | "training_halted",
     "round": uint | null, "accuracy": float in [0, 1] | null,
     "epsilon": float >= 0 | null, "block_height": uint | null,
     "model_version": uint | null, "detail": {id: str | int | float}}

``epsilon`` is the largest privacy spend of any device of the org in the
session so far; ``block_height`` is the ledger height at which the event was
recorded. Events are a convenience feed for SCADA and dashboards; they are not
signed, so the ledger (``splitfed-ledger``) is the evidence, not this topic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, Self

from protocol._fields import (
    Scalar,
    check_keys,
    fields_eq,
    guarded_build,
    loads_json,
    req_float,
    req_id,
    req_int,
    req_literal,
    req_scalar_map,
    set_field,
)

__all__ = ["EVENT_KINDS", "Event"]

EVENT_KINDS = (
    "round_started",
    "round_finished",
    "model_proposed",
    "model_finalised",
    "training_halted",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One line of the events feed."""

    org: str
    session: str
    kind: Literal[
        "round_started", "round_finished", "model_proposed", "model_finalised", "training_halted"
    ]
    round: int | None = None
    accuracy: float | None = None
    epsilon: float | None = None
    block_height: int | None = None
    model_version: int | None = None
    detail: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        req_id(self.org, "org")
        req_id(self.session, "session")
        req_literal(self.kind, "kind", EVENT_KINDS)
        for name in ("round", "block_height", "model_version"):
            if getattr(self, name) is not None:
                req_int(getattr(self, name), name)
        if self.accuracy is not None:
            set_field(self, "accuracy", req_float(self.accuracy, "accuracy", lo=0.0, hi=1.0))
        if self.epsilon is not None:
            set_field(self, "epsilon", req_float(self.epsilon, "epsilon", lo=0.0))
        set_field(self, "detail", req_scalar_map(self.detail, "detail"))

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return fields_eq(self, other, tuple(f.name for f in fields(self)))

    def to_json(self) -> bytes:
        m = {f.name: getattr(self, f.name) for f in fields(self)}
        m["detail"] = dict(self.detail)
        return json.dumps(m, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        m = loads_json(data, "event JSON")
        names = frozenset(f.name for f in fields(cls))
        return guarded_build("event JSON", lambda: cls(**check_keys(m, "event JSON", names)))

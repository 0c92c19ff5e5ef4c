"""Effects the sans-I/O protocol cores return for their adapters to carry out.

The gateway's and the server's cores (``gateway.core``, ``server.core``) never
touch a socket: each input (a received message, a tick) returns a list of
actions, and the role's app executes them in order. :class:`Publish` is the
one effect both share: send ``payload`` on ``topic``. A publish that forwards a
journaled device message carries its :class:`ForwardRef`, which the app
reports back to the core once the broker acknowledged it (the gateway marks
the journal entry as forwarded then).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ForwardRef", "Publish"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardRef:
    """Which journaled message a forward carries (reported back when acknowledged)."""

    session: str
    round_no: int
    device: str
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """Publish ``payload`` on ``topic``."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    forward_of: ForwardRef | None = None

"""Batches released and waiting for their gradient.

The agent keeps the input of every released batch until the server's
gradient for it arrives (then it runs ``backward``), up to ``max_pending``
batches. A gradient that never comes expires after ``timeout_s`` and the
batch is dropped: its privacy cost was already paid and stays counted. A
duplicate or unknown gradient (QoS 1 redelivery, a gradient for an expired
batch) is ignored, never applied twice.

Pure: the caller passes the monotonic time in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol.errors import SplitfedError

__all__ = ["Pending", "PendingBatches"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    seq: int
    round: int
    step: int
    ids: tuple[int, ...]
    x: npt.NDArray[np.float32] = field(repr=False)
    sent_at: float


class PendingBatches:
    """Released batches by sequence number, bounded, with expiry."""

    def __init__(self, *, max_pending: int, timeout_s: float) -> None:
        if max_pending < 1 or timeout_s <= 0:
            raise SplitfedError("max_pending must be >= 1 and timeout_s > 0")
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self._items: OrderedDict[int, Pending] = OrderedDict()
        self.expired = 0
        self.unknown = 0

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.max_pending

    def add(self, item: Pending) -> None:
        if self.full():
            raise SplitfedError("too many batches waiting for gradients")
        self._items[item.seq] = item

    def take(self, seq: int) -> Pending | None:
        """The batch a gradient answers, removed; None for unknown/expired/duplicate."""
        item = self._items.pop(seq, None)
        if item is None:
            self.unknown += 1
        return item

    def expire(self, now: float) -> list[Pending]:
        """Drop and return the batches whose gradient is overdue."""
        out = []
        while self._items:
            seq, first = next(iter(self._items.items()))
            if now - first.sent_at < self.timeout_s:
                break
            out.append(self._items.pop(seq))
        self.expired += len(out)
        return out

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        return n

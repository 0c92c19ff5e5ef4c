"""The device's local training set: a bounded store of sensor windows ("records").

Theory of operation
-------------------
Every window the sensor produces becomes a *record* with an id that is never
reused on this device (ids come from a counter the caller persists, so a
restart continues after the last id). The same window content always maps to
the same id (:func:`record_digest`, persisted by the caller): a source that
serves a window again, by looping or after a restart, adds no new record.
The record is the unit of privacy: the accountant charges each release to
the ids of the records it contains, so a record sent in three epochs is
charged three times.

Batches are drawn epoch by epoch: a fresh random permutation of the records
held when the epoch starts, consumed in order, so every record is used once
per epoch before any is used again. Records that arrive during an epoch join
the next one. When the store is full the oldest record is evicted (it may
still be referenced by an in-flight batch; that batch keeps its own copy).

This is *not* Poisson sampling, so no privacy amplification by subsampling is
claimed for it (see docs/privacy.md).

Pure logic: no I/O, no clock; randomness is injected.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from protocol.errors import SplitfedError

__all__ = ["Batch", "RecordStore", "record_digest"]


def record_digest(x: npt.NDArray[np.generic], label: int | None) -> str:
    """SHA-256 over a window's dtype, shape, bytes and label: its identity as a record."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    h = hashlib.sha256()
    h.update(f"{arr.shape}|{'' if label is None else int(label)}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A batch drawn from the store: record ids, inputs (B, C, L) and labels (or None)."""

    ids: tuple[int, ...]
    x: npt.NDArray[np.float32] = field(repr=False)
    labels: npt.NDArray[np.int64] | None = field(repr=False)

    def __post_init__(self) -> None:
        if not self.ids or len(self.ids) != self.x.shape[0]:
            raise SplitfedError("batch ids and inputs disagree in length")
        if self.labels is not None and self.labels.shape != (len(self.ids),):
            raise SplitfedError("batch labels must have one entry per record")


class RecordStore:
    """Bounded FIFO of labelled windows with epoch-ordered batch sampling."""

    def __init__(self, *, capacity: int, rng: np.random.Generator) -> None:
        if capacity < 1:
            raise SplitfedError("record capacity must be >= 1")
        self._capacity = capacity
        self._rng = rng
        self._records: OrderedDict[int, tuple[npt.NDArray[np.float32], int | None]] = OrderedDict()
        self._epoch_order: list[int] = []
        self.epoch = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._records

    def add(self, record_id: int, x: npt.NDArray[np.float32], label: int | None) -> None:
        """Store a window under a fresh, never-reused id."""
        if record_id in self._records:
            raise SplitfedError(f"record id {record_id} reused")
        self._records[record_id] = (np.ascontiguousarray(x, dtype=np.float32), label)
        while len(self._records) > self._capacity:
            self._records.popitem(last=False)
            self.evicted += 1

    def labelled_count(self) -> int:
        return sum(1 for _, label in self._records.values() if label is not None)

    def next_batch(self, size: int) -> Batch | None:
        """Up to ``size`` labelled records in epoch order; None if none is held.

        A batch never spans two epochs, so the last batch of an epoch may be short.
        """
        if size < 1:
            raise SplitfedError("batch size must be >= 1")
        while self._epoch_order and self._epoch_order[-1] not in self._records:
            self._epoch_order.pop()
        if not self._epoch_order:
            candidates = [rid for rid, (_, label) in self._records.items() if label is not None]
            self._epoch_order = [int(v) for v in self._rng.permutation(candidates)]
            if candidates:
                self.epoch += 1
        # a batch never spans two epochs: the last batch of an epoch may be short
        chosen: list[int] = []
        while self._epoch_order and len(chosen) < size:
            rid = self._epoch_order.pop()
            if rid in self._records:
                chosen.append(rid)
        if not chosen:
            return None
        xs = np.stack([self._records[rid][0] for rid in chosen])
        labels = np.array([self._records[rid][1] for rid in chosen], dtype=np.int64)
        return Batch(ids=tuple(chosen), x=xs, labels=labels)

    def take_unlabelled(self, size: int) -> Batch | None:
        """Up to ``size`` records without label, removed from the store (inference)."""
        ids = [rid for rid, (_, label) in self._records.items() if label is None][:size]
        if not ids:
            return None
        xs = np.stack([self._records.pop(rid)[0] for rid in ids])
        return Batch(ids=tuple(ids), x=xs, labels=None)

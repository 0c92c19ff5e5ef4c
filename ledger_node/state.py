"""World state: a key -> CBOR-value map with a Merkle state root.

The state root is the RFC 6962 Merkle root over the entries sorted by key,
each leaf being canonical CBOR ``[key, value]``. Leaf hashes are cached per
key, so a block only rehashes the entries it changed (plus one pass of
interior nodes). :class:`Overlay` gives a contract a scratch view: writes go to
the overlay and are merged only if the whole transaction succeeds, which is
how an invalid transaction leaves the state unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from ledger_node.codec import dumps
from protocol.merkle import leaf_hash, root_from_hashes

__all__ = ["Overlay", "State", "entry_bytes"]


def entry_bytes(key: str, value: Any) -> bytes:
    return dumps([key, value])


class State:
    """The committed state of one node (in memory; storage persists it)."""

    __slots__ = ("_data", "_leaves", "_root")

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {}
        self._leaves: dict[str, bytes] = {}
        self._root: bytes | None = None
        if items:
            self.apply(items)

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(sorted(self._data.items()))

    def keys_with_prefix(self, prefix: str) -> list[str]:
        data = self._data
        return sorted(k for k in data if k.startswith(prefix))

    def apply(self, changes: Mapping[str, Any]) -> None:
        """Copy-on-write: readers in other threads keep iterating a consistent snapshot."""
        if not changes:
            return
        data, leaves = dict(self._data), dict(self._leaves)
        for k, v in changes.items():
            data[k] = v
            leaves[k] = leaf_hash(entry_bytes(k, v))
        self._data, self._leaves, self._root = data, leaves, None

    def root_with(self, changes: Mapping[str, Any]) -> bytes:
        """The root the state would have after ``changes``, without applying them."""
        if not changes:
            return self.root()
        leaves = dict(self._leaves)
        for k, v in changes.items():
            leaves[k] = leaf_hash(entry_bytes(k, v))
        return root_from_hashes([leaves[k] for k in sorted(leaves)])

    def root(self) -> bytes:
        root = self._root
        if root is None:
            leaves = self._leaves
            root = self._root = root_from_hashes([leaves[k] for k in sorted(leaves)])
        return root


class Overlay:
    """Copy-on-read scratch view over a :class:`State` for one transaction/block."""

    __slots__ = ("_base", "writes")

    def __init__(self, base: State | Overlay) -> None:
        self._base = base
        self.writes: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key in self.writes:
            return copy.deepcopy(self.writes[key])
        return copy.deepcopy(self._base.get(key))

    def __contains__(self, key: str) -> bool:
        return key in self.writes or key in self._base

    def put(self, key: str, value: Any) -> None:
        self.writes[key] = value

    def merge_into_parent(self) -> None:
        if isinstance(self._base, Overlay):
            self._base.writes.update(self.writes)
        else:
            self._base.apply(self.writes)

"""World state: a key -> CBOR-value map with a Merkle state root.

State root: every key falls in one of 4096 buckets (the first 12 bits of
SHA-256(key)). A bucket's root is the RFC 6962 Merkle root over its entries
sorted by key, each leaf being canonical CBOR ``[key, value]``; the state
root is the RFC 6962 root over the 4096 bucket roots in bucket order (an
empty bucket contributes ``SHA-256("")``). A block therefore rehashes only
the buckets it touched plus the 4095 top nodes, not the whole state.

:class:`State` is copy-on-write: ``apply`` builds new maps and swaps them in,
so API threads reading the state never see a half-applied block.
:class:`Overlay` gives a contract a scratch view: writes go to the overlay
and are merged only if the whole transaction succeeds, which is how an
invalid transaction leaves the state unchanged.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from protocol.ledger.codec import dumps
from protocol.merkle import EMPTY_ROOT, leaf_hash, root_from_hashes

__all__ = ["BUCKETS", "Overlay", "State", "bucket_of", "entry_bytes"]

BUCKETS = 4096


def entry_bytes(key: str, value: Any) -> bytes:
    return dumps([key, value])


def bucket_of(key: str) -> int:
    d = hashlib.sha256(key.encode()).digest()
    return (d[0] << 4) | (d[1] >> 4)


class State:
    """The committed state of one node (in memory; storage persists it)."""

    __slots__ = ("_bucket_keys", "_bucket_roots", "_data", "_leaves", "_root")

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {}
        self._leaves: dict[str, bytes] = {}
        self._bucket_keys: dict[int, tuple[str, ...]] = {}
        self._bucket_roots: list[bytes] = [EMPTY_ROOT] * BUCKETS
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

    def _derive(self, changes: Mapping[str, Any]) -> tuple[
            dict[str, bytes], dict[int, tuple[str, ...]], list[bytes]]:
        leaves = dict(self._leaves)
        bucket_keys = dict(self._bucket_keys)
        touched: dict[int, set[str]] = {}
        for k, v in changes.items():
            if k not in leaves:
                b = bucket_of(k)
                touched.setdefault(b, set(bucket_keys.get(b, ()))).add(k)
            else:
                touched.setdefault(bucket_of(k), set(bucket_keys.get(bucket_of(k), ())))
            leaves[k] = leaf_hash(entry_bytes(k, v))
        roots = list(self._bucket_roots)
        for b, keys in touched.items():
            ordered = tuple(sorted(keys))
            bucket_keys[b] = ordered
            roots[b] = root_from_hashes([leaves[k] for k in ordered])
        return leaves, bucket_keys, roots

    def apply(self, changes: Mapping[str, Any]) -> None:
        if not changes:
            return
        leaves, bucket_keys, roots = self._derive(changes)
        data = dict(self._data)
        data.update(changes)
        self._data, self._leaves, self._bucket_keys = data, leaves, bucket_keys
        self._bucket_roots, self._root = roots, None

    def root_with(self, changes: Mapping[str, Any]) -> bytes:
        """The root the state would have after ``changes``, without applying them."""
        if not changes:
            return self.root()
        return root_from_hashes(self._derive(changes)[2])

    def root(self) -> bytes:
        root = self._root
        if root is None:
            root = self._root = root_from_hashes(self._bucket_roots)
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

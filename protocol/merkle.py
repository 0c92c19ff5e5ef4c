"""RFC 6962 / RFC 9162 Merkle trees (SHA-256), pure functions, no I/O.

Hashing (RFC 6962 section 2.1): a leaf is ``SHA-256(0x00 || data)``, an
interior node ``SHA-256(0x01 || left || right)``, the empty tree
``SHA-256("")``. A tree of ``n > 1`` leaves splits at ``k``, the largest power
of two smaller than ``n``. The distinct prefixes mean a leaf can never be
passed off as an interior node (second-preimage resistance).

Inclusion proofs (audit paths) are verified with the algorithm of RFC 9162
section 2.1.3.2, which also checks that the path length fits ``tree_size``.

:class:`MerkleAccumulator` grows a tree one leaf at a time (a gateway adds one
accepted envelope per leaf during a round); its root is identical to
:func:`merkle_root` over the same leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from protocol.errors import ProtocolError

__all__ = [
    "EMPTY_ROOT",
    "InclusionProofError",
    "MerkleAccumulator",
    "audit_path",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_from_hashes",
    "verify_inclusion",
]

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class InclusionProofError(ProtocolError):
    """An inclusion proof does not link the leaf to the root."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_hashes(hashes: Sequence[bytes]) -> bytes:
    """Merkle tree hash over already-hashed leaves."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_hashes(hashes[:k]), root_from_hashes(hashes[k:]))


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash (MTH) over raw leaf data."""
    return root_from_hashes([leaf_hash(d) for d in leaves])


def _path(hashes: Sequence[bytes], index: int) -> list[bytes]:
    n = len(hashes)
    if n <= 1:
        return []
    k = _split(n)
    if index < k:
        return [*_path(hashes[:k], index), root_from_hashes(hashes[k:])]
    return [*_path(hashes[k:], index - k), root_from_hashes(hashes[:k])]


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Inclusion proof for ``leaves[index]`` (raw data), leaf-to-root order."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} outside tree of size {len(leaves)}")
    return _path([leaf_hash(d) for d in leaves], index)


def verify_inclusion(
    *, leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> None:
    """Check that raw ``leaf`` sits at ``index`` of the tree with ``root``.

    Raises :class:`InclusionProofError` on any mismatch; returns nothing.
    """
    if not 0 <= index < tree_size:
        raise InclusionProofError(f"leaf index {index} outside tree of size {tree_size}")
    fn, sn = index, tree_size - 1
    r = leaf_hash(leaf)
    for p in path:
        if len(p) != HASH_LEN:
            raise InclusionProofError("audit path element is not a SHA-256 digest")
        if sn == 0:
            raise InclusionProofError("audit path is longer than the tree allows")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError("audit path is shorter than the tree requires")
    if r != root:
        raise InclusionProofError("audit path does not lead to the root")


class MerkleAccumulator:
    """An append-only Merkle tree that keeps leaf hashes (32 bytes per leaf).

    ``root()`` is O(log n) from a stack of perfect subtrees; ``path(i)`` is
    O(n) over the stored leaf hashes.
    """

    __slots__ = ("_hashes", "_stack")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._stack: list[tuple[int, bytes]] = []  # (subtree height, hash)

    @property
    def size(self) -> int:
        return len(self._hashes)

    def append(self, data: bytes) -> int:
        """Add a raw leaf; returns its index."""
        h = leaf_hash(data)
        index = len(self._hashes)
        self._hashes.append(h)
        height = 0
        while self._stack and self._stack[-1][0] == height:
            _, left = self._stack.pop()
            h = node_hash(left, h)
            height += 1
        self._stack.append((height, h))
        return index

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1][1]
        for _, h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r

    def path(self, index: int) -> list[bytes]:
        if not 0 <= index < len(self._hashes):
            raise IndexError(f"leaf index {index} outside tree of size {len(self._hashes)}")
        return _path(self._hashes, index)

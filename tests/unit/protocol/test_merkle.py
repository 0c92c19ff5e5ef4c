"""RFC 6962 Merkle tree: known vectors and inclusion-proof properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.merkle import (
    EMPTY_ROOT,
    InclusionProofError,
    MerkleAccumulator,
    audit_path,
    merkle_root,
    verify_inclusion,
)

# Test vectors of the certificate-transparency reference implementation (RFC 6962 trees).
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]


def test_known_roots() -> None:
    assert merkle_root([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle_root(CT_LEAVES[:1]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert merkle_root(CT_LEAVES).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


leaves_st = st.lists(st.binary(max_size=16), min_size=1, max_size=40)


@given(leaves=leaves_st)
def test_every_leaf_proves_and_accumulator_agrees(leaves: list[bytes]) -> None:
    root = merkle_root(leaves)
    acc = MerkleAccumulator()
    for i, leaf in enumerate(leaves):
        assert acc.append(leaf) == i
    assert acc.size == len(leaves)
    assert acc.root() == root
    for i, leaf in enumerate(leaves):
        path = audit_path(leaves, i)
        assert acc.path(i) == path
        verify_inclusion(leaf=leaf, index=i, tree_size=len(leaves), path=path, root=root)


@given(leaves=leaves_st, data=st.data())
def test_any_change_breaks_the_proof(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1))
    root = merkle_root(leaves)
    path = audit_path(leaves, i)
    other = data.draw(st.binary(max_size=16).filter(lambda b: b != leaves[i]))
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf=other, index=i, tree_size=n, path=path, root=root)
    bad_root = bytes([root[0] ^ 1]) + root[1:]
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf=leaves[i], index=i, tree_size=n, path=path, root=bad_root)
    if path:
        k = data.draw(st.integers(0, len(path) - 1))
        bit = data.draw(st.integers(0, 255))
        changed = bytearray(path[k])
        changed[bit // 8] ^= 1 << (bit % 8)
        bad_path = [*path[:k], bytes(changed), *path[k + 1:]]
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf=leaves[i], index=i, tree_size=n, path=bad_path, root=root)
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf=leaves[i], index=i, tree_size=n, path=path[:-1], root=root)
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf=leaves[i], index=i, tree_size=n, path=[*path, root], root=root)
    if n > 1:
        j = (i + 1) % n
        if leaves[j] != leaves[i]:
            with pytest.raises(InclusionProofError):
                verify_inclusion(leaf=leaves[i], index=j, tree_size=n, path=path, root=root)


def test_index_outside_tree() -> None:
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf=b"a", index=1, tree_size=1, path=[], root=merkle_root([b"a"]))
    with pytest.raises(IndexError):
        audit_path([b"a"], 1)

"""The etcd cut rule and signature exchange, on an in-memory stand-in for etcd.

The stand-in keeps etcd's semantics that matter here: one global revision
counter, create-if-absent, ranges by creation revision or by key.
"""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest

from ledger_node.etcd_orderer import EtcdOrderer
from ledger_node.node import LedgerNode

from .conftest import ORGS, Consortium, make_consortium


class MemoryKv:
    def __init__(self) -> None:
        self.rev = 1
        self.kv: dict[bytes, tuple[bytes, int]] = {}

    def put_if_absent(self, key: bytes, value: bytes) -> bool:
        if key in self.kv:
            return False
        self.rev += 1
        self.kv[key] = (value, self.rev)
        return True

    def range_prefix(self, prefix: bytes, *, start: bytes | None = None,
                     min_create_revision: int = 0, limit: int = 1000,
                     by_create: bool = True) -> tuple[list[tuple[bytes, bytes, int]], int]:
        items = [(k, v, r) for k, (v, r) in self.kv.items()
                 if k.startswith(prefix) and k >= (start or prefix) and r >= min_create_revision]
        items.sort(key=(lambda x: x[2]) if by_create else (lambda x: x[0]))
        return items[:limit], self.rev


@pytest.fixture
def three(tmp_path: Path) -> tuple[Consortium, MemoryKv, list[EtcdOrderer]]:
    c = make_consortium("etcd")
    kv = MemoryKv()
    orderers = []
    for org in ORGS:
        LedgerNode.init(tmp_path / org, c.genesis)
        node = LedgerNode(tmp_path / org, validator_keys={org: c.keys[f"{org}/validator"]})
        orderers.append(EtcdOrderer(node, kv, node_id=org,
                                    evidence_keys={org: c.keys[f"{org}/validator"]}))
    yield c, kv, orderers
    for o in orderers:
        o.node.close()


def test_same_blocks_on_every_node_and_certificates(
        three: tuple[Consortium, MemoryKv, list[EtcdOrderer]]) -> None:
    c, _, (a, b, d) = three
    n = c.genesis.block_max_txs  # 50
    txids = [[a, b, d][i % 3].submit(c.register(ORGS[i % 3], f"x{i}")) for i in range(n + 7)]
    for o in (a, b, d):
        o.step()
    # the 50th tx cut block 1 on every node; 7 txs are pending, no marker yet
    assert {o.node.height for o in (a, b, d)} == {1}
    b.max_ms = 0  # b's oldest pending tx has "waited long enough": it writes a cut marker
    b.step()
    for o in (a, d, b, a, d, b):
        o.step()
    assert {o.node.height for o in (a, b, d)} == {2}
    assert len({o.node.head_hash for o in (a, b, d)}) == 1
    assert {o.node.certified_height for o in (a, b, d)} == {2}
    assert all(a.node.receipt(t) is not None for t in txids)
    # a node that restarts from its database resumes from the stored log revision
    restarted = EtcdOrderer(LedgerNode(a.node.data_dir), a.etcd, node_id="org1")
    try:
        restarted.step()
        assert restarted.node.head_hash == d.node.head_hash
    finally:
        restarted.node.close()


def test_marker_with_nothing_pending_is_ignored(
        three: tuple[Consortium, MemoryKv, list[EtcdOrderer]]) -> None:
    c, kv, (a, b, d) = three
    kv.put_if_absent(b"/splitfed/test-chain/log/cut/org9/0", b"\xa1at\x00")
    a.submit(c.register("org1", "y"))
    kv.put_if_absent(b"/splitfed/test-chain/log/cut/org9/1", b"\xa1at\x19\x03\xe8")
    for o in (a, b, d, a):
        o.step()
    assert {o.node.height for o in (a, b, d)} == {1}
    assert a.node.latest_header().tx_count == 1
    # block time comes from the log entries (the tx's "t"), not the reader's clock
    [(value, _)] = [v for k, v in kv.kv.items() if b"/log/tx/" in k]
    assert a.node.latest_header().time_ms == cbor2.loads(value)["t"]

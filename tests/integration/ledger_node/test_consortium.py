"""Consortium on loopback: 3 etcd members + 3 ledger node processes, with faults.

Under a steady stream of txs: the etcd leader is killed, one ledger node is
killed (-9) and restarted, another is paused (SIGSTOP) and resumed, and one
validator signs a second, conflicting header. At the end every node holds
identical block hashes, no height has two certified headers, the evidence is
on chain, every acknowledged tx is committed, and each node's database passes
``verify``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import cbor2
import nacl.signing
import pytest

from deploy.etcd import EtcdCluster
from ledger_node.errors import LedgerError
from ledger_node.etcd_client import EtcdClient
from ledger_node.node import LedgerNode
from ledger_node.verify import verify_chain
from protocol.keys import load_signing_key
from protocol.ledger.block import (
    Header,
    decode_header,
    quorum,
    sign_header,
    verify_header_signature,
)
from protocol.ledger.codec import dumps, sha256
from protocol.ledger.genesis import load_genesis, write_genesis_with_keys
from protocol.ledger.registration import make_registration_request
from protocol.ledger.tx import make_tx

from ._proc import NodeProcess, write_config

pytestmark = pytest.mark.integration

ORGS = ("org1", "org2", "org3")
CHAIN = "consortium-test"


class Submitter:
    """A background stream of device registrations to whichever nodes are up."""

    def __init__(self, admins: dict[str, nacl.signing.SigningKey]) -> None:
        self.admins = admins
        self.targets: list[NodeProcess] = []
        self.accepted: list[str] = []
        self.errors = 0
        self._stop = threading.Event()
        self._n = 0
        self._thread = threading.Thread(target=self._run, name="tx-stream")

    def _run(self) -> None:
        while not self._stop.is_set():
            targets = list(self.targets)
            if not targets:
                self._stop.wait(0.05)
                continue
            self._n += 1
            org = ORGS[self._n % 3]
            dev = nacl.signing.SigningKey.generate()
            req = make_registration_request(signing_key=dev, org=org, device=f"d{self._n}")
            tx = make_tx("device_register", {"request": req}, signing_key=self.admins[org],
                         submitter=f"{org}/admin", chain_id=CHAIN, nonce=self._n)
            node = targets[self._n % len(targets)]
            try:
                client = node.client()
                client.timeout = 3.0
                self.accepted.append(client.submit(tx))
            except LedgerError:
                self.errors += 1
            self._stop.wait(0.01)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(cond) and cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _converged(nodes: list[NodeProcess]) -> bool:
    try:
        tops = [(c.height(), c.certified_height()) for c in (n.client() for n in nodes)]
    except LedgerError:
        return False
    heights = {h for h, _ in tops}
    return len(heights) == 1 and all(h == c for h, c in tops)


def test_three_org_consortium_survives_faults(tmp_path: Path) -> None:
    _run_consortium(tmp_path, cycles=1)


@pytest.mark.slow
def test_consortium_soak_repeated_faults(tmp_path: Path) -> None:
    _run_consortium(tmp_path, cycles=8)


def _run_consortium(tmp_path: Path, *, cycles: int) -> None:
    write_genesis_with_keys(tmp_path / "g", chain_id=CHAIN, org_ids=ORGS, ordering="etcd",
                            block_max_txs=20, block_max_ms=100)
    keys = tmp_path / "g" / "keys"
    genesis = load_genesis(tmp_path / "g" / "genesis.json")
    admins = {o: load_signing_key(keys / f"{o}-admin.key") for o in ORGS}
    cluster = EtcdCluster(tmp_path / "etcd", n=3)
    nodes: list[NodeProcess] = []
    stream = Submitter(admins)
    try:
        cluster.start()
        for i, org in enumerate(ORGS):
            data = tmp_path / org
            LedgerNode.init(data, genesis)
            eps = cluster.client_urls[i:] + cluster.client_urls[:i]
            cfg = write_config(tmp_path / f"{org}.toml", data_dir=data, node_id=org,
                               keys={org: keys / f"{org}-validator.key"}, etcd=eps)
            nodes.append(NodeProcess(cfg, data, tmp_path / f"{org}.log"))
            nodes[-1].start()
        try:
            stream.targets = list(nodes)
            stream.start()
            _wait_until(lambda: nodes[0].client().certified_height() >= 3, 30, "first blocks")
            for cycle in range(cycles):
                _fault_cycle(cluster, nodes, stream, cycle)
            target = _equivocate(cluster, nodes, keys)
        finally:
            stream.stop()
        top = _check_agreement(cluster, nodes, stream, target)
    finally:
        for n in nodes:
            n.stop()
        cluster.stop()
    reports = [verify_chain(tmp_path / org) for org in ORGS]
    assert len({(r.height, r.head_hash) for r in reports}) == 1
    for rep in reports:
        assert rep.height >= top and rep.certified_height == rep.height
        assert ("org3", target) in rep.equivocations


def _progress(nodes: list[NodeProcess], watch: int, what: str) -> None:
    h = nodes[watch].client().height()
    _wait_until(lambda: nodes[watch].client().certified_height() >= h + 3, 30, what)


def _fault_cycle(cluster: EtcdCluster, nodes: list[NodeProcess], stream: Submitter,
                 cycle: int) -> None:
    victim, paused = (2 + cycle) % 3, (1 + cycle) % 3
    others = [n for i, n in enumerate(nodes) if i != victim]
    # 1. kill the etcd leader while txs flow
    leader = cluster.leader()
    cluster.kill(leader)
    _progress(nodes, paused, "progress without the etcd leader")
    # 2. kill -9 one ledger node, keep going, restart it
    stream.targets = others
    nodes[victim].kill9()
    _progress(nodes, (victim + 1) % 3, "certificates from the two remaining nodes")
    nodes[victim].start()
    # 3. pause one node (SIGSTOP): the other two still certify; resume it
    stream.targets = [n for i, n in enumerate(nodes) if i != paused]
    nodes[paused].signal(signal.SIGSTOP)
    _progress(nodes, victim, "progress with a paused node (and the restarted one)")
    nodes[paused].signal(signal.SIGCONT)
    stream.targets = list(nodes)
    cluster.restart(leader)


def _equivocate(cluster: EtcdCluster, nodes: list[NodeProcess], keys: Path) -> int:
    """org3's validator signs a second, different header at a certified height."""
    target = nodes[0].client().certified_height()
    real = decode_header(bytes.fromhex(nodes[0].client().block(target)["header"]))
    fake = Header(chain_id=real.chain_id, height=real.height, prev_hash=real.prev_hash,
                  tx_root=real.tx_root, state_root=sha256(b"forged state"),
                  time_ms=real.time_ms, proposer=real.proposer, tx_count=real.tx_count,
                  invalid=real.invalid).to_bytes()
    org3_key = load_signing_key(keys / "org3-validator.key")
    etcd = EtcdClient(cluster.client_urls)
    key = f"/splitfed/{CHAIN}/sig/{target:012d}/org3/{sha256(fake).hex()}".encode()
    assert etcd.put_if_absent(key, dumps({"h": fake, "s": sign_header(fake, org3_key)}))
    _wait_until(lambda: nodes[1].client().state(f"evidence/org3/{target}") is not None, 30,
                "evidence on chain")
    return target


def _check_agreement(cluster: EtcdCluster, nodes: list[NodeProcess], stream: Submitter,
                     target: int) -> int:
    _wait_until(lambda: _converged(nodes), 60, "all nodes at the same certified height")
    # late evidence txs from the other nodes may still cut a block: wait until quiet
    last = -1
    while (cur := nodes[0].client().height()) != last or not _converged(nodes):
        last = cur
        time.sleep(1.0)
    clients = [n.client() for n in nodes]
    top = clients[0].height()
    assert top >= 12
    for h in range(1, top + 1):
        blocks = [c.block(h) for c in clients]
        assert len({b["hash"] for b in blocks}) == 1, f"nodes disagree at height {h}"
        assert all(b["certified"] for b in blocks)
    # every acknowledged tx is committed, exactly once, on every node
    assert len(stream.accepted) >= 100
    for txid in stream.accepted[::7]:
        receipts = {(r.height, r.valid) for r in (c.receipt(txid) for c in clients) if r}
        assert len(receipts) == 1 and next(iter(receipts))[1]
    ev = clients[2].state(f"evidence/org3/{target}")
    assert ev["validator"] == "org3" and len(ev["header_hashes"]) == 2

    # no height has two certified headers, judged from every signature in etcd
    vals = clients[0].validators()
    kvs, _ = EtcdClient(cluster.client_urls).range_prefix(
        f"/splitfed/{CHAIN}/sig/".encode(), by_create=False, limit=100_000)
    signers: dict[tuple[int, bytes], set[str]] = defaultdict(set)
    for _, value, _ in kvs:
        v = cbor2.loads(value)
        hdr = decode_header(v["h"])
        vid = next(o for o, pk in vals.items() if _verifies(v["h"], v["s"], pk))
        signers[(hdr.height, hdr.hash())].add(vid)
    certified = defaultdict(list)
    for (height, hh), who in signers.items():
        if len(who) >= quorum(3):
            certified[height].append(hh)
    assert all(len(v) == 1 for v in certified.values())
    assert sorted(certified) == list(range(1, max(certified) + 1))
    fakes = [who for (height, _), who in signers.items() if height == target and who == {"org3"}]
    assert fakes == [{"org3"}]
    return top


def _verifies(header: bytes, sig: bytes, pk: str) -> bool:
    try:
        verify_header_signature(header, sig, pk)
    except LedgerError:
        return False
    return True

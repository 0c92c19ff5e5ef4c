"""etcd ordering: the cluster's revision order is the chain's total order.

Theory of operation. Keys under ``/splitfed/<chain>/``:

* ``log/tx/<txid>`` = CBOR ``{"t": ms, "tx": bytes}``, created once
  (put-if-absent) by the node that accepted the tx; ``t`` is that node's clock.
* ``log/cut/<node>/<rev>`` = CBOR ``{"t": ms}``: a cut marker.
* ``sig/<height:012d>/<validator>/<header hash>`` = CBOR ``{"h": header, "s": sig}``.

Every node reads ``log/`` in creation-revision order (linearizable ranges, so
all nodes see the same sequence) and applies one deterministic rule: a block
ends after its ``block_max_txs``-th tx, or at a cut marker if at least one tx
is pending (a marker with nothing pending is ignored). Block time is the
largest ``t`` among the block's entries (and never less than the previous
block's), taken from the data, so every node computes the same header. The
local clock only decides *when* a node writes a marker: when its oldest
pending tx has waited ``block_max_ms``. The last consumed revision is stored
with each block, so a restarted node resumes exactly where it stopped and
replays the rest of the log.

After committing a block the node publishes its validators' signatures under
``sig/`` and reads everyone else's; :class:`~ledger_node.node.LedgerNode`
counts them into certificates. Two signatures by one validator over different
headers at one height become an ``evidence`` tx.

Failure model: liveness is etcd's (Raft, crash faults, a majority of members
up). etcd is trusted for ordering only: a lying etcd can censor, reorder or
stall, and can show different nodes different logs, but then their headers
differ and neither fork reaches a certificate unless validators sign both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import cbor2
import nacl.signing

from ledger_node.errors import LedgerError, OrderingError
from ledger_node.node import LedgerNode
from protocol.ledger.codec import dumps, sha256
from protocol.ledger.tx import decode_tx, make_tx

__all__ = ["EtcdOrderer", "OrderingKv"]

log = logging.getLogger(__name__)
_PROPOSER = "etcd"


class OrderingKv(Protocol):
    """The two etcd operations ordering needs (:class:`~ledger_node.etcd_client.EtcdClient`)."""

    def put_if_absent(self, key: bytes, value: bytes) -> bool: ...

    def range_prefix(self, prefix: bytes, *, start: bytes | None = None,
                     min_create_revision: int = 0, limit: int = 1000,
                     by_create: bool = True) -> tuple[list[tuple[bytes, bytes, int]], int]: ...


class EtcdOrderer:
    def __init__(self, node: LedgerNode, client: OrderingKv, *, node_id: str,
                 evidence_keys: Mapping[str, nacl.signing.SigningKey] | None = None,
                 poll_s: float = 0.05) -> None:
        self.node = node
        self.etcd = client
        self.node_id = node_id
        self.prefix = f"/splitfed/{node.chain_id}/".encode()
        self.max_txs = node.genesis.block_max_txs
        self.max_ms = node.genesis.block_max_ms
        self.poll_s = poll_s
        self._evidence_keys = dict(evidence_keys or {})
        self._pending: list[tuple[bytes, int, int]] = []  # tx bytes, t_ms, revision
        self._pending_seen_at = 0.0
        self._rev = node.log_rev
        self._marker_for = 0
        self._sig_rev = 0  # creation revision of the last signature entry read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: LedgerError | None = None

    # ------------------------------------------------------------- submit
    def submit(self, tx: bytes) -> str:
        t = decode_tx(tx, chain_id=self.node.chain_id)
        if self.node.receipt(t.txid) is None:
            value = dumps({"t": int(time.time() * 1000), "tx": tx})
            self.etcd.put_if_absent(self.prefix + b"log/tx/" + t.txid.encode(), value)
        return t.txid

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"ledger-etcd-{self.node_id}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None

    # --------------------------------------------------------------- loop
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                self.last_error = None
            except LedgerError as exc:
                if self.last_error is None or str(exc) != str(self.last_error):
                    log.warning("etcd ordering step failed (will retry): %s", exc)
                self.last_error = exc
                # forget uncommitted progress; the log is re-read from the last block
                self._pending = []
                self._rev = self.node.log_rev
                self._stop.wait(0.5)
                continue
            self._stop.wait(self.poll_s)

    def step(self) -> None:
        """One round: consume the log, cut blocks, publish and collect signatures."""
        self._consume_log()
        self._maybe_write_marker()
        self._collect_sigs()

    def _consume_log(self) -> None:
        while True:
            kvs, _ = self.etcd.range_prefix(self.prefix + b"log/",
                                            min_create_revision=self._rev + 1, limit=500)
            if not kvs:
                return
            for key, value, rev in kvs:
                # one entry per revision: our writers create one key per etcd txn. A client
                # that creates several log keys in one etcd txn may make nodes order them
                # differently; their headers then differ and no certificate forms (the chain
                # stalls, it does not fork). Keeping only the first seen bounds the damage.
                if rev <= self._rev:
                    continue
                self._entry(key, value, rev)
                self._rev = rev
            if len(kvs) < 500:
                return

    def _entry(self, key: bytes, value: bytes, rev: int) -> None:
        try:
            v = cbor2.loads(value)
            t = int(v["t"])
        except (cbor2.CBORDecodeError, ValueError, TypeError, KeyError):
            log.warning("ignoring malformed ordering entry at revision %d", rev)
            return
        rel = key[len(self.prefix):]
        if rel.startswith(b"log/tx/"):
            tx = v.get("tx")
            if not isinstance(tx, bytes):
                return
            if not self._pending:
                self._pending_seen_at = time.monotonic()
            self._pending.append((tx, t, rev))
            if len(self._pending) >= self.max_txs:
                self._cut(rev, t)
        elif rel.startswith(b"log/cut/") and self._pending:
            self._cut(rev, t)

    def _cut(self, rev: int, marker_t: int) -> None:
        txs = [p[0] for p in self._pending]
        t = max([marker_t, *(p[1] for p in self._pending)])
        self._pending = []
        _, sigs = self.node.commit(txs, time_ms=t, proposer=_PROPOSER, log_rev=rev)
        self._publish(self.node.height, self.node.header_bytes(self.node.height), sigs)

    def _maybe_write_marker(self) -> None:
        if not self._pending or self._marker_for == self._pending[-1][2]:
            return
        if (time.monotonic() - self._pending_seen_at) * 1000 < self.max_ms:
            return
        last = self._pending[-1][2]
        key = self.prefix + f"log/cut/{self.node_id}/{last}".encode()
        self.etcd.put_if_absent(key, dumps({"t": int(time.time() * 1000)}))
        self._marker_for = last

    # --------------------------------------------------------- signatures
    def _sig_key(self, height: int, validator: str, header: bytes) -> bytes:
        return self.prefix + (f"sig/{height:012d}/{validator}/{sha256(header).hex()}").encode()

    def _publish(self, height: int, header: bytes, sigs: list[tuple[str, bytes]]) -> None:
        for vid, sig in sigs:
            self.etcd.put_if_absent(self._sig_key(height, vid, header), dumps({"h": header,
                                                                                "s": sig}))

    def republish_own(self) -> None:
        """Re-put this node's signatures for uncertified heights (after a crash)."""
        for h in range(self.node.certified_height + 1, self.node.height + 1):
            hb = self.node.header_bytes(h)
            own = [(v, s) for v, _, hdr, s in self.node.storage.sigs(h)
                   if v in self.node.held_validators and hdr == hb]
            self._publish(h, hb, own)

    def _collect_sigs(self) -> None:
        # by creation revision, so a late conflicting signature for an old, already
        # certified height is still seen (and becomes evidence)
        while True:
            kvs, _ = self.etcd.range_prefix(self.prefix + b"sig/",
                                            min_create_revision=self._sig_rev + 1, limit=1000)
            self._add_sigs(kvs)
            if len(kvs) < 1000:
                return

    def _add_sigs(self, kvs: list[tuple[bytes, bytes, int]]) -> None:
        for key, value, rev in kvs:
            self._sig_rev = max(self._sig_rev, rev)
            try:
                v = cbor2.loads(value)
                header, sig, vid = v["h"], v["s"], key.decode().split("/")[-2]
            except (cbor2.CBORDecodeError, ValueError, TypeError, KeyError, UnicodeDecodeError):
                log.warning("ignoring malformed signature entry")
                continue
            try:
                ev = self.node.add_signature(vid, header, sig)
            except LedgerError as exc:
                log.warning("rejected signature from %s: %s", vid, exc)
                continue
            if ev is not None:
                self._report(ev.validator, ev.height, ev.body())

    def _report(self, validator: str, height: int, body: dict[str, Any]) -> None:
        if self.node.state.get(f"evidence/{validator}/{height}") is not None:
            return
        for vid, key in sorted(self._evidence_keys.items()):
            tx = make_tx("evidence", body, signing_key=key, submitter=f"{vid}/validator",
                         chain_id=self.node.chain_id)
            try:
                self.submit(tx)
            except OrderingError as exc:
                log.warning("could not submit evidence: %s", exc)
            return

"""Solo ordering: this process orders, cuts, executes and signs.

Theory of operation: :meth:`SoloOrderer.submit` checks a tx and appends it to
the ``pending`` table (durable before the txid is returned). One thread cuts a
block when ``block_max_txs`` txs are pending or the oldest has waited
``block_max_ms``; the block commit removes its txs from ``pending`` in the
same SQLite transaction, so a crash at any point neither loses an accepted tx
nor commits one twice. The node must hold enough validator keys to certify
alone (genesis of a solo chain lists the node's own validator key).

Trust: the solo node is a single point of trust and of failure; a malicious
solo node can reorder, censor or rewrite history it has not yet shown anyone.
"""

from __future__ import annotations

import logging
import threading
import time

from ledger_node.errors import LedgerError
from ledger_node.node import LedgerNode
from protocol.ledger.tx import decode_tx

__all__ = ["SoloOrderer"]

log = logging.getLogger(__name__)


class SoloOrderer:
    def __init__(self, node: LedgerNode, *, proposer: str, max_txs: int | None = None,
                 max_ms: int | None = None) -> None:
        self.node = node
        self.proposer = proposer
        self.max_txs = max_txs or node.genesis.block_max_txs
        self.max_ms = max_ms or node.genesis.block_max_ms
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.last_error: LedgerError | None = None

    def submit(self, tx: bytes) -> str:
        t = decode_tx(tx, chain_id=self.node.chain_id)
        if self.node.receipt(t.txid) is None:
            self.node.storage.add_pending(t.txid, tx, int(time.time() * 1000))
            with self._cond:
                self._cond.notify_all()
        return t.txid

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ledger-solo", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def cut_once(self) -> bool:
        """Cut one block if the rule says so; returns True if a block was cut."""
        pending = self.node.storage.pending(self.max_txs)
        if not pending:
            return False
        now_ms = int(time.time() * 1000)
        if len(pending) < self.max_txs and now_ms - pending[0][2] < self.max_ms:
            return False
        self.node.commit([d for _, d, _ in pending], time_ms=now_ms, proposer=self.proposer,
                         drop_pending=[t for t, _, _ in pending])
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
            try:
                cut = self.cut_once()
            except LedgerError as exc:  # database trouble: keep the node up, retry
                self.last_error = exc
                log.error("solo block cut failed: %s", exc)
                cut = False
            if not cut:
                with self._cond:
                    if not self._stop:
                        self._cond.wait(timeout=min(self.max_ms, 50) / 1000)

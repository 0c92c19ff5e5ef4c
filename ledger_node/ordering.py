"""The ordering role: decides which tx bytes form each block.

Implementations: :class:`ledger_node.solo.SoloOrderer` (this process, SQLite
mempool) and :class:`ledger_node.etcd_orderer.EtcdOrderer` (an etcd cluster's
revision order, shared by every node of the consortium).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Orderer"]


class Orderer(Protocol):
    """Accepts txs for ordering and drives the node's block production."""

    def submit(self, tx: bytes) -> str:
        """Check ``tx`` (decode, signature, chain id) and queue it; returns the txid.

        Raises :class:`ledger_node.errors.InvalidTransaction` for a tx that can
        never be valid and :class:`ledger_node.errors.OrderingError` if the
        ordering service is unavailable.
        """
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

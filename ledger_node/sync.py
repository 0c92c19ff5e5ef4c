"""Catch-up from a peer's certified blocks (when the ordering log cannot serve).

A node that was down normally replays the etcd log. If the log is not
available (a solo chain replicated to a read-only node, or an etcd log that
was compacted) it can fetch blocks from any peer's API. Nothing from the peer
is trusted: each block is re-executed locally, must reproduce the peer's
header byte for byte, and must carry a quorum certificate of the validator
set this node already knows (:meth:`LedgerNode.commit_certified`). A peer can
therefore withhold blocks but cannot make the node accept a wrong one.
"""

from __future__ import annotations

import logging

from ledger_node.node import LedgerNode
from service.ledger_client import LedgerClient

__all__ = ["catch_up_from_peer"]

log = logging.getLogger(__name__)


def catch_up_from_peer(node: LedgerNode, peer: LedgerClient, *, until: int | None = None) -> int:
    """Adopt the peer's certified blocks after ``node.height``; returns the new height.

    Stops at the peer's certified height (or ``until``). Raises
    :class:`~ledger_node.errors.ChainIntegrityError` or
    :class:`~ledger_node.errors.CertificateError` at the first block that does
    not check out; blocks adopted before it stay committed.
    """
    top = peer.certified_height() if until is None else until
    while node.height < top:
        b = peer.block(node.height + 1)
        txs = [bytes.fromhex(t["data"]) for t in b["txs"]]
        cert = [(str(v), bytes.fromhex(s)) for v, s in b["certificate"]]
        node.commit_certified(txs, bytes.fromhex(b["header"]), cert,
                              log_rev=int(b.get("log_rev", 0)))
    log.info("caught up from peer to height %d", node.height)
    return node.height

"""What the gateway and the server read from the ledger: device registry and proofs.

Adapters over :class:`service.ledger_client.LedgerClient` (loopback HTTP to
the organisation's ledger node):

* :class:`LedgerRegistry` is the :class:`service.registry.DeviceRegistry` the
  admission path asks (put a :class:`service.registry.CachedRegistry` in
  front of it);
* :func:`proof_for` fetches a transaction's inclusion proof and returns it as
  the wire message :class:`protocol.ledger_msgs.LedgerProof` that model
  announcements carry; a proof the protocol would refuse (e.g. a block not yet
  certified) is a :class:`protocol.errors.LedgerError` here, never a
  malformed message on the wire.
"""

from __future__ import annotations

from protocol.errors import LedgerError, ProtocolError
from protocol.messages import LedgerProof
from service.ledger_client import LedgerClient
from service.registry import DeviceInfo

__all__ = ["LedgerRegistry", "proof_for"]


class LedgerRegistry:
    """:class:`service.registry.DeviceRegistry` backed by the ledger node's state."""

    def __init__(self, client: LedgerClient) -> None:
        self._client = client

    def lookup(self, org: str, device: str) -> DeviceInfo | None:
        rec = self._client.device(org, device)
        if rec is None:
            return None
        return DeviceInfo(
            org=rec.org, device=rec.device, pubkey_hex=rec.pubkey_hex, revoked=rec.revoked
        )


def proof_for(client: LedgerClient, txid: str) -> LedgerProof:
    """The inclusion proof of ``txid`` as a protocol :class:`LedgerProof`."""
    p = client.proof(txid)
    try:
        return LedgerProof(
            chain_id=p.chain_id,
            height=p.height,
            header=p.header,
            certificate=p.certificate,
            tx=p.tx,
            leaf_index=p.leaf_index,
            tree_size=p.tree_size,
            audit_path=p.audit_path,
        )
    except (ProtocolError, ValueError) as exc:
        raise LedgerError(f"ledger returned an unusable proof: {exc}") from exc

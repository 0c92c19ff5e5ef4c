"""What the gateway and the server read from the ledger: the device registry.

Adapters over :class:`service.ledger_client.LedgerClient` (loopback HTTP to
the organisation's ledger node):

* :class:`LedgerRegistry` is the :class:`service.registry.DeviceRegistry` the
  admission path asks (put a :class:`service.registry.CachedRegistry` in
  front of it);
* proofs: :meth:`service.ledger_client.LedgerClient.proof` returns the wire
  message :class:`protocol.ledger_msgs.LedgerProof` that model announcements
  carry; a proof the protocol would refuse is a
  :class:`protocol.errors.LedgerError` there, never a malformed message on the
  wire.
"""

from __future__ import annotations

from service.ledger_client import LedgerClient
from service.registry import DeviceInfo

__all__ = ["LedgerRegistry"]


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

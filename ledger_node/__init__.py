"""iiot-splitfed permissioned ledger full node (``splitfed-ledger``).

Layers, pure first (docs/ledger.md is the user-facing description):

* the wire formats other roles need too live in :mod:`protocol.ledger`
  (``codec``, ``tx``, ``registration``, ``block``, ``genesis``,
  ``lightclient``), the HTTP client in :mod:`service.ledger_client`;
* ``state`` world state with a Merkle state root; ``contracts`` the
  deterministic state machines; ``executor`` block execution;
* adapters: ``storage`` (SQLite), ``node`` (engine: commit, sign, certify),
  ``solo`` / ``etcd_orderer`` + ``etcd_client`` (ordering), ``sync`` (catch-up
  from a peer), ``api`` (loopback HTTP), ``verify`` (full replay),
  ``config``, ``app`` (wiring), ``cli``.
"""

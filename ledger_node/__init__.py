"""iiot-splitfed permissioned ledger full node (``splitfed-ledger``).

Layers, pure first (docs/ledger.md is the user-facing description):

* ``codec`` canonical CBOR + signing domains; ``tx`` signed transactions;
  ``registration`` device-signed registration requests;
* ``state`` world state with a Merkle state root; ``contracts`` the
  deterministic state machines; ``block`` headers, quorum, certificates;
  ``executor`` block execution; ``lightclient`` proof checks (no I/O);
* adapters: ``storage`` (SQLite), ``node`` (engine: commit, sign, certify),
  ``solo`` / ``etcd_orderer`` + ``etcd_client`` (ordering), ``sync`` (catch-up
  from a peer), ``api`` / ``client`` (loopback HTTP), ``verify`` (full replay),
  ``config``, ``app`` (wiring), ``cli``.
"""

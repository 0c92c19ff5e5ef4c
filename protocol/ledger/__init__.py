"""The ledger's wire formats and the light client (pure; files only in ``genesis``).

What every role needs to speak to the permissioned ledger without importing the
ledger node: ``codec`` canonical CBOR and signing domains; ``tx`` signed
transactions and receipts; ``registration`` device-signed registration
requests; ``block`` headers, quorum and certificates; ``lightclient`` the
proof checks a device or auditor runs; ``genesis`` the chain's genesis file.
The full node (:mod:`ledger_node`) executes and stores what these define.
"""

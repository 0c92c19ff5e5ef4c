"""Block execution (pure): ordered tx bytes in, header + state changes out.

Every full node runs exactly this on the same inputs (previous header hash,
state, tx bytes, block time, proposer) and so computes byte-identical headers.
A tx that does not decode, whose signature fails, or that a contract rejects
stays in the block and is listed in ``header.invalid`` with its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger_node.contracts import ContractRejectError, apply_tx
from ledger_node.errors import InvalidTransaction
from ledger_node.state import Overlay, State
from protocol.ledger.block import Header
from protocol.ledger.codec import sha256_hex
from protocol.ledger.tx import Tx, decode_tx
from protocol.merkle import merkle_root

__all__ = ["ExecutedBlock", "TxResult", "execute_block"]

_MAX_REASON = 200


@dataclass(frozen=True, slots=True, kw_only=True)
class TxResult:
    txid: str
    kind: str
    valid: bool
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutedBlock:
    header: Header
    txs: tuple[bytes, ...]
    results: tuple[TxResult, ...]
    changes: dict[str, Any] = field(repr=False)


def execute_block(
    state: State, txs: Sequence[bytes], *, chain_id: str, height: int, prev_hash: bytes,
    time_ms: int, proposer: str,
) -> ExecutedBlock:
    """Execute ``txs`` on top of ``state`` without modifying it."""
    block_view = Overlay(state)
    results: list[TxResult] = []
    invalid: list[tuple[int, str]] = []
    for i, raw in enumerate(txs):
        res = _apply_one(block_view, raw, height=height, chain_id=chain_id)
        results.append(res)
        if res.reason is not None:
            invalid.append((i, res.reason))
    changes = dict(block_view.writes)
    root = state.root_with(changes)
    header = Header(chain_id=chain_id, height=height, prev_hash=prev_hash,
                    tx_root=merkle_root(list(txs)), state_root=root, time_ms=time_ms,
                    proposer=proposer, tx_count=len(txs), invalid=tuple(invalid))
    return ExecutedBlock(header=header, txs=tuple(txs), results=tuple(results), changes=changes)



def _apply_one(block_view: Overlay, raw: bytes, *, height: int, chain_id: str) -> TxResult:
    tx: Tx | None = None
    try:
        tx = decode_tx(raw)
        scratch = Overlay(block_view)
        apply_tx(scratch, tx, height=height, chain_id=chain_id)
    except (InvalidTransaction, ContractRejectError) as exc:
        reason = str(exc)[:_MAX_REASON] or type(exc).__name__
    except Exception as exc:  # a body the contract did not anticipate: same on every node
        reason = f"contract error: {type(exc).__name__}"
    else:
        scratch.merge_into_parent()
        return TxResult(txid=tx.txid, kind=tx.kind, valid=True, reason=None)
    return TxResult(txid=sha256_hex(raw), kind=tx.kind if tx else "?", valid=False,
                    reason=reason)

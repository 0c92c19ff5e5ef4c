"""Full-chain audit: replay every block from genesis and compare every byte.

``verify_chain`` re-derives, for each height: the header hash, the link to the
previous header, each txid from its bytes, the tx Merkle root, the validity
and reason of every tx (by re-running the contracts), the state root, and the
certificate (every stored signature must verify; a block below the highest
certified one must itself be certified). At the end the replayed state must
equal the ``state`` table row for row. The first mismatch raises
:class:`ChainIntegrityError` naming the block (or state key).

Limits: it proves the database is internally consistent with genesis and the
validator signatures; it cannot tell whether a *certified* history is the one
other nodes hold (compare head hashes across nodes for that).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger_node.errors import ChainIntegrityError, LedgerError
from ledger_node.executor import execute_block
from ledger_node.node import DB_NAME, genesis_block
from ledger_node.state import State
from ledger_node.storage import Storage
from protocol.ledger.block import Header, decode_header, quorum, verify_header_signature
from protocol.ledger.codec import dumps, sha256, sha256_hex
from protocol.ledger.genesis import Genesis

__all__ = ["VerifyReport", "verify_chain"]

_HEADER_FIELDS = ("chain_id", "height", "prev_hash", "tx_root", "state_root", "time_ms",
                  "proposer", "tx_count", "invalid")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    height: int
    head_hash: str
    txs: int
    invalid_txs: int
    certified_height: int
    uncertified: tuple[int, ...]
    equivocations: tuple[tuple[str, int], ...]
    found: Mapping[str, Any] = field(default_factory=dict)  # requested keys of the replayed state


def _diff(stored: Header, computed: Header) -> str:
    for name in _HEADER_FIELDS:
        if getattr(stored, name) != getattr(computed, name):
            return name
    return "encoding"


def verify_chain(data_dir: str | Path, *, state_keys: Sequence[str] = ()) -> VerifyReport:
    """Replay and check the chain; ``found`` holds those ``state_keys`` the replay has."""
    db = Path(data_dir) / DB_NAME
    if not db.exists():
        raise ChainIntegrityError(f"{db} does not exist")
    st = Storage(db)
    try:
        return _verify(st, state_keys)
    finally:
        st.close()


def _verify(st: Storage, state_keys: Sequence[str] = ()) -> VerifyReport:
    raw = st.get_meta("genesis")
    if raw is None:
        raise ChainIntegrityError("database has no genesis document")
    genesis = Genesis.from_json_obj(json.loads(raw))
    g = genesis_block(genesis)
    row = st.block_row(0)
    if row is None or row[1] != g.header.to_bytes() or row[0] != g.header.hash():
        raise ChainIntegrityError("block 0: does not match the genesis document")
    state = State(g.changes)
    head, _, _ = st.head()
    prev = g.header
    ntx = ninvalid = 0
    certified: list[int] = []
    uncertified: list[int] = []
    equivocations: list[tuple[str, int]] = []
    for h in range(1, head + 1):
        try:
            row = st.block_row(h)
            rows = st.block_txs(h)
            sig_rows = st.sigs(h)
        except LedgerError as exc:
            raise ChainIntegrityError(f"block {h}: rows unreadable: {exc}") from exc
        if row is None:
            raise ChainIntegrityError(f"block {h}: missing")
        stored_hash, hb = row
        try:
            hdr = decode_header(hb)
        except LedgerError as exc:
            raise ChainIntegrityError(f"block {h}: header undecodable: {exc}") from exc
        if sha256(hb) != stored_hash:
            raise ChainIntegrityError(f"block {h}: stored hash does not match the header bytes")
        if hdr.height != h or hdr.prev_hash != prev.hash():
            raise ChainIntegrityError(f"block {h}: does not link to block {h - 1}")
        if hdr.time_ms < prev.time_ms:
            raise ChainIntegrityError(f"block {h}: time goes backwards")
        if [r[0] for r in rows] != list(range(len(rows))):
            raise ChainIntegrityError(f"block {h}: tx rows missing or out of order")
        for idx, txid, data, _, _, _ in rows:
            if sha256_hex(data) != txid:
                raise ChainIntegrityError(f"block {h}: tx {idx} bytes do not match txid {txid}")
        datas = [r[2] for r in rows]
        vals = dict(state.get("validators") or {})
        block = execute_block(state, datas, chain_id=genesis.chain_id, height=h,
                              prev_hash=prev.hash(), time_ms=hdr.time_ms, proposer=hdr.proposer)
        if block.header.to_bytes() != hb:
            field = _diff(hdr, block.header)
            raise ChainIntegrityError(
                f"block {h}: header {field} differs from re-execution (tx, state or header edited)")
        for (idx, txid, _, kind, valid, reason), res in zip(rows, block.results, strict=True):
            if (valid, reason, kind) != (res.valid, res.reason, res.kind):
                raise ChainIntegrityError(f"block {h}: tx {idx} ({txid}) result row was edited")
        signers = set()
        for vid, hh, sig_header, sig in sig_rows:
            if vid not in vals:
                continue
            try:
                verify_header_signature(sig_header, sig, vals[vid])
            except LedgerError as exc:
                raise ChainIntegrityError(f"block {h}: signature of {vid} is invalid") from exc
            if sha256(sig_header) != hh:
                raise ChainIntegrityError(f"block {h}: signature row of {vid} was edited")
            if hh == stored_hash:
                signers.add(vid)
            else:
                equivocations.append((vid, h))
        (certified if len(signers) >= quorum(len(vals)) else uncertified).append(h)
        state.apply(block.changes)
        ntx += len(datas)
        ninvalid += len(block.header.invalid)
        prev = hdr
    top = max(certified, default=0)
    below = [h for h in uncertified if h < top]
    if below:
        raise ChainIntegrityError(
            f"block {below[0]}: has no quorum certificate although later blocks do")
    try:
        stored = dict(st.state_raw())
    except LedgerError as exc:
        raise ChainIntegrityError(f"state table unreadable: {exc}") from exc
    replayed = {k: dumps(v) for k, v in state.items()}
    for key in sorted(set(stored) | set(replayed)):
        if stored.get(key) != replayed.get(key):
            raise ChainIntegrityError(f"state row {key!r} differs from the replayed chain")
    return VerifyReport(height=head, head_hash=prev.hash().hex(), txs=ntx, invalid_txs=ninvalid,
                        certified_height=top, uncertified=tuple(uncertified),
                        equivocations=tuple(sorted(set(equivocations))),
                        found={k: state.get(k) for k in state_keys if state.get(k) is not None})

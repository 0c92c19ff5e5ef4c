"""SQLite storage of one node (adapter): blocks, txs, state, signatures, mempool.

One file per node in WAL mode with ``synchronous=FULL``: a block, its txs,
its state changes and the removal of its txs from the mempool are written in
one SQLite transaction, so after ``kill -9`` or a power cut either the whole
block is there or none of it. All access goes through one connection guarded
by a lock (API threads read while the ordering thread writes).

Tables: ``blocks(height, hash, header, log_rev)``, ``txs(height, idx, txid,
data, kind, valid, reason)``, ``state(key, value)``, ``sigs(height,
validator, header_hash, header, sig)`` (every valid header signature seen,
including conflicting ones), ``pending(seq, txid, data, t_ms)`` and
``meta(k, v)``. ``splitfed-ledger verify`` re-derives everything from
``blocks``/``txs``/``sigs`` and compares with ``state``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cbor2

from ledger_node.errors import LedgerError
from ledger_node.executor import ExecutedBlock
from protocol.ledger.codec import dumps
from service.files import open_sqlite

__all__ = ["Storage"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (height INTEGER PRIMARY KEY, hash BLOB NOT NULL,
    header BLOB NOT NULL, log_rev INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS txs (height INTEGER NOT NULL, idx INTEGER NOT NULL,
    txid TEXT NOT NULL, data BLOB NOT NULL, kind TEXT NOT NULL, valid INTEGER NOT NULL,
    reason TEXT, PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS txs_txid ON txs (txid);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sigs (height INTEGER NOT NULL, validator TEXT NOT NULL,
    header_hash BLOB NOT NULL, header BLOB NOT NULL, sig BLOB NOT NULL,
    PRIMARY KEY (height, validator, header_hash));
CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,
    txid TEXT NOT NULL UNIQUE, data BLOB NOT NULL, t_ms INTEGER NOT NULL);
"""

SigRow = tuple[str, bytes, bytes, bytes]  # validator, header_hash, header, sig


class Storage:
    """The node's SQLite file. Every sqlite3 error becomes :class:`LedgerError`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = open_sqlite(self.path, _SCHEMA, create_parent=True)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open ledger database {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger database write failed: {exc}") from exc

    def _q(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger database read failed: {exc}") from exc

    # meta -------------------------------------------------------------------
    def get_meta(self, k: str) -> bytes | None:
        rows = self._q("SELECT v FROM meta WHERE k = ?", (k,))
        return bytes(rows[0][0]) if rows else None

    def set_meta(self, k: str, v: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)", (k, v))

    # blocks -----------------------------------------------------------------
    def commit_block(self, block: ExecutedBlock, *, log_rev: int = 0,
                     drop_pending: Sequence[str] = ()) -> None:
        h = block.header
        hb = h.to_bytes()
        with self._tx() as db:
            db.execute("INSERT INTO blocks (height, hash, header, log_rev) VALUES (?, ?, ?, ?)",
                       (h.height, h.hash(), hb, log_rev))
            db.executemany(
                "INSERT INTO txs (height, idx, txid, data, kind, valid, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(h.height, i, r.txid, raw, r.kind, int(r.valid), r.reason)
                 for i, (raw, r) in enumerate(zip(block.txs, block.results, strict=True))])
            db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                           [(k, dumps(v)) for k, v in block.changes.items()])
            db.executemany("DELETE FROM pending WHERE txid = ?", [(t,) for t in drop_pending])

    def head(self) -> tuple[int, bytes, int]:
        """(height, block hash, log revision) of the last block; (-1, b"", 0) if none."""
        rows = self._q("SELECT height, hash, log_rev FROM blocks ORDER BY height DESC LIMIT 1")
        if not rows:
            return -1, b"", 0
        return int(rows[0][0]), bytes(rows[0][1]), int(rows[0][2])

    def header(self, height: int) -> bytes | None:
        rows = self._q("SELECT header FROM blocks WHERE height = ?", (height,))
        return bytes(rows[0][0]) if rows else None

    def block_row(self, height: int) -> tuple[bytes, bytes] | None:
        rows = self._q("SELECT hash, header FROM blocks WHERE height = ?", (height,))
        return (bytes(rows[0][0]), bytes(rows[0][1])) if rows else None

    def log_rev(self, height: int) -> int:
        rows = self._q("SELECT log_rev FROM blocks WHERE height = ?", (height,))
        return int(rows[0][0]) if rows else 0

    def block_txs(self, height: int) -> list[tuple[int, str, bytes, str, bool, str | None]]:
        rows = self._q("SELECT idx, txid, data, kind, valid, reason FROM txs WHERE height = ? "
                       "ORDER BY idx", (height,))
        return [(int(i), str(t), bytes(d), str(k), bool(v), r) for i, t, d, k, v, r in rows]

    def tx_location(self, txid: str) -> tuple[int, int, bool, str | None] | None:
        """First inclusion of ``txid``: (height, index, valid, reason)."""
        rows = self._q("SELECT height, idx, valid, reason FROM txs WHERE txid = ? "
                       "ORDER BY height, idx LIMIT 1", (txid,))
        if not rows:
            return None
        return int(rows[0][0]), int(rows[0][1]), bool(rows[0][2]), rows[0][3]

    # state ------------------------------------------------------------------
    def state_items(self) -> list[tuple[str, Any]]:
        rows = self._q("SELECT key, value FROM state ORDER BY key")
        try:
            return [(str(k), cbor2.loads(v)) for k, v in rows]
        except (cbor2.CBORDecodeError, ValueError) as exc:
            raise LedgerError(f"state table holds an undecodable value: {exc}") from exc

    def state_raw(self) -> list[tuple[str, bytes]]:
        rows = self._q("SELECT key, value FROM state ORDER BY key")
        return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in rows]

    # signatures -------------------------------------------------------------
    def add_sig(self, height: int, validator: str, header_hash: bytes, header: bytes,
                sig: bytes) -> bool:
        """Store a checked signature; False if it was already known."""
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO sigs VALUES (?, ?, ?, ?, ?)",
                             (height, validator, header_hash, header, sig))
            return cur.rowcount > 0

    def sigs(self, height: int) -> list[SigRow]:
        rows = self._q("SELECT validator, header_hash, header, sig FROM sigs WHERE height = ? "
                       "ORDER BY validator", (height,))
        return [(str(v), bytes(h), bytes(hd), bytes(s)) for v, h, hd, s in rows]

    # mempool (solo) ---------------------------------------------------------
    def add_pending(self, txid: str, data: bytes, t_ms: int) -> bool:
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO pending (txid, data, t_ms) VALUES (?, ?, ?)",
                             (txid, data, t_ms))
            return cur.rowcount > 0

    def pending(self, limit: int) -> list[tuple[str, bytes, int]]:
        rows = self._q("SELECT txid, data, t_ms FROM pending ORDER BY seq LIMIT ?", (limit,))
        return [(str(t), bytes(d), int(m)) for t, d, m in rows]

    def pending_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM pending")[0][0])
